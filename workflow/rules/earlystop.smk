# Example 2: DDPM-inspired progressive targets as a DIP early-stopping rule, compared with
# fixed budgets, the discrepancy principle, ES-WMV and the oracle on the same fits.


rule earlystop:
    input:
        unpack(observation_input),
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
