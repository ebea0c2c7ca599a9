"""The report's claims: paired, between comparable cells only, with their n and CI."""

from __future__ import annotations

import pandas as pd
import pytest

from dipddpm import claims

SEEDLESS = {"stage": "ddpm", "dataset": "cifar10-test", "task": "denoise-s25", "obs_seed": "0"}
START = {"start": "dip", "arch": "skip", "iters": "400"}


def _rows(method: str, purpose: str, psnrs, **identity) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {**SEEDLESS, "purpose": purpose, "method": method, "image": i, "psnr": p, **identity}
            for i, p in enumerate(psnrs)
        ]
    )


def _cells() -> pd.DataFrame:
    return pd.concat(
        [
            _rows("dip", "restoration", [25.0, 26.0, 27.0], stage="dip", arch="skip", iters="400"),
            _rows("dip+ddpm", "restoration", [26.0, 27.5, 27.5], t0="50", **START),
            _rows("dip+ddpm", "restoration", [20.0, 20.0, 20.0], t0="300", **START),
            _rows("dip+ddpm", "generation", [15.0, 15.0, 15.0], t0="600", **START),
        ],
        ignore_index=True,
    ).fillna("none")


def test_a_claim_is_the_paired_difference_with_its_n_and_ci():
    cells = _cells()
    claim = claims.paired_claim(
        cells,
        {"purpose": "restoration", "method": "dip+ddpm", "t0": "50"},
        {"purpose": "restoration", "method": "dip", "iters": "400"},
        "cifar10-test, denoise-s25",
    )
    assert claim.result.n == 3
    assert claim.result.mean_diff == pytest.approx((1.0 + 1.5 + 0.5) / 3)
    assert claim.result.ci_low > 0 and claim.result.verdict == "helps"
    assert "n = 3 images" in claim.sentence() and "+1.00 dB" in claim.sentence()


def test_a_generation_cell_is_never_compared_with_a_restoration_cell():
    cells = _cells()
    with pytest.raises(claims.IncomparableCells, match="generation metrics only"):
        claims.paired_claim(
            cells,
            {"purpose": "generation", "method": "dip+ddpm", "t0": "600"},
            {"purpose": "restoration", "method": "dip", "iters": "400"},
            "anywhere",
        )


def test_other_observations_are_refused():
    cells = _cells()
    other = _rows("dip", "restoration", [1.0, 2.0, 3.0], stage="dip", iters="100", obs_seed="1")
    cells = pd.concat([cells, other.fillna("none")], ignore_index=True).fillna("none")
    with pytest.raises(claims.IncomparableCells, match="observation seeds"):
        claims.check_comparable(
            cells,
            {"method": "dip", "iters": "400"},
            {"method": "dip", "iters": "100"},
        )


def test_the_report_claims_read_restoration_cells_only():
    found = claims.restoration_claims(_cells())
    # The best restoration DIP+DDPM setting (t0 50, not the generation cell at t0 600)
    # against its own prior: the only rival in these cells.
    assert len(found) == 1
    assert "t0=50" in found[0].subject and "best of 2 settings" in found[0].subject_note
    assert found[0].result.mean_diff == pytest.approx(1.0)
