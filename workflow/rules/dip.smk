# Deep Image Prior: one cell per (dataset, task, architecture, seed). One fit per cell
# stores the output at every configured duration, so the duration ablation never refits.


rule fit_dip:
    input:
        npz=f"{DATA}/{{dataset}}/task~{{task}}/seed~{{seed}}/degraded.npz",
        params=f"{DATA}/{{dataset}}/task~{{task}}/seed~{{seed}}/params.json",
    output:
        npz=f"{DIP}/{{dataset}}/task~{{task}}/arch~{{arch}}/seed~{{seed}}/output.npz",
        trajectory=f"{DIP}/{{dataset}}/task~{{task}}/arch~{{arch}}/seed~{{seed}}/trajectory.csv",
        metrics=f"{DIP}/{{dataset}}/task~{{task}}/arch~{{arch}}/seed~{{seed}}/metrics.csv",
        json=f"{DIP}/{{dataset}}/task~{{task}}/arch~{{arch}}/seed~{{seed}}/params.json",
        preview=report(
            f"{DIP}/{{dataset}}/task~{{task}}/arch~{{arch}}/seed~{{seed}}/preview.png",
            caption="../report/dip_cell.rst",
            category="DIP",
            subcategory="{dataset} {task}",
            labels={"arch": "{arch}", "seed": "{seed}"},
        ),
    log:
        f"{LOGS}/dip/{{dataset}}/task~{{task}}/arch~{{arch}}/seed~{{seed}}.log",
    benchmark:
        f"{BENCH}/dip/{{dataset}}/task~{{task}}/arch~{{arch}}/seed~{{seed}}.tsv"
    group:
        "dip"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        runtime=120,
    params:
        cell=lambda wc: dict(wc),
        arch=lambda wc: arch_spec(wc.arch),
        fit=dip_fit_params,
        device=config["device"],
    script:
        "../../scripts/fit_dip.py"
