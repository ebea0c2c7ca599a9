# Data stage: named image sets (CIFAR-10 subsets, scikit-image and folder images) and
# their degraded observations, each a cached target under results/data/.


rule prepare_dataset:
    output:
        npz=grid.CLEAN.file("clean.npz"),
        preview=report(
            grid.CLEAN.file("preview.png"),
            caption="../report/dataset.rst",
            category="Data",
            labels={"dataset": "{dataset}"},
        ),
        meta=grid.CLEAN.file("meta.json"),
    log:
        grid.CLEAN.log,
    priority: PRIORITY["data"]
    conda:
        "../../environment.yml"
    threads: 1
    params:
        spec=lambda wc: config["data"]["datasets"][wc.dataset],
        cifar10=config["data"]["cifar10"],
    script:
        "../../scripts/prepare_dataset.py"


rule degrade:
    input:
        clean=grid.CLEAN.file("clean.npz"),
    output:
        npz=grid.OBSERVATION.file("degraded.npz"),
        params=grid.OBSERVATION.file("params.json"),
        preview=report(
            grid.OBSERVATION.file("preview.png"),
            caption="../report/degraded.rst",
            category="Data",
            labels={"dataset": "{dataset}", "task": "{task}", "seed": "{obs_seed}"},
        ),
    log:
        grid.OBSERVATION.log,
    priority: PRIORITY["data"]
    conda:
        "../../environment.yml"
    threads: 1
    params:
        task=lambda wc: config["tasks"][wc.task],
    script:
        "../../scripts/degrade.py"
