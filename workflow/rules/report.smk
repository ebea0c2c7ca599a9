# Evaluation and reporting: FID cells against cached reference statistics, the tidy
# table of every cell, summary tables, figures and the generated report.


rule fid_reference:
    input:
        clean=f"{DATA}/{{dataset}}/clean.npz",
    output:
        npz=f"{METRICS}/reference/{{dataset}}/inception.npz",
    log:
        f"{LOGS}/metrics/reference/{{dataset}}.log",
    benchmark:
        f"{BENCH}/metrics/reference/{{dataset}}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        runtime=60,
    params:
        weights=config["metrics"]["inception_weights"],
        device=config["device"],
    script:
        "../../scripts/fid_reference.py"


rule fid:
    input:
        samples=f"{DDPM}/{{sampleset}}/samples.npz",
        cell=f"{DDPM}/{{sampleset}}/params.json",
        reference=f"{METRICS}/reference/{config['metrics']['reference']}/inception.npz",
    output:
        json=f"{DDPM}/{{sampleset}}/fid.json",
    log:
        f"{LOGS}/metrics/fid/{{sampleset}}.log",
    group:
        "sample"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        runtime=60,
    params:
        weights=config["metrics"]["inception_weights"],
        device=config["device"],
    script:
        "../../scripts/fid.py"


rule aggregate:
    input:
        metrics=lambda wc: dip_targets() + sample_targets(),
        curves=lambda wc: training_targets(),
        fids=lambda wc: fid_targets(),
        earlystop=lambda wc: earlystop_targets(),
    output:
        all_cells=f"{TABLES}/all_cells.csv",
        tables=report(
            expand(f"{TABLES}/{{name}}.{{ext}}", name=TABLE_NAMES, ext=["csv", "md"]),
            caption="../report/tables.rst",
            category="Tables",
        ),
    log:
        f"{LOGS}/report/aggregate.log",
    conda:
        "../../environment.yml"
    threads: 1
    params:
        target_psnr=config["metrics"]["target_psnr"],
        target_eval_psnr=config["metrics"]["target_eval_psnr"],
    script:
        "../../scripts/aggregate.py"


rule figures:
    input:
        all_cells=f"{TABLES}/all_cells.csv",
        trajectories=lambda wc: [
            p.replace("metrics.csv", "trajectory.csv") for p in dip_targets()
        ],
        curves=lambda wc: training_targets(),
        fids=lambda wc: fid_targets(),
        earlystop=lambda wc: earlystop_targets(),
        stage_curves=lambda wc: earlystop_curve_targets(),
        panels=lambda wc: [path for path, _ in qualitative_panels().values() if path],
    output:
        figures=report(
            expand(
                f"{FIGURES}/{{name}}.{{ext}}", name=FIGURE_NAMES, ext=["png", "pdf"]
            ),
            caption="../report/figures.rst",
            category="Figures",
        ),
    log:
        f"{LOGS}/report/figures.log",
    conda:
        "../../environment.yml"
    threads: 1
    params:
        panels=lambda wc: qualitative_panels(),
    script:
        "../../scripts/figures.py"


rule report:
    input:
        tables=rules.aggregate.output.tables,
        figures=rules.figures.output.figures,
    output:
        md=report(
            f"{REPORT}/report.md", caption="../report/report.rst", category="Report"
        ),
        config=f"{REPORT}/config_used.json",
    log:
        f"{LOGS}/report/report.log",
    conda:
        "../../environment.yml"
    threads: 1
    params:
        config=config,
        repo=workflow.basedir,
    script:
        "../../scripts/report.py"
