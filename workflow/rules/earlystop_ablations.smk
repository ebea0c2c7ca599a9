# Issue 18, item 4: the progressive rule's factors varied one at a time around a centre
# setting (only with earlystop.ablations; target earlystop_ablations). Each setting is an
# early-stopping cell of its own (rule earlystop); the summary pairs them per image with
# the centre, beside the leave-one-image-out tables in earlystop.out.
EARLYSTOP_ABLATION_TABLES = files(
    grid.EARLYSTOP, grid.earlystop_ablation_cells(config), "earlystop.csv"
)
EARLYSTOP_ABLATION_SUMMARY = {
    "csv": f"{EARLYSTOP_LOO_DIR}/ablations.csv",
    "md": f"{EARLYSTOP_LOO_DIR}/ablations.md",
}
EARLYSTOP_ABLATION_TARGETS = (
    list(EARLYSTOP_ABLATION_SUMMARY.values()) if EARLYSTOP_ABLATION_TABLES else []
)


rule summarise_earlystop_ablations:
    input:
        tables=EARLYSTOP_ABLATION_TABLES,
    output:
        csv=EARLYSTOP_ABLATION_SUMMARY["csv"],
        md=EARLYSTOP_ABLATION_SUMMARY["md"],
    log:
        f"{grid.LOGS}/summarise_earlystop_ablations.log",
    conda:
        "../../environment.yml"
    params:
        ablations=lambda wc: config["earlystop"]["ablations"],
    script:
        "../../scripts/summarise_earlystop_ablations.py"
