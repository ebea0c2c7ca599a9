# DIP + DDPM reference pipeline. This file stays thin: configuration, validation,
# rule includes and the default target. The rules live in workflow/rules/.
import os

from snakemake.utils import min_version

min_version("9.20")


# With --replace-workflow-config the command line's config files replace the default one.
# Snakemake passes the jobs it spawns (`run` rules) --configfiles but not that flag, so they
# would merge the default config into, e.g., the study's (no valid config). The main process
# leaves the choice in the environment, which spawned jobs inherit, and they skip the
# default config file as the main process did. Without the flag, config files merge over
# the default one as usual (the SLURM test's tiny overlay relies on that).
REPLACE_CONFIG_ENV = "DIPDDPM_REPLACE_WORKFLOW_CONFIG"
if workflow.config_settings.replace_workflow_config:
    os.environ[REPLACE_CONFIG_ENV] = "1"
if not (workflow.overwrite_configfiles and os.environ.get(REPLACE_CONFIG_ENV)):

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/dip.smk"
include: "workflow/rules/ddpm.smk"
include: "workflow/rules/earlystop.smk"
include: "workflow/rules/guided.smk"
include: "workflow/rules/earlystop_ablations.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/example1.smk"
include: "workflow/rules/generation.smk"
include: "workflow/rules/prior_training.smk"


rule all:
    default_target: True
    input:
        all_targets(),


# The study runs in parts, each a target of its own (make study PART=models).
rule models:
    input:
        model_targets(),


rule priors:
    input:
        prior_targets(),


rule example1:
    input:
        example1_targets(),


rule classifier:
    input:
        classifier_targets(),


rule generation:
    input:
        generation_targets(),


rule prior_training:
    input:
        prior_training_targets(),


rule earlystop_loo:
    input:
        earlystop_loo_targets(),


rule earlystop_guided:
    input:
        EARLYSTOP_GUIDED_TARGETS,


rule earlystop_ablations:
    input:
        EARLYSTOP_ABLATION_TARGETS,
