# The two commands of the README: `make run` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
# Point the pipeline at a local CIFAR-10 copy: make run CIFAR10=../shared/data
CIFAR10 ?=
# GPUs this machine can give to jobs (rules that need one declare resources: gpu=1).
GPUS ?= $(shell nvidia-smi -L 2>/dev/null | grep -c '^GPU' || echo 0)
CONFIG ?= config/config.yaml
ARGS ?=

ifneq ($(CIFAR10),)
CIFAR10_CONFIG := --config 'data={"cifar10": {"source": "archive", "path": "$(abspath $(CIFAR10))/cifar10-jpeg-{split}.tar.gz"}}'
endif
SNAKEMAKE_ANY := $(BIN)/snakemake --workflow-profile workflow/profiles/local --cores $(CORES) \
	$(if $(filter-out 0,$(GPUS)),--resources gpu=$(GPUS),) --replace-workflow-config
SNAKEMAKE := $(SNAKEMAKE_ANY) --configfile $(CONFIG)

.PHONY: run study study-report test dry-run lint format report summary clean-venv bench

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/.installed
	$(SNAKEMAKE) $(CIFAR10_CONFIG) $(ARGS)

dry-run: $(BIN)/.installed
	$(SNAKEMAKE) --dry-run $(CIFAR10_CONFIG) $(ARGS)

report: $(BIN)/.installed
	$(SNAKEMAKE) --report results/report/snakemake-report.html $(CIFAR10_CONFIG) $(ARGS)

# Copy the last run's tables, figures and report (with the commit and config that made
# them) to the committed results/summary/. Run it after `make run` on a clean checkout.
summary:
	test -f results/report/config_used.json
	rm -rf results/summary/tables results/summary/figures results/summary/report results/summary/generation
	mkdir -p results/summary/report results/summary/generation
	cp -r results/tables results/figures results/summary/
	cp results/report/report.md results/report/config_used.json results/summary/report/
	# The report links the generation section's figures as ../generation/ (PNG only).
	if [ -d results/generation ]; then \
		cp results/generation/*.csv results/generation/*.md results/generation/*.png \
			results/summary/generation/; fi

# config/study.yaml in parts, each a Snakemake target: make study PART=models CIFAR10=...
# A stored model or prior asks for no input once it exists, so its input set differs from
# the run that stored it: without the `input` trigger a later part in the same checkout
# keeps the stored copy instead of rerunning its store rule (which would need the cell).
STUDY_CONFIG ?= config/study.yaml
PART ?= models
STUDY_TRIGGERS := --rerun-triggers mtime params code software-env
study: $(BIN)/.installed
	$(SNAKEMAKE_ANY) $(PART) --configfile $(STUDY_CONFIG) $(STUDY_TRIGGERS) $(CIFAR10_CONFIG) $(ARGS)

# The study's report from the committed parts (results/study/report.md) and its Snakemake
# HTML report; it reads whatever parts are committed, so it always reruns.
study-report: $(BIN)/.installed
	$(SNAKEMAKE_ANY) study_report --configfile $(STUDY_CONFIG) --forcerun study_report $(CIFAR10_CONFIG) $(ARGS)
	$(SNAKEMAKE_ANY) study_report --configfile $(STUDY_CONFIG) $(CIFAR10_CONFIG) \
		--report results/study/report.html

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(ARGS)

# The README's performance table (scripts/bench_report.py): the benches with fixed settings,
# ours vs diffusers and deepinv (the optional `bench` extra). Minutes; run it on an idle machine.
bench: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python scripts/bench_report.py $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --configfile $(CONFIG) --replace-workflow-config

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/snakefmt Snakefile workflow/rules
