# Data stage: named image sets (CIFAR-10 subsets, scikit-image and folder images) and
# their degraded observations, each a cached target under results/data/.


rule prepare_dataset:
    output:
        npz=f"{DATA}/{{dataset}}/clean.npz",
        preview=report(
            f"{DATA}/{{dataset}}/preview.png",
            caption="../report/dataset.rst",
            category="Data",
            labels={"dataset": "{dataset}"},
        ),
        meta=f"{DATA}/{{dataset}}/meta.json",
    log:
        f"{LOGS}/data/{{dataset}}.log",
    conda:
        "../../environment.yml"
    threads: 1
    params:
        spec=lambda wc: dataset_spec(wc.dataset),
        cifar10=config["data"]["cifar10"],
    script:
        "../../scripts/prepare_dataset.py"


rule degrade:
    input:
        clean=f"{DATA}/{{dataset}}/clean.npz",
    output:
        npz=f"{DATA}/{{dataset}}/task~{{task}}/seed~{{seed}}/degraded.npz",
        params=f"{DATA}/{{dataset}}/task~{{task}}/seed~{{seed}}/params.json",
        preview=report(
            f"{DATA}/{{dataset}}/task~{{task}}/seed~{{seed}}/preview.png",
            caption="../report/degraded.rst",
            category="Data",
            labels={"dataset": "{dataset}", "task": "{task}", "seed": "{seed}"},
        ),
    log:
        f"{LOGS}/data/{{dataset}}/task~{{task}}/seed~{{seed}}.log",
    conda:
        "../../environment.yml"
    threads: 1
    params:
        task=lambda wc: task_spec(wc.task),
    script:
        "../../scripts/degrade.py"
