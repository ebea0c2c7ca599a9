"""The two ways to add an early-stopping method, and the registries the cell reads.

(a) A post-hoc rule (``PosthocRule``) reads one image's plain-DIP trajectory, restricted to
    the columns it declares, and picks a stop iteration for that image. Every registered
    rule is evaluated on the same plain fit.
(b) A training variant (``TrainingVariant``) changes how DIP is fitted, decides its stops
    while it trains and returns its own rows, curves and outputs (``VariantRun``). The cell
    runs the one it is asked for by name.

Adding either is one class in one module of this package, decorated with
``@register_rule("name")`` or ``@register_variant("name")``; the package imports each of
its modules, so nothing else needs an edit. The name labels the rule's table rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from ..operators import Operator


class PosthocRule:
    """A stopping rule applied after the fact to one image's plain-DIP trajectory.

    ``columns``: the trajectory columns the rule may read; it is handed nothing else, sorted
    by ``iteration``. ``defaults``: the ``baseline_params`` keys it reads, with defaults;
    ``params`` holds every baseline parameter after merging. Subclasses implement ``stop``
    and, when the rule must watch past its stop before committing, ``decision``.
    """

    name: ClassVar[str] = ""
    columns: ClassVar[tuple[str, ...]] = ("iteration",)
    defaults: ClassVar[Mapping[str, object]] = {}

    def __init__(self, sigma_task: float, params: Mapping[str, object]) -> None:
        self.sigma_task = sigma_task
        self.params = params

    def stop(self, traj: pd.DataFrame) -> int:
        """The iteration to stop at."""
        raise NotImplementedError

    def decision(self, traj: pd.DataFrame, stop: int) -> int:
        """The iteration at which the rule knows ``stop`` is its stop."""
        return stop

    def labelled_stops(self, traj: pd.DataFrame) -> dict[str, tuple[int, int]]:
        """Table rows for one image: label -> (stop, decision iteration)."""
        stop = self.stop(traj)
        return {self.name: (stop, self.decision(traj, stop))}


@dataclass
class Problem:
    """What every fit in one cell shares. ``clean`` is for after-the-fact metrics only."""

    clean: np.ndarray  # (N, C, H, W) float32; NaN when withheld
    observed: torch.Tensor  # (N, C, h, w) on ``device``
    operator: Operator  # on ``device``
    sigma_task: float  # the observation's noise std (range 1)
    kind: str
    arch_params: dict | None
    seeds: Sequence[int]
    fitter_args: dict  # lr, reg_noise_std, exp_weight, backtrack
    device: torch.device
    progress: bool = True
    log_every: int = 1


@dataclass
class VariantRun:
    """What a training variant hands back to the cell."""

    table: pd.DataFrame  # TABLE_COLUMNS, one row per image x stop it reports
    curves: pd.DataFrame  # its own trajectory
    stops: np.ndarray  # (N,) its primary stop per image (global iteration, 1-based)
    outputs_at_stop: np.ndarray  # (N, C, H, W)
    total_iters: int  # the plain fit's default length
    info: dict  # JSON-ready description of the run


class TrainingVariant:
    """A way of fitting DIP that decides its stops while it trains.

    ``settings``: the cell's schedule arguments (``schedule``, ``K``, ``sigma_max``,
    ``noise``, ``iters_per_stage``, ``final_iters``), read as the variant needs them.
    ``params``: ``rule_params`` merged over ``defaults`` (unknown keys are refused first).
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[Mapping[str, object]] = {}

    def __init__(self, settings: Mapping[str, object], params: Mapping[str, object]) -> None:
        self.settings = settings
        self.params = params

    def fit(self, problem: Problem) -> VariantRun:
        """Fit the images of ``problem``; evaluate the stops against ``problem.clean``."""
        raise NotImplementedError


POSTHOC_RULES: dict[str, type[PosthocRule]] = {}
TRAINING_VARIANTS: dict[str, type[TrainingVariant]] = {}


def register_rule(name: str) -> Callable[[type[PosthocRule]], type[PosthocRule]]:
    """Class decorator: evaluate the rule in every cell, its rows labelled ``name``.
    Rules are evaluated, and their rows ordered, in registration order."""
    return _registrar(name, POSTHOC_RULES, PosthocRule)


def register_variant(name: str) -> Callable[[type[TrainingVariant]], type[TrainingVariant]]:
    """Class decorator: make the training variant available to the cell as ``name``."""
    return _registrar(name, TRAINING_VARIANTS, TrainingVariant)


def _registrar(name: str, registry: dict, base: type) -> Callable[[type], type]:
    def register(cls: type) -> type:
        if not issubclass(cls, base):
            raise TypeError(f"{cls.__name__} must subclass {base.__name__}")
        if name in registry:
            raise ValueError(f"{name!r} is already registered by {registry[name].__name__}")
        cls.name = name
        registry[name] = cls
        return cls

    return register


class _RuleColumns(Mapping):
    """Rule name -> the trajectory columns it may read, always in step with the registry."""

    def __getitem__(self, name: str) -> tuple[str, ...]:
        return POSTHOC_RULES[name].columns

    def __iter__(self) -> Iterator[str]:
        return iter(POSTHOC_RULES)

    def __len__(self) -> int:
        return len(POSTHOC_RULES)


RULE_COLUMNS: Mapping[str, tuple[str, ...]] = _RuleColumns()


def merge_params(
    name: str, given: Mapping | None, defaults: Mapping[str, object]
) -> dict[str, object]:
    """``given`` over ``defaults``; a key without a default is refused by name."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {name} key(s) {unknown}; allowed: {sorted(defaults)}")
    return {**defaults, **given}


def rule_defaults(base: Mapping[str, object]) -> dict[str, object]:
    """``base`` and every registered rule's ``defaults``: the keys ``baseline_params`` takes.
    Two sources may share a key only with the same default."""
    out = dict(base)
    for name, cls in POSTHOC_RULES.items():
        for key, value in cls.defaults.items():
            if key in out and out[key] != value:
                raise ValueError(
                    f"rule {name!r} defaults {key!r} to {value!r}, elsewhere it is {out[key]!r}"
                )
            out[key] = value
    return out
