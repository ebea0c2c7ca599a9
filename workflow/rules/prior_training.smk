# Issue 19's comparison (make study PART=prior_training): the models trained with and
# without the DIP prior (their training and sampling cells are ddpm.smk's), summarised
# against images seen and seconds, paired per image against the truncated model.


rule summarise_prior_training:
    input:
        metrics=lambda wc: prior_training_sample_targets(),
        curves=lambda wc: prior_training_curve_targets(),
        priors=lambda wc: training_prior_files(),
    output:
        tables=[f"{PRIOR_TRAINING_DIR}/{name}.csv" for name in PRIOR_TRAINING_TABLES],
        figure=report(
            f"{PRIOR_TRAINING_DIR}/convergence.png",
            caption="../report/prior_training.rst",
            category="Prior-trained DDPM",
        ),
        section=f"{PRIOR_TRAINING_DIR}/prior_training.md",
    log:
        f"{grid.LOGS}/summarise_prior_training.log",
    conda:
        "../../environment.yml"
    params:
        training_priors=lambda wc: training_prior_mapping(),
        batch_size=config["ddpm"]["batch_size"],
        final_ckpt=(PRIOR_TRAINING or {}).get("steps"),
        t0=lambda wc: prior_training_headline()["t0"],
        steps=lambda wc: prior_training_headline()["steps"],
        out_dir=lambda wc, output: str(Path(output.section).parent),
    script:
        "../../scripts/summarise_prior_training.py"
