"""The experimental design: which cells a configuration asks for.

Each function expands one part of the config into cells (dicts of canonical axis values,
see :mod:`.paths`); :func:`cells` returns all of them by kind. Snakemake's targets, the tests
and ``scripts/cells.py`` all read the design from here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from .paths import (
    CLEAN,
    DIP,
    EARLYSTOP,
    GENERATE,
    GUIDED,
    OBSERVATION,
    SAMPLE,
    TRAIN,
    Kind,
    _pick,
    canonical,
    observation_of,
    plain_fit_of,
    prior_of,
    setting_of,
)


def _grid_blocks(config: Mapping) -> Iterable[tuple[str, str, str]]:
    for block in config["dip"]["grid"]:
        yield from itertools.product(block["datasets"], block["tasks"], block["archs"])


def observation_seeds(config: Mapping) -> list[int]:
    return list(config.get("observation_seeds", [0]))


def task_kind(config: Mapping, task: str) -> str:
    return config["tasks"][task]["kind"]


def generation(config: Mapping) -> Mapping | None:
    return config["ddpm"].get("generation") or None


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


def prior_iters(config: Mapping) -> list[int]:
    """The DIP durations whose outputs seed the DDPM (one value or a list in the config)."""
    return sorted(_as_list(config["ddpm"]["sample"]["prior_iters"]))


def prior_archs(config: Mapping) -> list[str]:
    """The DIP architectures whose outputs seed the DDPM (one name or a list): with
    prior_iters, the prior's two axes."""
    return _as_list(config["ddpm"]["sample"].get("prior_arch", "skip"))


def sample_tasks(config: Mapping) -> list[str]:
    """The degradations Example 1 restores (one name or a list); the first is the one the
    convergence sub-grid and the qualitative panel use."""
    return _as_list(config["ddpm"]["sample"]["task"])


def dip_cells(config: Mapping) -> list[dict[str, str]]:
    """Every DIP fit: the restoration grid, the priors of the generation variant and the
    training priors of prior-trained modes."""
    cells = []
    for (dataset, task, arch), obs, seed in itertools.product(
        _grid_blocks(config), observation_seeds(config), config["dip"]["seeds"]
    ):
        cells.append(
            _cell(
                DIP,
                purpose="restoration",
                dataset=dataset,
                task=task,
                obs_seed=obs,
                arch=arch,
                dip_seed=seed,
            )
        )
    if not generation_own_part(config):
        cells += generation_dip_cells(config)
    cells += [training_prior_cell(config, m) for m in prior_modes(config)]
    return _unique(cells)


def prior_modes(config: Mapping) -> list[Mapping]:
    """The prior-trained modes (entries of ``ddpm.modes`` or ``prior_training.modes`` with
    a ``prior``), each name once (the config checks refuse one name with two settings)."""
    modes = list(config["ddpm"]["modes"]) + list(
        (config.get("prior_training") or {}).get("modes", [])
    )
    named: dict[str, Mapping] = {}
    for mode in modes:
        if mode.get("prior"):
            named.setdefault(mode["mode"], mode)
    return list(named.values())


def prior_mode(config: Mapping, mode: str) -> Mapping | None:
    """The ``ddpm.modes`` entry of a prior-trained mode, None for full and truncated."""
    return next((m for m in prior_modes(config) if m["mode"] == mode), None)


def training_prior_cell(config: Mapping, mode: Mapping) -> dict[str, str]:
    """The DIP cell whose outputs a prior-trained mode learns from: its training images,
    degraded by its task with the first observation seed, fitted with the first DIP seed."""
    prior = mode["prior"]
    return _cell(
        DIP,
        purpose="training",
        dataset=prior["dataset"],
        task=prior["task"],
        obs_seed=observation_seeds(config)[0],
        arch=prior["arch"],
        dip_seed=config["dip"]["seeds"][0],
    )


def observation_cells(config: Mapping) -> list[dict[str, str]]:
    """Every (dataset, task, observation seed) that a DIP, sampling or early-stopping cell
    reads."""
    cells = [
        _pick(c, OBSERVATION)
        for c in dip_cells(config)
        + earlystop_cells(config)
        + earlystop_ablation_cells(config)
        + guided_cells(config)
    ]
    cells += [
        _pick(c, OBSERVATION) for c in sample_cells(config) + prior_training_sample_cells(config)
    ]
    return _unique(cells)


