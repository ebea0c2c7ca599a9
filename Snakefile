# DIP + DDPM reference pipeline. This file stays thin: configuration, validation,
# rule includes and the default target. The rules live in workflow/rules/.
from snakemake.utils import min_version

min_version("9.20")


# A config file given on the command line replaces the default one instead of merging with
# it, in the main process and in the jobs Snakemake spawns (`run` rules): those get
# --configfiles but not --replace-workflow-config, and a merge of the study config with
# the default one is no valid config (issue found running the generation part).
if not workflow.overwrite_configfiles:

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
