"""The experimental design: which cells a configuration asks for, and where each one lives.

This module is the single owner of cell identity. A cell is one cached result (a DIP fit, a
trained DDPM, a sampling run, ...) named by the values of its *axes*. Each axis has one
identity column (also the Snakemake wildcard name) and one path key, so a cell's folder is
``<root>/<key>~<value>/...`` (Snakemake's Paramspace style) and every path maps back to the
identity it was made from (:func:`parse`). Every rule file, adapter and stage takes its paths
from here; no other file spells a ``key~`` path segment.

Values are canonical strings: integers without leading zeros, floats in ``%g`` form and
``none`` for an axis that does not apply to a cell, so ``seed~00`` or ``lam~.`` cannot name a
cell. Rows written by a cell carry every column of :data:`IDENTITY_COLUMNS` (``none`` where
an axis does not apply), so aggregation groups by declared columns and never reads a path.
"""

from .design import (
    ABLATION_FACTORS,
    DEFAULT_STAGE_PATIENCE,
    ablation_factor,
    ablation_settings,
    block_patiences,
    cells,
    clean_cells,
    convergence_t0,
    dip_cells,
    earlystop_ablation_cells,
    earlystop_cells,
    earlystop_plain_cells,
    earlystop_plain_iters,
    generate_cells,
    generation,
    generation_settings,
    guided_cells,
    guided_chain,
    guided_model,
    left_out_cells,
    observation_cells,
    observation_seeds,
    prior_archs,
    prior_iters,
    prior_mode,
    prior_modes,
    prior_training_config,
    prior_training_sample_cells,
    prior_training_train_cells,
    qualitative_cells,
    sample_blocks,
    sample_cells,
    sample_tasks,
    setting_cells,
    sigma_matched_step,
    task_kind,
    train_cells,
    train_modes,
    training_prior_cell,
    training_runs,
)
from .paths import *  # noqa: F403  (axes, kinds, paths, identity: the contract itself)