def clean_cells(config: Mapping) -> list[dict[str, str]]:
    return [CLEAN.identity({"dataset": name}) for name in config["data"]["datasets"]]


def train_modes(config: Mapping) -> list[tuple[str, int]]:
    """(mode, t_max) of every training mode; a full model's t_max is T."""
    T = config["ddpm"]["T"]
    return [
        (m["mode"], T if m["mode"] == "full" else m.get("t_max", T))
        for m in config["ddpm"]["modes"]
    ]


def train_cells(config: Mapping) -> list[dict[str, str]]:
    ddpm = config["ddpm"]
    return [
        _cell(
            TRAIN,
            train_dataset=ddpm["dataset"],
            preset=ddpm["model"],
            schedule=ddpm["schedule"],
            mode=mode,
            t_max=tmax,
            train_steps=ddpm["steps"],
            train_seed=seed,
        )
        for (mode, tmax), seed in itertools.product(train_modes(config), ddpm["seeds"])
    ]


def _sampler(config: Mapping) -> dict[str, Any]:
    sample = config["ddpm"]["sample"]
    return {"sampler": sample["sampler"], "eta": sample["eta"]}


def _restoration_starts(config: Mapping, task: str, t_max: int) -> list[dict[str, Any]]:
    """Start points a model can serve: noise at T (full models only), the observation at
    the sigma-matched step (denoising), and the DIP prior at each t0 <= t_max."""
    return [start for start, reason in _candidate_starts(config, task, t_max) if not reason]


def _candidate_starts(
    config: Mapping, task: str, t_max: int
) -> list[tuple[dict[str, Any], str | None]]:
    """Every start of the design with the reason a model trained up to t_max cannot serve
    it (None: it can)."""
    sample, T = config["ddpm"]["sample"], config["ddpm"]["T"]

    def beyond(step: int) -> str | None:
        return f"starts at step {step} > the model's t_max {t_max}" if step > t_max else None

    unguided = {"lam": 0, "window": None}
    if task_kind(config, task) == "denoise":
        # DDPM alone denoises from the observation; a chain from pure noise would be a
        # generation, which is never scored against a clean image. A full model serves
        # every step, so torch is only imported for a truncated one.
        step = sigma_matched_step(config, task) if t_max < T else 0
        starts = [({"start": "obs", "t0": "sigma", **unguided}, beyond(step))]
    else:
        # Inpainting and SR: from noise, held to the observation at every step.
        starts = [({"start": "noise", "t0": T, **unguided}, beyond(T))]
    for t0 in sample["t0"]:
        starts.append(({"start": "dip", "t0": t0, **unguided}, beyond(t0)))
        if t0 == 0:  # the prior itself: no chain to guide
            continue
        starts += [
            ({"start": "dip", "t0": t0, "lam": lam, "window": window}, beyond(t0))
            for lam in sorted(set(sample["lam"]) - {0})
            for window in sample.get("window", [1.0])
        ]
    return starts


def sigma_matched_step(config: Mapping, task: str) -> int:
    """The diffusion step whose noise level matches a denoising task's sigma."""
    from dipddpm.ddpm.diffusion import Diffusion
    from dipddpm.ddpm.sample import t_for_sigma

    ddpm = config["ddpm"]
    diffusion = Diffusion(ddpm.get("schedule", "linear"), int(ddpm["T"]))
    return t_for_sigma(diffusion, float(config["tasks"][task]["sigma"]) / 255.0)


def left_out_cells(config: Mapping) -> list[dict[str, str]]:
    """Restoration starts the design asks for that a model cannot serve (a truncated model
    asked to start above its t_max), by name with the reason: they are never cells."""
    out = []
    for block in sample_blocks(config):
        out += _block_left_out(block)
    return _unique_rows(out)


def _block_left_out(config: Mapping) -> list[dict[str, str]]:
    out = []
    for task, model in itertools.product(sample_tasks(config), train_cells(config)):
        for start, reason in _candidate_starts(config, task, int(model["t_max"])):
            if reason:
                out.append(
                    {
                        "task": task,
                        "mode": model["mode"],
                        "t_max": model["t_max"],
                        "start": start["start"],
                        "t0": canonical(start["t0"]),
                        "lam": canonical(start["lam"]),
                        "window": canonical(start["window"]),
                        "reason": reason,
                    }
                )
    return out


