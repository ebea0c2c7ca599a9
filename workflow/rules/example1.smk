# Example 1's answer: settings chosen on the tuning images, paired comparisons with Holm
# correction, steps-to-quality and cost curves on the evaluation images.
from dipddpm.example1_qualitative import plan_cells, plan_observations, qualitative_plan

EXAMPLE1_TABLES = (
    "settings",
    "primary_comparisons",
    "quality_targets",
    "quality_ladder",
    "steps_to_target",
    "nfe_to_target",
    "diversity",
    "cost_curves",
    "t0_curves",
    "auto_t0",
    "auto_t0_cases",
    "ablations",
)


rule summarise_example1:
    input:
        metrics=lambda wc: dip_metrics_inputs() + sample_targets(),
        calibration=lambda wc: calibration_targets(),
        observations=lambda wc: auto_t0_observations(),
        priors=lambda wc: auto_t0_priors(),
    output:
        tables=[f"{EXAMPLE1_DIR}/{name}.csv" for name in EXAMPLE1_TABLES],
        pareto=report(
            f"{EXAMPLE1_DIR}/pareto.png",
            caption="../report/example1.rst",
            category="Example 1",
        ),
        t0=f"{EXAMPLE1_DIR}/psnr_vs_t0.png",
        section=f"{EXAMPLE1_DIR}/example1.md",
    log:
        f"{grid.LOGS}/summarise_example1.log",
    conda:
        "../../environment.yml"
    params:
        tuning_every=config.get("example1", {}).get("tuning_every", 4),
        T=config["ddpm"]["T"],
        schedule=config["ddpm"]["schedule"],
        # Read when present (the models part commits it), never required: see the stage.
        model_verdicts=f"{MODELS_SUMMARY}/model_verdicts.csv",
        prior_headline=f"{PRIOR_TRAINING_DIR}/headline.csv",
        out_dir=lambda wc, output: str(Path(output.pareto).parent),
    script:
        "../../scripts/summarise_example1.py"


# A few evaluation images of every task restored by each method (the plan: which sampling
# cells, priors and models). It samples its columns itself from the stored priors and
# weights (the cells' own outputs are not kept), so it needs no sampling cell.
rule example1_qualitative:
    input:
        observations=lambda wc: plan_observations(
            qualitative_plan(config), "degraded.npz"
        ),
        params=lambda wc: plan_observations(qualitative_plan(config), "params.json"),
        priors=lambda wc: sorted(
            {
                prior_input(cell)
                for cell in plan_cells(qualitative_plan(config))
                if cell["start"] == "dip"
            }
        ),
        models=lambda wc: sorted(
            {checkpoint_input(cell) for cell in plan_cells(qualitative_plan(config))}
        ),
    output:
        figure=report(
            f"{EXAMPLE1_DIR}/qualitative.png",
            caption="../report/example1_qualitative.rst",
            category="Example 1",
        ),
        pdf=f"{EXAMPLE1_DIR}/qualitative.pdf",
    log:
        f"{grid.LOGS}/example1_qualitative.log",
    benchmark:
        f"{grid.BENCHMARKS}/example1_qualitative.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    params:
        plan=lambda wc: qualitative_plan(config),
        tuning_every=config.get("example1", {}).get("tuning_every", 4),
        device=config["device"],
        stem=lambda wc, output: str(Path(output.figure).with_suffix("")),
    script:
        "../../scripts/example1_qualitative.py"
