# Example 2: DDPM-inspired progressive targets as a DIP early-stopping rule, compared with
# fixed budgets, the discrepancy principle, ES-WMV and the oracle on the same fits.


rule earlystop:
    input:
        npz=f"{DATA}/{{dataset}}/task~{{task}}/seed~{{seed}}/degraded.npz",
        params=f"{DATA}/{{dataset}}/task~{{task}}/seed~{{seed}}/params.json",
    output:
        table=f"{EARLYSTOP_CELL}/earlystop.csv",
        curves=f"{EARLYSTOP_CELL}/stage_curves.csv",
        trajectory=f"{EARLYSTOP_CELL}/trajectory.csv",
        npz=f"{EARLYSTOP_CELL}/outputs.npz",
        json=f"{EARLYSTOP_CELL}/params.json",
    log:
        f"{LOGS}/earlystop/{EARLYSTOP_ID}.log",
    benchmark:
        f"{BENCH}/earlystop/{EARLYSTOP_ID}.tsv"
    group:
        "earlystop"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        runtime=120,
    params:
        cell=lambda wc: dict(wc),
        arch=lambda wc: arch_spec(wc.arch),
        dip=dip_fit_params,
        es=config.get("earlystop", {}),
        device=config["device"],
    script:
        "../../scripts/earlystop.py"