def _unique_rows(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    seen, out = set(), []
    for row in rows:
        key = tuple(sorted(row.items()))
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def _prior_axes(
    config: Mapping, start: str, iters: list[int], archs: list[str] | None = None
) -> list[dict[str, Any]]:
    if start != "dip":
        return [{"arch": None, "iters": None, "dip_seed": None}]
    return [
        {"arch": arch, "iters": it, "dip_seed": seed}
        for arch, it, seed in itertools.product(
            archs or prior_archs(config), iters, config["dip"]["seeds"]
        )
    ]


def sample_cells(config: Mapping) -> list[dict[str, str]]:
    """The Example 1 grid, the training-convergence sub-grid and the generation variant."""
    return _unique(
        _restoration_cells(config) + _convergence_cells(config) + _generation_cells(config)
    )


def _model_axes(config: Mapping, ckpt: int | None = None) -> list[dict[str, Any]]:
    final = config["ddpm"]["steps"] if ckpt is None else ckpt
    return [{**c, "ckpt": final} for c in train_cells(config)]


def _checkpoint_axes(config: Mapping) -> list[dict[str, Any]]:
    """The models a block samples: each mode at the block's ``ckpt`` steps (default: the
    final one)."""
    ckpts = config["ddpm"]["sample"].get("ckpt") or [config["ddpm"]["steps"]]
    return [model for ckpt in ckpts for model in _model_axes(config, ckpt)]


def _observations(config: Mapping, dataset: str, task: str) -> list[dict[str, Any]]:
    return [
        {"dataset": dataset, "task": task, "obs_seed": obs} for obs in observation_seeds(config)
    ]


def sample_blocks(config: Mapping) -> list[Mapping]:
    """The config as each block of ``ddpm.sample.blocks`` sees it: the block's values over
    the sample-level ones, and only the training modes it names. Without blocks, the
    config itself: one block, the full product of the sample-level axes.

    Blocks keep a study affordable: the headline rows on every task, a dense t0 grid, a
    step ladder or one-at-a-time ablations on one task, each its own small product; the
    sample grid is their union (a cell two blocks share is one cell)."""
    sample = config["ddpm"]["sample"]
    blocks = sample.get("blocks") or [{}]
    out = []
    for block in blocks:
        spec = {k: v for k, v in sample.items() if k != "blocks"}
        spec.update({k: v for k, v in block.items() if k not in ("name", "modes")})
        modes = config["ddpm"]["modes"]
        if "modes" in block:
            modes = [m for m in modes if m["mode"] in block["modes"]]
        out.append({**config, "ddpm": {**config["ddpm"], "sample": spec, "modes": modes}})
    return out


def _restoration_cells(config: Mapping) -> list[dict[str, str]]:
    return _unique([c for block in sample_blocks(config) for c in _block_cells(block)])


def _block_cells(config: Mapping) -> list[dict[str, str]]:
    sample = config["ddpm"]["sample"]
    cells = []
    observations = [
        obs
        for task in sample_tasks(config)
        for obs in _observations(config, sample["dataset"], task)
    ]
    for obs, model in itertools.product(observations, _checkpoint_axes(config)):
        for start in _restoration_starts(config, obs["task"], int(model["t_max"])):
            for prior, steps, k, seed in itertools.product(
                _prior_axes(config, start["start"], prior_iters(config)),
                _step_counts(config, start),
                _chain_counts(config, start),
                sample["seeds"],
            ):
                cells.append(
                    _cell(
                        SAMPLE,
                        purpose="restoration",
                        **obs,
                        **model,
                        **prior,
                        **start,
                        **_sampler(config),
                        steps=steps,
                        k=k,
                        sample_seed=seed,
                    )
                )
    return cells


def _chain_counts(config: Mapping, start: Mapping[str, Any]) -> list[int]:
    """The K of the K-sample means: only where chains differ. From the observation with
    deterministic DDIM (eta 0), or from the prior itself (t0 = 0: no chain), every chain is
    the same, so only K = 1 is a cell."""
    sample = config["ddpm"]["sample"]
    from_obs = start["start"] == "obs" and sample["sampler"] == "ddim" and sample["eta"] == 0
    return [1] if from_obs or _no_chain(start) else sample.get("k", [1])


def _step_counts(config: Mapping, start: Mapping[str, Any]) -> list[int]:
    """Reverse steps of a start; the prior itself (t0 = 0) runs none, so one cell."""
    steps = config["ddpm"]["sample"]["steps"]
    return [min(steps)] if _no_chain(start) else steps


def _no_chain(start: Mapping[str, Any]) -> bool:
    return start["start"] == "dip" and int(start["t0"]) == 0


def convergence_t0(config: Mapping) -> int:
    """The start step of the training-convergence sub-grid: the middle configured t0."""
    t0 = sorted(config["ddpm"]["sample"]["t0"])
    return t0[len(t0) // 2]


def _convergence_cells(config: Mapping) -> list[dict[str, str]]:
    """Every checkpoint from the DIP prior at the middle t0 with the most steps: how quality
    grows with training, first observation, prior and sample seed."""
    sample = config["ddpm"]["sample"]
    if not sample.get("convergence_cells", True):
        return []
    t0 = convergence_t0(config)
    prior = {
        "arch": prior_archs(config)[0],
        "iters": max(prior_iters(config)),
        "dip_seed": config["dip"]["seeds"][0],
    }
    cells = []
    for ckpt in config["ddpm"]["checkpoints"]:
        for model in _model_axes(config, ckpt):
            if t0 <= int(model["t_max"]):
                cells.append(
                    _cell(
                        SAMPLE,
                        purpose="restoration",
                        dataset=sample["dataset"],
                        task=sample_tasks(config)[0],
                        obs_seed=observation_seeds(config)[0],
                        **model,
                        **prior,
                        start="dip",
                        t0=t0,
                        lam=0,
                        window=None,
                        k=1,
                        **_sampler(config),
                        steps=max(sample["steps"]),
                        sample_seed=sample["seeds"][0],
                    )
                )
    return cells


def _generation_cells(config: Mapping) -> list[dict[str, str]]:
    """The DIP-started generation cells the Example 1 grid holds: all of them, unless the
    generation arm is a part of its own (``ddpm.generation.own_part``)."""
    return [] if generation_own_part(config) else generation_sample_cells(config)


def generation_own_part(config: Mapping) -> bool:
    """Whether the generation arm's cells belong to the ``generation`` target only (as the
    prior-training comparison's do), so no other part fits or samples them."""
    gen = generation(config)
    return bool(gen and gen.get("own_part", False))


def generation_steps(config: Mapping) -> list[int]:
    """The reverse-step counts of the DIP-started generation cells (one value or a list)."""
    return _as_list(generation(config)["steps"])


def generation_seeds(config: Mapping) -> list[int]:
    """The sample seeds of the DIP-started generation cells (default ``ddpm.sample.seeds``)."""
    gen = generation(config)
    return list(gen["seeds"]) if gen.get("seeds") else list(config["ddpm"]["sample"]["seeds"])


def generation_obs_seeds(config: Mapping) -> list[int]:
    """The observation seeds of the generation priors' fits (default observation_seeds)."""
    gen = generation(config)
    return list(gen["obs_seeds"]) if gen.get("obs_seeds") else observation_seeds(config)


def generation_prior_iters(config: Mapping) -> list[int]:
    """The DIP durations whose outputs seed the generation cells (one value or a list;
    default the longest of ``ddpm.sample.prior_iters``)."""
    gen = generation(config)
    if gen.get("prior_iters") is not None:
        return _as_list(gen["prior_iters"])
    return [max(prior_iters(config))]


def generation_noise(config: Mapping) -> dict[str, Any] | None:
    """The generation arm's samples from noise (``ddpm.generation.noise``) with its
    defaults filled in: the generation steps and seeds; None without the key."""
    gen = generation(config)
    noise = (gen or {}).get("noise")
    if not noise:
        return None
    return {
        "generate": int(noise["generate"]),
        "steps": _as_list(noise.get("steps") or generation_steps(config)),
        "seeds": list(noise.get("seeds") or generation_seeds(config)),
    }


def generation_dip_cells(config: Mapping) -> list[dict[str, str]]:
    """The DIP fits that seed the generation cells: the generation dataset through its
    task, each of its observation seeds x DIP seed, with the first prior architecture."""
    gen = generation(config)
    if not gen:
        return []
    arch = prior_archs(config)[0]
    return [
        _cell(
            DIP,
            purpose="generation",
            dataset=gen["dataset"],
            task=gen["task"],
            obs_seed=obs,
            arch=arch,
            dip_seed=seed,
        )
        for obs, seed in itertools.product(generation_obs_seeds(config), config["dip"]["seeds"])
    ]


def generation_sample_cells(config: Mapping) -> list[dict[str, str]]:
    """Example 1, generation variant: DIP fits of training images diffused to a large t0,
    at every t0 a model serves x prior duration x step count x sample seed."""
    gen = generation(config)
    if not gen:
        return []
    observations = [
        {"dataset": gen["dataset"], "task": gen["task"], "obs_seed": obs}
        for obs in generation_obs_seeds(config)
    ]
    cells = []
    for obs, model in itertools.product(observations, _model_axes(config)):
        for t0, prior, steps, seed in itertools.product(
            gen["t0"],
            _prior_axes(config, "dip", generation_prior_iters(config), prior_archs(config)[:1]),
            generation_steps(config),
            generation_seeds(config),
        ):
            if t0 <= int(model["t_max"]):
                cells.append(
                    _cell(
                        SAMPLE,
                        purpose="generation",
                        **obs,
                        **model,
                        **prior,
                        start="dip",
                        t0=t0,
                        lam=0,
                        window=None,
                        k=1,
                        **_sampler(config),
                        steps=steps,
                        sample_seed=seed,
                    )
                )
    return _unique(cells)


def generate_cells(config: Mapping) -> list[dict[str, str]]:
    """Unconditional samples from noise at T, for models trained on the whole chain."""
    sample = config["ddpm"]["sample"]
    if not sample["generate"]:
        return []
    return _noise_cells(config, sample["steps"], sample["seeds"])


def _noise_cells(config: Mapping, steps: list[int], seeds: list[int]) -> list[dict[str, str]]:
    T = config["ddpm"]["T"]
    return [
        _cell(GENERATE, **model, **_sampler(config), steps=n, sample_seed=seed)
        for model, n, seed in itertools.product(_model_axes(config), steps, seeds)
        if int(model["t_max"]) == T
    ]


def generation_noise_cells(config: Mapping) -> list[dict[str, str]]:
    """The generation arm's samples from noise: ``ddpm.generation.noise``'s steps and
    seeds, or, without it, the unconditional samples of ``ddpm.sample`` (generate_cells)."""
    noise = generation_noise(config)
    if noise is None:
        return generate_cells(config)
    return _noise_cells(config, noise["steps"], noise["seeds"])


def generate_count(config: Mapping, cell: Mapping[str, Any]) -> int:
    """Samples per seed of a cell from noise: ``ddpm.generation.noise.generate`` for the
    generation arm's cells, else ``ddpm.sample.generate`` (the config checks refuse a cell
    that both ask for with two counts)."""
    noise = generation_noise(config)
    if noise is not None:
        wanted = GENERATE.identity(dict(cell))
        if wanted in generation_noise_cells(config):
            return noise["generate"]
    return int(config["ddpm"]["sample"]["generate"])


def _generation_cells_of(config: Mapping, kind: Kind) -> list[dict[str, str]]:
    """The generation arm's cells of a kind: DIP-started (sample) or from noise (generate)."""
    if kind is SAMPLE:
        return generation_sample_cells(config)
    if kind is GENERATE:
        return generation_noise_cells(config)
    raise ValueError(f"{kind.name} cells are not generation cells")


def generation_settings(config: Mapping, kind: Kind) -> list[dict[str, str]]:
    """The compared generation settings of a kind: its generation cells less their sample
    seed, each scored once on every seed's samples (see :func:`.paths.setting_of`)."""
    return _unique([setting_of(kind, cell) for cell in _generation_cells_of(config, kind)])


def setting_cells(config: Mapping, kind: Kind, setting: Mapping[str, str]) -> list[dict[str, str]]:
    """The cells of one generation setting, one per sample seed in the config's order."""
    wanted = setting_of(kind, setting) if "sample_seed" in setting else dict(setting)
    found = [c for c in _generation_cells_of(config, kind) if setting_of(kind, c) == wanted]
    if not found:
        raise ValueError(f"no {kind.name} generation cell of this config has setting {wanted}")
    return found


# The progressive rule's stage patience where the config names none (a grid block without
# `patience`, ablations without `centre.patience`): the patience every cell ran with before
# it was an axis, and the training variant's own default (progressive_variant.RULE_DEFAULTS
# reads it from here, so the two cannot drift apart).
DEFAULT_STAGE_PATIENCE = 20


def earlystop_cells(config: Mapping) -> list[dict[str, str]]:
    """Example 2's cells: every grid block on each early-stopping dataset (``dataset``, or
    each of ``datasets``: natural-image crops from several sources)."""
    es = config.get("earlystop")
    if not es or not es.get("grid"):
        return []
    cells = []
    for block in es["grid"]:
        for dataset, task, arch, schedule, stages, smax, patience, obs, seed in itertools.product(
            _earlystop_datasets(es),
            block["tasks"],
            block["archs"],
            block["schedules"],
            block["stages"],
            block["sigma_max"],
            block_patiences(block),
            observation_seeds(config),
            config["dip"]["seeds"],
        ):
            cells.append(
                _cell(
                    EARLYSTOP,
                    dataset=dataset,
                    task=task,
                    obs_seed=obs,
                    arch=arch,
                    es_schedule=schedule,
                    stages=stages,
                    sigma_max=smax,
                    stage_patience=patience,
                    dip_seed=seed,
                )
            )
    return _unique(cells)


def block_patiences(block: Mapping) -> list[int]:
    """A grid block's stage patiences (``patience``; the schema's default where unset)."""
    return list(block.get("patience", [DEFAULT_STAGE_PATIENCE]))


# The factors earlystop.ablations varies one at a time: (its key in `vary`, the cell axis,
# the key in `centre`).
ABLATION_FACTORS = (
    ("schedules", "es_schedule", "schedule"),
    ("stages", "stages", "stages"),
    ("sigma_max", "sigma_max", "sigma_max"),
    ("archs", "arch", "arch"),
    ("patiences", "stage_patience", "patience"),
)
# A centre key the config may leave out, and the value it then has.
CENTRE_DEFAULTS = {"patience": DEFAULT_STAGE_PATIENCE}


def earlystop_ablation_cells(config: Mapping) -> list[dict[str, str]]:
    """Example 2's one-factor-at-a-time ablations (``earlystop.ablations``): the centre
    setting and each factor's other values with the rest held at the centre, on every
    early-stopping dataset, the ablations' tasks and observation seeds. The centre cell is
    the main grid's cell of the same identity when the grid has it (computed once)."""
    es = config.get("earlystop") or {}
    ablations = es.get("ablations")
    if not ablations:
        return []
    obs_seeds = ablations.get("obs_seeds") or observation_seeds(config)
    cells = []
    for setting in ablation_settings(ablations):
        axes = {k: v for k, v in setting.items() if k != "factor"}
        for dataset, task, obs, seed in itertools.product(
            _earlystop_datasets(es), ablations["tasks"], obs_seeds, config["dip"]["seeds"]
        ):
            cells.append(
                _cell(EARLYSTOP, dataset=dataset, task=task, obs_seed=obs, dip_seed=seed, **axes)
            )
    return _unique(cells)


def ablation_settings(ablations: Mapping) -> list[dict[str, Any]]:
    """The centre setting, then each factor's other values (in the config's order), as
    EARLYSTOP axes with a ``factor`` key naming what was varied (``centre`` for it)."""
    centre = {axis: ablation_centre(ablations, key) for _, axis, key in ABLATION_FACTORS}
    settings = [{**centre, "factor": "centre"}]
    for vary_key, axis, _ in ABLATION_FACTORS:
        for value in ablations.get("vary", {}).get(vary_key, []):
            if canonical(value) != canonical(centre[axis]):
                settings.append({**centre, axis: value, "factor": vary_key})
    return settings


def ablation_centre(ablations: Mapping, key: str) -> Any:
    """The centre setting's value of ``key`` (its default where the config leaves it out)."""
    centre = ablations["centre"]
    if key not in centre and key in CENTRE_DEFAULTS:
        return CENTRE_DEFAULTS[key]
    return centre[key]


def ablation_factor(ablations: Mapping, cell: Mapping) -> str:
    """Which factor an ablation cell varies (``centre`` for the centre setting)."""
    for setting in ablation_settings(ablations):
        if all(
            canonical(cell[axis]) == canonical(setting[axis]) for _, axis, _ in ABLATION_FACTORS
        ):
            return setting["factor"]
    raise KeyError(f"{dict(cell)} is no cell of earlystop.ablations")


def earlystop_plain_cells(config: Mapping) -> list[dict[str, str]]:
    """The plain fits the early-stopping cells (the grid's and the ablations') are scored
    on: one per observation, architecture and DIP seed, shared by every cell that differs
    only in the training variant's settings (schedule, stages, sigma_max, stage patience)."""
    cells = earlystop_cells(config) + earlystop_ablation_cells(config)
    return _unique([plain_fit_of(cell) for cell in cells])


def earlystop_plain_iters(config: Mapping) -> int:
    """The plain fit's default length (its least length with ``run_past_peak``): the
    longest nominal progressive fit over every early-stopping cell of the config,
    (stages - 1) x ``iters_per_stage`` + ``final_iters``, or the largest budget if longer.

    Read from the config alone, never from a variant's run, so one plain fit serves cells
    of different stage counts, and every plain fit of a config has one length: the
    post-hoc rules, the plain-peak yardstick and the leave-one-image-out summary see the
    same horizon on every case. The nominal length is the progressive fit's with
    fixed-length stages (adaptive stages mostly end earlier; a long last noisy stage may
    run past it, which only the fit itself could tell), and the largest budget needs its
    iteration. Changing the longest
    stage count or the stage lengths changes every plain fit's params (they rerun)."""
    es = config["earlystop"]
    cells = earlystop_cells(config) + earlystop_ablation_cells(config)
    if not cells:
        raise ValueError("the config has no early-stopping cells, so no plain fit length")
    stages = max(int(cell["stages"]) for cell in cells)
    longest = (stages - 1) * int(es["iters_per_stage"]) + int(es["final_iters"])
    return max([longest, *(int(b) for b in es["budgets"])])


def _earlystop_datasets(es: Mapping) -> list[str]:
    # The config checks refuse both keys at once; ``dataset`` is the older spelling.
    return [es["dataset"]] if "dataset" in es else list(es["datasets"])


def guided_cells(config: Mapping) -> list[dict[str, str]]:
    """Issue 18's DDPM-guided DIP (``earlystop.guided``): each dataset x task x architecture
    x observation seed x DIP seed at every listed lam, in each form; lam 0 is one cell of
    form ``none`` whatever the forms (plain DIP with the same iterations, the reference
    the guided fits are paired with, which also scores its model alone as a denoiser).
    Every cell names the one configured model (:func:`guided_model`)."""
    guided = (config.get("earlystop") or {}).get("guided")
    if not guided:
        return []
    model = guided_model(config)
    weights = [
        {"guide_form": None if lam == 0 else form, "guide_lam": lam}
        for form, lam in itertools.product(guided["forms"], guided["lams"])
    ]
    cells = []
    for dataset, task, arch, weight, obs, seed in itertools.product(
        guided["datasets"],
        guided["tasks"],
        guided["archs"],
        weights,
        observation_seeds(config),
        config["dip"]["seeds"],
    ):
        cells.append(
            _cell(
                GUIDED,
                dataset=dataset,
                task=task,
                obs_seed=obs,
                arch=arch,
                **weight,
                **model,
                dip_seed=seed,
            )
        )
    return _unique(cells)


def guided_model(config: Mapping) -> dict[str, str]:
    """The DDPM of the guided cells: the training cell of ``earlystop.guided.mode`` (of its
    ``t_max`` where ``ddpm.modes`` lists the mode twice) with the first training seed, at
    checkpoint ``ckpt`` (default: the final step). The config checks refuse a mode that
    names no model, or two."""
    guided = config["earlystop"]["guided"]
    seed = canonical(config["ddpm"]["seeds"][0])
    found = [
        cell
        for cell in train_cells(config)
        if cell["mode"] == guided["mode"]
        and cell["train_seed"] == seed
        and ("t_max" not in guided or cell["t_max"] == canonical(guided["t_max"]))
    ]
    if len(found) != 1:
        raise ValueError(
            f"earlystop.guided names {len(found)} models ({guided['mode']!r}); it needs one"
        )
    return {**found[0], "ckpt": canonical(guided.get("ckpt", config["ddpm"]["steps"]))}


def guided_chain(config: Mapping) -> dict[str, str]:
    """The reverse chain of the guided cells' DDPM-alone row: ``ddpm.sample``'s sampler and
    eta, its most steps (capped, as in Example 1, at the sigma-matched start step) and its
    first sample seed, from the observation at the sigma-matched step."""
    sample = config["ddpm"]["sample"]
    return {
        "start": "obs",
        "t0": "sigma",
        **{k: canonical(v) for k, v in _sampler(config).items()},
        "steps": canonical(max(sample["steps"])),
        "sample_seed": canonical(sample["seeds"][0]),
    }


def cells(config: Mapping) -> dict[str, list[dict[str, str]]]:
    """Every cell of every kind the configuration asks for."""
    return {
        "clean": clean_cells(config),
        "observation": observation_cells(config),
        "dip": _unique(dip_cells(config) + generation_dip_cells(config)),
        "train": _unique(train_cells(config) + prior_training_train_cells(config)),
        "sample": _unique(
            sample_cells(config)
            + prior_training_sample_cells(config)
            + generation_sample_cells(config)
        ),
        "generate": _unique(generate_cells(config) + generation_noise_cells(config)),
        "earlystop": _unique(earlystop_cells(config) + earlystop_ablation_cells(config)),
        "earlystop_plain": earlystop_plain_cells(config),
        "guided": guided_cells(config),
    }


def prior_training_config(config: Mapping) -> Mapping | None:
    """The config as the prior-training comparison sees it: its own training length,
    checkpoints, modes and sampling grid over ``ddpm``'s (None without one). Its models
    are cells of their own (``tsteps`` is part of a training cell's identity), so the
    comparison never touches the main models."""
    pt = config.get("prior_training")
    if not pt:
        return None
    sample = {**config["ddpm"]["sample"], "convergence_cells": False, **pt["sample"]}
    ddpm = {
        **config["ddpm"],
        "steps": pt["steps"],
        "checkpoints": pt["checkpoints"],
        "modes": pt["modes"],
        "sample": sample,
    }
    return {**config, "ddpm": ddpm}


def prior_training_train_cells(config: Mapping) -> list[dict[str, str]]:
    derived = prior_training_config(config)
    return train_cells(derived) if derived else []


def prior_training_sample_cells(config: Mapping) -> list[dict[str, str]]:
    """The comparison's sampling cells: every model restores from the held-out DIP priors
    (a DIP start only; DDPM alone and DIP alone are Example 1's)."""
    derived = prior_training_config(config)
    if not derived:
        return []
    return [c for c in _restoration_cells(derived) if c["start"] == "dip"]


def training_runs(config: Mapping) -> dict[int, list[int]]:
    """Training length -> the checkpoints kept, for every length the config trains (the
    main models and the prior-training comparison; the config checks refuse one length
    with two checkpoint lists)."""
    runs = {int(config["ddpm"]["steps"]): list(config["ddpm"]["checkpoints"])}
    pt = config.get("prior_training")
    if pt:
        runs.setdefault(int(pt["steps"]), list(pt["checkpoints"]))
    return runs


def _cell(kind: Kind, **values: Any) -> dict[str, str]:
    extra = set(values) - set(kind.axes)
    if extra:
        raise KeyError(f"{kind.name} cells have no axes {sorted(extra)}")
    return kind.identity(values)


def _unique(cells: list[dict[str, str]]) -> list[dict[str, str]]:
    seen, out = set(), []
    for cell in cells:
        key = tuple(cell.items())
        if key not in seen:
            seen.add(key)
            out.append(cell)
    return out


def qualitative_cells(config: Mapping) -> dict[str, Any]:
    """The cells of the fixed qualitative comparison: first seeds, most reverse steps, the
    full model for DDPM alone and the truncated one (if any) for DIP+DDPM."""
    restoration = _restoration_cells(config)
    first = {
        "obs_seed": canonical(observation_seeds(config)[0]),
        "sample_seed": canonical(config["ddpm"]["sample"]["seeds"][0]),
        "steps": canonical(max(config["ddpm"]["sample"]["steps"])),
        "lam": "0",
    }
    first["task"] = sample_tasks(config)[0]
    first["arch"] = prior_archs(config)[0]
    firsts = [
        c
        for c in restoration
        if all(c[k] == v for k, v in first.items() if c["start"] == "dip" or k != "arch")
    ]
    T = canonical(config["ddpm"]["T"])
    kind = task_kind(config, sample_tasks(config)[0])
    ddpm_start = "obs" if kind == "denoise" else "noise"
    ddpm = next((c for c in firsts if c["start"] == ddpm_start and c["t_max"] == T), None)
    t0 = canonical(convergence_t0(config))
    combos = [
        c
        for c in firsts
        if c["start"] == "dip"
        and c["t0"] == t0
        and c["iters"] == canonical(max(prior_iters(config)))
        and c["dip_seed"] == canonical(config["dip"]["seeds"][0])
    ]
    combo = next((c for c in combos if c["mode"] == "truncated"), combos[0])
    samples = {"DDPM": ddpm} if ddpm else {}
    return {
        "observation": observation_of(combo),
        "prior": prior_of(combo),
        "prior_iters": combo["iters"],
        "samples": samples | {f"DIP+DDPM (t0={t0})": combo},
    }
