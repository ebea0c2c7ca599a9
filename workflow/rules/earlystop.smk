# Example 2: DDPM-inspired progressive targets as a DIP early-stopping rule, compared with
# fixed budgets, the discrepancy principle, ES-WMV and the oracle on the same fits.


# The plain DIP fit the post-hoc rules are scored on: its own cell (observation, arch, DIP
# seed), fitted once for every early-stopping cell that differs only in the training
# variant's settings, with a length set by the config, not by any variant's run.
rule earlystop_plain:
    input:
        unpack(observation_input),
    output:
        table=grid.EARLYSTOP_PLAIN.file(EARLYSTOP_PLAIN_FILES["table"]),
        trajectory=grid.EARLYSTOP_PLAIN.file(EARLYSTOP_PLAIN_FILES["trajectory"]),
        json=grid.EARLYSTOP_PLAIN.file(EARLYSTOP_PLAIN_FILES["json"]),
    log:
        grid.EARLYSTOP_PLAIN.log,
    benchmark:
        grid.EARLYSTOP_PLAIN.benchmark
    priority: PRIORITY["earlystop"]
    group:
        "earlystop"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        runtime=120,
    params:
        identity=lambda wc: cell_of(grid.EARLYSTOP_PLAIN, wc),
        settings=earlystop_plain_cell_settings,
        device=config["device"],
    script:
        "../../scripts/earlystop_plain.py"


# The training variant's fit, joined with its plain cell's rows into the cell's table.
rule earlystop:
    input:
        unpack(observation_input),
        unpack(earlystop_plain_input),
    output:
        table=grid.EARLYSTOP.file("earlystop.csv"),
        curves=grid.EARLYSTOP.file("stage_curves.csv"),
        trajectory=grid.EARLYSTOP.file("trajectory.csv"),
        npz=grid.EARLYSTOP.file("outputs.npz"),
        json=grid.EARLYSTOP.file("params.json"),
    log:
        grid.EARLYSTOP.log,
    benchmark:
        grid.EARLYSTOP.benchmark
    priority: PRIORITY["earlystop"]
    group:
        "earlystop"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        runtime=120,
    params:
        identity=lambda wc: cell_of(grid.EARLYSTOP, wc),
        settings=earlystop_settings,
        device=config["device"],
    script:
        "../../scripts/earlystop.py"


# Example 2 made fair: the post-hoc rules tuned leave-one-image-out on every cell's plain
# trajectory (only with earlystop.loo or earlystop.out; target earlystop_loo).
EARLYSTOP_LOO_TABLES = (
    "cases",
    "summary",
    "summary_by_task",
    "comparisons",
    "choices",
    "plain_peaks",
)


rule summarise_earlystop_loo:
    input:
        trajectories=lambda wc: earlystop_targets("trajectory.csv"),
        tables=lambda wc: earlystop_targets(),
        params=lambda wc: earlystop_targets("params.json"),
        observations=lambda wc: earlystop_observation_params(),
    output:
        cases=earlystop_loo_table("cases"),
        summary=earlystop_loo_table("summary"),
        summary_by_task=earlystop_loo_table("summary_by_task"),
        comparisons=earlystop_loo_table("comparisons"),
        choices=earlystop_loo_table("choices"),
        plain_peaks=earlystop_loo_table("plain_peaks"),
    log:
        f"{grid.LOGS}/summarise_earlystop_loo.log",
    conda:
        "../../environment.yml"
    params:
        settings=lambda wc: earlystop_loo_settings(),
    script:
        "../../scripts/summarise_earlystop_loo.py"


# Example 2's report section: the example images' plain fits and progressive runs refitted
# for the crops figure, each checked against its cell (stages/example2_report.py), then the
# section and its figures (only with earlystop.loo or earlystop.out; target earlystop_loo).
rule example2_refit_plain:
    input:
        cases=earlystop_loo_table("cases"),
        trajectories=lambda wc: example2_files("trajectory.csv"),
        tables=lambda wc: example2_files("earlystop.csv"),
        params=lambda wc: example2_files("params.json"),
        observations=lambda wc: example2_observations("params.json"),
        degraded=lambda wc: example2_observations("degraded.npz"),
    output:
        npz=example2_output("example2_plain_outputs.npz"),
        table=example2_output("example2_plain_outputs.csv"),
    log:
        f"{grid.LOGS}/example2_refit_plain.log",
    benchmark:
        f"{grid.BENCHMARKS}/example2_refit_plain.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        runtime=120,
    params:
        dip=lambda wc: example2_dip_settings(),
    script:
        "../../scripts/refit_example2_plain.py"


rule example2_refit_progressive:
    input:
        params=lambda wc: example2_files("params.json", progressive=True),
        curves=lambda wc: example2_files("stage_curves.csv", progressive=True),
        outputs=lambda wc: example2_files("outputs.npz", progressive=True),
        observations=lambda wc: example2_observations("params.json", progressive=True),
        degraded=lambda wc: example2_observations("degraded.npz", progressive=True),
    output:
        npz=example2_output("example2_progressive_outputs.npz"),
        table=example2_output("example2_progressive_outputs.csv"),
    log:
        f"{grid.LOGS}/example2_refit_progressive.log",
    benchmark:
        f"{grid.BENCHMARKS}/example2_refit_progressive.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        runtime=120,
    params:
        dip=lambda wc: example2_dip_settings(),
        show_patience=lambda wc: example2_shows_patience(),
    script:
        "../../scripts/refit_example2_progressive.py"


rule example2_report:
    input:
        cases=earlystop_loo_table("cases"),
        summary=earlystop_loo_table("summary"),
        summary_by_task=earlystop_loo_table("summary_by_task"),
        comparisons=earlystop_loo_table("comparisons"),
        plain_peaks=earlystop_loo_table("plain_peaks"),
        trajectories=lambda wc: earlystop_targets("trajectory.csv"),
        tables=lambda wc: earlystop_targets(),
        params=lambda wc: earlystop_targets("params.json"),
        observations=lambda wc: earlystop_observation_params(),
        stage_curves=lambda wc: example2_files("stage_curves.csv"),
        plain_npz=example2_output("example2_plain_outputs.npz"),
        plain_table=example2_output("example2_plain_outputs.csv"),
        progressive_npz=example2_output("example2_progressive_outputs.npz"),
        progressive_table=example2_output("example2_progressive_outputs.csv"),
    output:
        section=example2_output("example2.md"),
        curves=report(
            example2_figure("curves"),
            caption="../report/example2.rst",
            category="Example 2",
        ),
        gaps=report(
            example2_figure("gaps"),
            caption="../report/example2.rst",
            category="Example 2",
        ),
        crops=report(
            example2_figure("crops"),
            caption="../report/example2.rst",
            category="Example 2",
        ),
    log:
        f"{grid.LOGS}/example2_report.log",
    conda:
        "../../environment.yml"
    params:
        settings=lambda wc: example2_settings(),
    script:
        "../../scripts/write_example2.py"
