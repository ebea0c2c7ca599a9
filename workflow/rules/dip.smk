# Deep Image Prior: one cell per (purpose, dataset, task, observation seed, architecture,
# DIP seed). One fit per cell stores the output at every configured duration, so the
# duration ablation never refits.


rule fit_dip:
    input:
        unpack(observation_input),
    output:
        npz=grid.DIP.file("output.npz"),
        trajectory=grid.DIP.file("trajectory.csv"),
        metrics=grid.DIP.file("metrics.csv"),
        json=grid.DIP.file("params.json"),
        preview=report(
            grid.DIP.file("preview.png"),
            caption="../report/dip_cell.rst",
            category="DIP",
            subcategory="{dataset} {task}",
            labels={"arch": "{arch}", "seed": "{dip_seed}", "obs": "{obs_seed}"},
        ),
    log:
        grid.DIP.log,
    benchmark:
        grid.DIP.benchmark
    priority: PRIORITY["dip"]
    group:
        "dip"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        runtime=120,
    params:
        identity=lambda wc: cell_of(grid.DIP, wc),
        settings=dip_fit_settings,
        device=config["device"],
    script:
        "../../scripts/fit_dip.py"


if PRIOR_STORE:

    rule store_prior:
        # `run`, not `script`: see store_model (committed copies must not be re-derived).
        input:
            unpack(stored_prior_source),
        output:
            npz=grid.in_store(grid.DIP.file("output.npz"), PRIOR_STORE),
            metrics=grid.in_store(grid.DIP.file("metrics.csv"), PRIOR_STORE),
        log:
            grid.DIP.log.replace(".log", "-store.log"),
        run:
            keep_prior(input, output, log)

    rule summarise_priors:
        input:
            metrics=stored_dip("metrics.csv"),
        output:
            f"{PRIOR_STORE}/dip_summary.csv",
        log:
            f"{grid.LOGS}/summarise_priors.log",
        conda:
            "../../environment.yml"
        script:
            "../../scripts/summarise_priors.py"
