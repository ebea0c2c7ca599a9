# Evaluation and reporting: the cached FID reference statistics, the tidy table of every
# cell, summary tables, figures and the generated report.
from dipddpm.stages.report import benchmark_files


rule fid_reference:
    input:
        clean=grid.CLEAN.file("clean.npz"),
    output:
        npz=grid.REFERENCE.file("inception.npz"),
    log:
        grid.REFERENCE.log,
    benchmark:
        grid.REFERENCE.benchmark
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


rule aggregate:
    input:
        metrics=lambda wc: dip_targets() + sample_targets(),
        curves=lambda wc: training_targets(),
        fids=lambda wc: fid_targets(),
        earlystop=lambda wc: earlystop_targets(),
        calibration=lambda wc: calibration_targets(),
    output:
        all_cells=f"{grid.TABLES}/all_cells.csv",
        versions=f"{grid.TABLES}/code_versions.csv",
        tables=report(
            expand(
                f"{grid.TABLES}/{{name}}.{{ext}}", name=TABLE_NAMES, ext=["csv", "md"]
            ),
            caption="../report/tables.rst",
            category="Tables",
        ),
    log:
        f"{grid.LOGS}/report/aggregate.log",
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
        all_cells=f"{grid.TABLES}/all_cells.csv",
        trajectories=lambda wc: dip_targets("trajectory.csv"),
        curves=lambda wc: training_targets(),
        fids=lambda wc: fid_targets(),
        earlystop=lambda wc: earlystop_targets(),
        stage_curves=lambda wc: earlystop_targets("trajectory.csv"),
        panels=lambda wc: [path for path, _ in qualitative_panels().values() if path],
    output:
        figures=report(
            expand(
                f"{grid.FIGURES}/{{name}}.{{ext}}",
                name=figure_names(),
                ext=["png", "pdf"],
            ),
            caption="../report/figures.rst",
            category="Figures",
        ),
    log:
        f"{grid.LOGS}/report/figures.log",
    conda:
        "../../environment.yml"
    threads: 1
    params:
        panels=lambda wc: qualitative_panels(),
        names=figure_names(),
    script:
        "../../scripts/figures.py"


rule report:
    input:
        tables=rules.aggregate.output.tables,
        versions=rules.aggregate.output.versions,
        all_cells=rules.aggregate.output.all_cells,
        figures=rules.figures.output.figures,
        # With metrics.classifier: every generation setting's offline scores, their summary
        # and the generation section, which the report's Generation section shows.
        generation=lambda wc: generation_targets(),
    output:
        md=report(
            f"{grid.REPORT}/report.md",
            caption="../report/report.rst",
            category="Report",
        ),
        config=f"{grid.REPORT}/config_used.json",
    log:
        f"{grid.LOGS}/report/report.log",
    conda:
        "../../environment.yml"
    threads: 1
    params:
        config=config,
        repo=workflow.basedir,
        benchmarks=lambda wc: benchmark_files(config),
    script:
        "../../scripts/report.py"


# The study's report (make study-report): assembled from the parts committed under
# results/study/. It reads whatever parts are there, so it declares them as params, not
# inputs: an input would make Snakemake rebuild every part whose cells are gone.
STUDY_ROOT = f"{grid.RESULTS}/study"


rule study_report:
    output:
        md=report(
            f"{STUDY_ROOT}/report.md",
            caption="../report/study_report.rst",
            category="Study",
        ),
    log:
        f"{grid.LOGS}/report/study_report.log",
    conda:
        "../../environment.yml"
    params:
        root=lambda wc, output: os.path.dirname(output.md),
        repo=workflow.basedir,
    script:
        "../../scripts/study_report.py"
