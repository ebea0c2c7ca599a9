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
