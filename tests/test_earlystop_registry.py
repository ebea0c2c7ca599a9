"""New early-stopping methods plug in through the registry, without editing the package."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dipddpm.dip.fit import fit_dip
from dipddpm.earlystop import (
    POSTHOC_RULES,
    RULE_COLUMNS,
    TABLE_COLUMNS,
    TRAINING_VARIANTS,
    PosthocRule,
    TrainingVariant,
    VariantRun,
    baseline_defaults,
    register_rule,
    register_variant,
    run_earlystop_cell,
)
from dipddpm.earlystop.table import table_row
from dipddpm.operators import Operator

MICRO_ARCH = {
    "depth": 2,
    "channels_down": 8,
    "channels_up": 8,
    "skip_channels": 2,
    "input_channels": 8,
}
SEEDS = [11, 12]


def _micro_problem(size: int = 16):
    yy, xx = np.mgrid[0:size, 0:size] / size
    clean = np.stack(
        [
            np.stack([0.5 + 0.3 * np.sin(5 * xx + c) * np.cos(3 * yy) for c in range(3)]),
            np.stack([(xx > 0.5) * 0.5 + 0.2 + 0.1 * c for c in range(3)]),
        ]
    ).astype(np.float32)
    sigma = 25 / 255
    noise = np.random.default_rng(3).standard_normal(clean.shape)
    return clean, (clean + sigma * noise).astype(np.float32), sigma


def _cell(**kw):
    clean, observed, sigma = _micro_problem()
    args = dict(
        schedule="linear",
        K=2,
        sigma_max=0.2,
        iters_per_stage=4,
        final_iters=10,
        baseline_params={"budgets": [5], "patience": 4, "wmv_window": 3},
        rule_params={"stage_patience": 0},
        progress=False,
    )
    args.update(kw)
    return run_earlystop_cell(
        clean, observed, Operator("denoise"), sigma, "skip", MICRO_ARCH, SEEDS, **args
    )


@pytest.fixture
def min_loss_rule():
    """A throwaway post-hoc rule: stop at the minimum loss from ``min_loss_from`` on."""
    seen: list[set[str]] = []

    @register_rule("min_loss")
    class MinLoss(PosthocRule):
        columns = ("iteration", "loss")
        defaults = {"min_loss_from": 1}

        def stop(self, traj: pd.DataFrame) -> int:
            seen.append(set(traj.columns))
            late = traj[traj["iteration"] >= int(self.params["min_loss_from"])]
            return int(late["iteration"].iloc[int(np.argmin(late["loss"].to_numpy()))])

    yield seen
    POSTHOC_RULES.pop("min_loss")


def test_a_rule_registered_in_a_test_is_evaluated_next_to_the_others(min_loss_rule):
    assert RULE_COLUMNS["min_loss"] == ("iteration", "loss")
    res = _cell(baseline_params={"budgets": [5], "patience": 4, "min_loss_from": 3})
    rows = res.table[res.table["rule"] == "min_loss"]
    assert len(rows) == len(SEEDS)
    assert list(res.table.columns) == [*TABLE_COLUMNS, "gap_plain_db"]
    assert rows.notna().all().all() and (rows["run"] == "plain").all()
    assert min_loss_rule and all(cols == {"iteration", "loss"} for cols in min_loss_rule)
    for _, row in rows.iterrows():
        traj = res.trajectory[res.trajectory["image"] == row["image"]]
        late = traj[traj["iteration"] >= 3]
        assert row["stop_iter"] == late.loc[late["loss"].idxmin(), "iteration"]
        at_stop = traj.loc[traj["iteration"] == row["stop_iter"], "psnr_clean_ema"]
        assert row["psnr"] == float(at_stop.iloc[0])
        assert row["decision_iter"] == row["stop_iter"] and row["extra_compute"] == 0
    # It is evaluated beside the built-in rules, after them (registration order).
    order = list(dict.fromkeys(res.table.loc[res.table["run"] == "plain", "rule"]))
    assert order == ["fixed_5", "discrepancy", "es_wmv", "oracle", "min_loss"]


@pytest.fixture
def plain_end_variant():
    """A throwaway training variant: plain DIP for ``final_iters``, stopped at its end."""

    @register_variant("plain_end")
    class PlainEnd(TrainingVariant):
        def fit(self, problem) -> VariantRun:
            iters = int(self.settings["final_iters"])
            fit = fit_dip(
                problem.observed,
                problem.operator,
                problem.kind,
                problem.arch_params,
                problem.seeds,
                iters,
                clean=problem.clean,
                device=problem.device,
                progress=False,
                **problem.fitter_args,
            )
            psnr = fit.trajectory.groupby("image")["psnr_clean_ema"].last()
            rows = [
                table_row(
                    "plain_end", "plain_end", i, iters, iters, psnr[i], np.nan, iters, psnr[i]
                )
                for i in range(len(problem.seeds))
            ]
            return VariantRun(
                table=pd.DataFrame(rows, columns=TABLE_COLUMNS),
                curves=fit.trajectory,
                stops=np.full(len(problem.seeds), iters),
                outputs_at_stop=fit.snapshots[iters],
                total_iters=iters,
                info={"iters": iters},
            )

    yield
    TRAINING_VARIANTS.pop("plain_end")


def test_a_training_variant_registered_in_a_test_runs_in_the_cell(plain_end_variant):
    res = _cell(variant="plain_end", rule_params=None)
    assert set(res.table["run"]) == {"plain_end", "plain"}
    assert (res.table.loc[res.table["run"] == "plain_end", "stop_iter"] == 10).all()
    np.testing.assert_array_equal(res.stops, [10, 10])
    assert res.info["iters"] == 10 and res.info["plain_iters"] == 10
    with pytest.raises(ValueError, match="rule_params"):
        _cell(variant="plain_end", rule_params={"stage_patience": 0})


def test_unknown_variant_is_refused_with_the_registered_names():
    with pytest.raises(ValueError, match=r"unknown training variant 'nope'.*'progressive'"):
        _cell(variant="nope")


def test_registry_refuses_a_taken_name_and_a_class_of_the_wrong_kind():
    with pytest.raises(ValueError, match="'oracle' is already registered"):

        @register_rule("oracle")
        class Again(PosthocRule):
            pass

    with pytest.raises(TypeError, match="must subclass PosthocRule"):

        @register_rule("not_a_rule")
        class NotARule:
            pass

    assert "not_a_rule" not in POSTHOC_RULES


def test_two_rules_cannot_default_one_key_differently():
    @register_rule("tau_two")
    class TauTwo(PosthocRule):
        defaults = {"tau": 2.0}

    try:
        with pytest.raises(ValueError, match="'tau_two' defaults 'tau' to 2.0"):
            baseline_defaults()
    finally:
        POSTHOC_RULES.pop("tau_two")
    assert baseline_defaults()["tau"] == 1.0
