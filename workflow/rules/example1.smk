# Example 1's answer: settings chosen on the tuning images, paired comparisons with Holm
# correction, steps-to-quality and cost curves on the evaluation images.

EXAMPLE1_TABLES = (
    "settings",
    "primary_comparisons",
    "quality_targets",
    "quality_ladder",
    "steps_to_target",
    "diversity",
    "cost_curves",
    "t0_curves",
)


rule summarise_example1:
    input:
        metrics=lambda wc: dip_metrics_inputs() + sample_targets(),
        calibration=lambda wc: calibration_targets(),
    output:
        tables=[f"{EXAMPLE1_DIR}/{name}.csv" for name in EXAMPLE1_TABLES],
        pareto=report(
            f"{EXAMPLE1_DIR}/pareto.png",
            caption="../report/example1.rst",
            category="Example 1",
        ),
        t0=f"{EXAMPLE1_DIR}/psnr_vs_t0.png",
    log:
        f"{grid.LOGS}/summarise_example1.log",
    conda:
        "../../environment.yml"
    params:
        tuning_every=config.get("example1", {}).get("tuning_every", 4),
        out_dir=lambda wc, output: str(Path(output.pareto).parent),
    script:
        "../../scripts/summarise_example1.py"
