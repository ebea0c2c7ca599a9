# The generation metrics' feature extractor: a small CIFAR-10 classifier trained once. Its
# rule fails (and writes nothing) below metrics.classifier.floor test accuracy.

if CLASSIFIER:

    rule train_classifier:
        input:
            train=grid.CLEAN.path({"dataset": CLASSIFIER["train"]}, "clean.npz"),
            test=grid.CLEAN.path({"dataset": CLASSIFIER["test"]}, "clean.npz"),
        output:
            weights=f"{CLASSIFIER_DIR}/cifarnet.pt",
            json=f"{CLASSIFIER_DIR}/cifarnet.json",
        log:
            f"{grid.LOGS}/train_classifier.log",
        benchmark:
            f"{grid.BENCHMARKS}/train_classifier.tsv"
        conda:
            "../../environment.yml"
        # Bit-identical weights need the same thread count (and torch build).
        threads: 2
        params:
            settings=lambda wc: {"epochs": CLASSIFIER.get("epochs", 2)},
            floor=CLASSIFIER.get("floor", 0.6),
            min_test_images=CLASSIFIER.get("min_test_images", 2000),
            resume=f"{CLASSIFIER_DIR}/.resume.pt",
        script:
            "../../scripts/train_classifier.py"

    if CLASSIFIER.get("store"):

        rule store_classifier:
            input:
                unpack(stored_classifier_source),
            output:
                weights=classifier_weights(),
                json=classifier_weights().replace(".pt", ".json"),
            log:
                f"{grid.LOGS}/store_classifier.log",
            run:
                keep_classifier(input, output, log)

    # Generation metrics of one setting (a generation cell less its sample seed): every
    # seed's samples scored together, so diversity across seeds is measured. DIP-started
    # settings here; settings from noise below, with no prior or source to compare with.
    rule score_generation:
        input:
            unpack(generation_score_input(grid.SAMPLE)),
        output:
            csv=grid.setting_file(grid.SAMPLE, grid.GENERATION_SCORES),
        log:
            grid.setting_log(grid.SAMPLE),
        benchmark:
            grid.setting_benchmark(grid.SAMPLE)
        conda:
            "../../environment.yml"
        # One thread, as every cell job: a second thread bought 4 % (1.26 s vs 1.32 s a
        # default-run setting, the same numbers), and a 2-thread job waits for both cores.
        threads: 1
        params:
            identity=generation_score_identity(grid.SAMPLE),
            prior_iters=lambda wc: wc.iters,
            shared_starts=True,
        script:
            "../../scripts/score_generation.py"

    use rule score_generation as score_generation_noise with:
        input:
            unpack(generation_score_input(grid.GENERATE)),
        output:
            csv=grid.setting_file(grid.GENERATE, grid.GENERATION_SCORES),
        log:
            grid.setting_log(grid.GENERATE),
        benchmark:
            grid.setting_benchmark(grid.GENERATE)
        params:
            identity=generation_score_identity(grid.GENERATE),
            prior_iters=None,
            # Sample i of two seeds shares no start: no within-prior spread.
            shared_starts=False,

    rule summarise_generation:
        input:
            scores=generation_score_targets(),
        output:
            csv=GENERATION_SUMMARY,
        log:
            f"{grid.LOGS}/summarise_generation.log",
        conda:
            "../../environment.yml"
        script:
            "../../scripts/summarise_generation.py"

    # The part's answer: quality and diversity against NFE and seconds per sample, from
    # noise and from the DIP priors at each t0 and duration (table, figure, section),
    # and a grid of the samples themselves (sources, priors, samples per t0 and seed,
    # samples from noise per NFE).
    rule report_generation:
        input:
            unpack(lambda wc: generation_grid_input()),
            scores=GENERATION_SUMMARY,
            cells=lambda wc: generation_cell_records(),
            priors=lambda wc: generation_prior_metrics(),
            classifier=classifier_weights().replace(".pt", ".json"),
        output:
            curves=generation_output("generation_curves.csv"),
            figure=report(
                generation_output("generation_curves.png"),
                caption="../report/generation.rst",
                category="Generation",
            ),
            pdf=generation_output("generation_curves.pdf"),
            samples=report(
                generation_output("generation_samples.png"),
                caption="../report/generation_samples.rst",
                category="Generation",
            ),
            section=generation_output("generation.md"),
        log:
            f"{grid.LOGS}/report_generation.log",
        conda:
            "../../environment.yml"
        params:
            settings=lambda wc: generation_section_settings(),
        script:
            "../../scripts/report_generation.py"
