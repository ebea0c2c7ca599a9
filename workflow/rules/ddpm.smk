# DDPM: training cells (full and truncated, each checkpoint its own target) and the
# sampling cells of Example 1 (start from noise, from the observation, from a DIP prior,
# DIP-guided), plus unconditional generation. Each sampling job also scores its set with
# FID/KID against the cached reference statistics.


# One training rule per training length: its checkpoints are its outputs, and the
# prior-training comparison keeps other checkpoints than the main models.
for _steps, _checkpoints in grid.training_runs(config).items():

    rule:
        name:
            train_rule_name(_steps)
        input:
            unpack(train_prior_input),
            clean=lambda wc: grid.CLEAN.path({"dataset": wc.train_dataset}, "clean.npz"),
            held_out=grid.CLEAN.path(
                {"dataset": config["ddpm"]["sample"]["dataset"]}, "clean.npz"
            ),
        output:
            checkpoints=expand(
                grid.checkpoint_file(),
                ckpt=_checkpoints,
                allow_missing=True,
            ),
            curve=grid.TRAIN.file("curve.csv"),
            json=grid.TRAIN.file("params.json"),
        log:
            grid.TRAIN.log,
        benchmark:
            grid.TRAIN.benchmark
        wildcard_constraints:
            train_steps=str(_steps),
        priority: PRIORITY["training"]
        conda:
            "../../environment.yml"
        # One thread per job: on a small CPU two 1-thread jobs beat one 2-thread job, and
        # OpenMP threads competing with other jobs for cores slow down by an order of magnitude.
        threads: 1
        resources:
            gpu=1,
            runtime=24 * 60,
            mem_mb=16000,
        params:
            identity=lambda wc: cell_of(grid.TRAIN, wc),
            train=ddpm_train_settings,
            prior=train_prior_settings,
            out_dir=lambda wc, output: str(Path(output.curve).parent),
            device=config["device"],
        script:
            "../../scripts/train_ddpm.py"


if MODEL_STORE:

    rule store_model:
        # `run`, not `script`: Snakemake reruns a script rule whose output is older than
        # its script, and after a checkout the order of those mtimes is arbitrary, which
        # would re-derive (retrain) committed weights.
        input:
            unpack(stored_model_source),
        output:
            grid.stored_checkpoint_file(MODEL_STORE),
        log:
            grid.TRAIN.log.replace(".log", "-store-{ckpt}.log"),
        run:
            keep_model(input, output, log)


rule summarise_models:
    input:
        curves=training_targets(),
    output:
        table=f"{MODELS_SUMMARY}/model_convergence.csv",
        verdicts=f"{MODELS_SUMMARY}/model_verdicts.csv",
        figure=report(
            f"{MODELS_SUMMARY}/model_convergence.png",
            caption="../report/model_convergence.rst",
            category="DDPM training",
        ),
    log:
        f"{grid.LOGS}/summarise_models.log",
    conda:
        "../../environment.yml"
    params:
        batch_size=config["ddpm"]["batch_size"],
        plateau_db=config["ddpm"]["plateau_db"],
        stem=lambda wc, output: str(Path(output.figure).with_suffix("")),
    script:
        "../../scripts/summarise_models.py"


rule calibrate_dip:
    output:
        grid.CALIBRATION_DIP,
    log:
        f"{grid.LOGS}/calibration/dip-{{arch}}.log",
    benchmark:
        f"{grid.BENCHMARKS}/calibration/dip-{{arch}}.tsv"
    conda:
        "../../environment.yml"
    # One thread and a fixed batch: a method's cost per image, independent of what else
    # shares the machine when the cells run.
    threads: 1
    params:
        archs=lambda wc: {wc.arch: config["dip"]["archs"][wc.arch]},
        presets=[],
        image_shape=[3, config["cost"]["image_size"], config["cost"]["image_size"]],
        batch=config["cost"]["batch"],
        repeats=config["cost"]["repeats"],
        device=config["device"],
    script:
        "../../scripts/calibrate_cost.py"


rule calibrate_unet:
    output:
        grid.CALIBRATION_UNET,
    log:
        f"{grid.LOGS}/calibration/unet-{{preset}}.log",
    benchmark:
        f"{grid.BENCHMARKS}/calibration/unet-{{preset}}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    params:
        archs={},
        presets=lambda wc: [wc.preset],
        image_shape=[3, config["cost"]["image_size"], config["cost"]["image_size"]],
        batch=config["cost"]["batch"],
        repeats=config["cost"]["repeats"],
        device=config["device"],
    script:
        "../../scripts/calibrate_cost.py"


rule sample_ddpm:
    input:
        unpack(observation_input),
        ckpt=checkpoint_input,
        prior=prior_input,
        reference=(
            fid_reference_input() if config["metrics"]["restoration_fid"] else []
        ),
        calibration=sample_calibration_input,
    output:
        npz=grid.SAMPLE.file("samples.npz"),
        metrics=grid.SAMPLE.file("metrics.csv"),
        json=grid.SAMPLE.file("params.json"),
        fid=grid.SAMPLE.file("fid.json"),
        preview=report(
            grid.SAMPLE.file("preview.png"),
            caption="../report/sample_cell.rst",
            category="DDPM sampling",
            subcategory="{start} t0={t0}",
            labels={"train": "{mode}-t{t_max}", "steps": "{steps}", "lam": "{lam}"},
        ),
    log:
        grid.SAMPLE.log,
    benchmark:
        grid.SAMPLE.benchmark
    group:
        "sample"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        runtime=60,
    params:
        identity=lambda wc: cell_of(grid.SAMPLE, wc),
        weights=config["metrics"]["inception_weights"],
        device=config["device"],
    script:
        "../../scripts/sample_ddpm.py"


rule generate_ddpm:
    input:
        ckpt=checkpoint_input,
        reference=fid_reference_input(),
    output:
        npz=grid.GENERATE.file("samples.npz"),
        json=grid.GENERATE.file("params.json"),
        fid=grid.GENERATE.file("fid.json"),
        preview=report(
            grid.GENERATE.file("preview.png"),
            caption="../report/generate_cell.rst",
            category="DDPM sampling",
            subcategory="generation",
            labels={"train": "{mode}-t{t_max}", "steps": "{steps}"},
        ),
    log:
        grid.GENERATE.log,
    benchmark:
        grid.GENERATE.benchmark
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        gpu=1,
        runtime=120,
    params:
        identity=lambda wc: cell_of(grid.GENERATE, wc),
        n=generate_count,
        weights=config["metrics"]["inception_weights"],
        device=config["device"],
    script:
        "../../scripts/generate_ddpm.py"
