# DDPM: training cells (full and truncated, each checkpoint its own target) and the
# sampling cells of Example 1 (start from noise, from the observation, from a DIP prior,
# DIP-guided), plus unconditional generation.


rule train_ddpm:
    input:
        clean=f"{DATA}/{{dataset}}/clean.npz",
        held_out=lambda wc: clean_path(config["ddpm"]["sample"]["dataset"]),
    output:
        checkpoints=expand(
            f"{TRAIN_CELL}/step~{{ckpt}}.pt",
            ckpt=config["ddpm"]["checkpoints"],
            allow_missing=True,
        ),
        curve=f"{TRAIN_CELL}/curve.csv",
        json=f"{TRAIN_CELL}/params.json",
    log:
        f"{LOGS}/ddpm/train/{TRAIN_ID}.log",
    benchmark:
        f"{BENCH}/ddpm/train/{TRAIN_ID}.tsv"
    conda:
        "../../environment.yml"
    # One thread per job: on a small CPU two 1-thread jobs beat one 2-thread job, and
    # OpenMP threads competing with other jobs for cores slow down by an order of magnitude.
    threads: 1
    resources:
        gpu=1,
        runtime=24 * 60,
        mem_mb=16000,
    params:
        cell=lambda wc: dict(wc),
        train=ddpm_train_params,
        checkpoints=config["ddpm"]["checkpoints"],
        out_dir=lambda wc, output: str(Path(output.curve).parent),
        device=config["device"],
    script:
        "../../scripts/train_ddpm.py"


rule sample_ddpm:
    input:
        ckpt=lambda wc: trained_checkpoint(wc.mode, wc.tmax, wc.ckpt),
        npz=f"{DATA}/{{dataset}}/task~{{task}}/seed~{{seed}}/degraded.npz",
        params=f"{DATA}/{{dataset}}/task~{{task}}/seed~{{seed}}/params.json",
        prior=prior_input,
    output:
        npz=f"{SAMPLE_CELL}/samples.npz",
        metrics=f"{SAMPLE_CELL}/metrics.csv",
        json=f"{SAMPLE_CELL}/params.json",
        preview=report(
            f"{SAMPLE_CELL}/preview.png",
            caption="../report/sample_cell.rst",
            category="DDPM sampling",
            subcategory="{start} t0={t0}",
            labels={"train": "{mode}-t{tmax}", "steps": "{steps}", "lam": "{lam}"},
        ),
    log:
        f"{LOGS}/ddpm/sample/{SAMPLE_ID}.log",
    benchmark:
        f"{BENCH}/ddpm/sample/{SAMPLE_ID}.tsv"
    group:
        "sample"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        runtime=60,
    params:
        cell=lambda wc: dict(wc),
        prior_iters=config["ddpm"]["sample"]["prior_iters"],
        sampler=config["ddpm"]["sample"]["sampler"],
        eta=config["ddpm"]["sample"]["eta"],
        device=config["device"],
    script:
        "../../scripts/sample_ddpm.py"


rule generate_ddpm:
    input:
        ckpt=lambda wc: trained_checkpoint(wc.mode, wc.tmax, wc.ckpt),
    output:
        npz=f"{GENERATE_CELL}/samples.npz",
        json=f"{GENERATE_CELL}/params.json",
        preview=report(
            f"{GENERATE_CELL}/preview.png",
            caption="../report/generate_cell.rst",
            category="DDPM sampling",
            subcategory="generation",
            labels={"train": "{mode}-t{tmax}", "steps": "{steps}"},
        ),
    log:
        f"{LOGS}/ddpm/generate/train~{{mode}}-t{{tmax}}/ckpt~{{ckpt}}/steps~{{steps}}/seed~{{seed}}.log",
    benchmark:
        f"{BENCH}/ddpm/generate/train~{{mode}}-t{{tmax}}/ckpt~{{ckpt}}/steps~{{steps}}/seed~{{seed}}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        runtime=120,
    params:
        cell=lambda wc: dict(wc),
        n=config["ddpm"]["sample"]["generate"],
        sampler=config["ddpm"]["sample"]["sampler"],
        eta=config["ddpm"]["sample"]["eta"],
        device=config["device"],
    script:
        "../../scripts/generate_ddpm.py"
