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
