# Issue 18: DIP with the trained DDPM as a learned denoiser (only with earlystop.guided;
# target earlystop_guided). One cell per grid.GUIDED identity; the lam-0 cell is plain DIP
# with the same iterations, the reference its guided cells are paired with, and also
# scores the DDPM alone. The summary pairs them per image in earlystop.out.
from dipddpm.stages.earlystop_guided import cell_settings as guided_cell_settings

# Every guided cell's table, and the summary tables beside the leave-one-image-out ones;
# no targets without earlystop.guided, so no run gains the jobs unasked.
GUIDED_CELL_TABLES = files(grid.GUIDED, grid.guided_cells(config), "guided.csv")
GUIDED_SUMMARY = {
    name: f"{EARLYSTOP_LOO_DIR}/guided_{name}.csv"
    for name in ("summary", "comparisons", "ddpm")
} | {"markdown": f"{EARLYSTOP_LOO_DIR}/guided.md"}
EARLYSTOP_GUIDED_TARGETS = list(GUIDED_SUMMARY.values()) if GUIDED_CELL_TABLES else []


rule earlystop_guided_cell:
    input:
        unpack(observation_input),
        # Form perc's feature extractor (metrics.classifier's weights); none otherwise.
        unpack(guided_classifier_input),
        # Every cell reads the model, as Example 1's sampling cells do (the store's copy
        # with one): the guided ones guide with it, the lam-0 one scores it alone.
        ckpt=checkpoint_input,
    output:
        table=grid.GUIDED.file("guided.csv"),
        trajectory=grid.GUIDED.file("trajectory.csv"),
        json=grid.GUIDED.file("params.json"),
    log:
        grid.GUIDED.log,
    benchmark:
        grid.GUIDED.benchmark
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
        identity=lambda wc: cell_of(grid.GUIDED, wc),
        settings=lambda wc: guided_cell_settings(config, cell_of(grid.GUIDED, wc)),
        device=config["device"],
    script:
        "../../scripts/earlystop_guided.py"


rule summarise_earlystop_guided:
    input:
        tables=GUIDED_CELL_TABLES,
    output:
        summary=GUIDED_SUMMARY["summary"],
        comparisons=GUIDED_SUMMARY["comparisons"],
        ddpm=GUIDED_SUMMARY["ddpm"],
        markdown=GUIDED_SUMMARY["markdown"],
    log:
        f"{grid.LOGS}/summarise_earlystop_guided.log",
    conda:
        "../../environment.yml"
    script:
        "../../scripts/summarise_earlystop_guided.py"
