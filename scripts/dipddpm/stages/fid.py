"""FID/KID stages: the reference statistics and each sample set's scores.

Apart from :mod:`.report` so that a sampling job, which scores its own samples, does not
import the report's tables and figures (matplotlib, scipy) it never uses.
"""

from __future__ import annotations

import logging

from ..fid import fid_kid, reference_stats
from ..io import load_npz, save_json
from ..version import code_version

log = logging.getLogger("dipddpm")


def run_fid_reference(clean_npz, weights, device: str, out_npz) -> None:
    """Inception statistics of a reference set, computed once and cached."""
    images = load_npz(clean_npz)["images"]
    stats = reference_stats(images, out_npz, weights=weights, device=device)
    log.info(
        "reference of %d images: available=%s %s",
        len(images),
        stats.get("available"),
        stats.get("reason", ""),
    )


RESTORATION_FID_OFF = (
    "not computed: metrics.restoration_fid is false (a restoration set of a few dozen "
    "images is far too small for FID)"
)


def write_fid(images, identity: dict, nfe, reference_npz, weights, device: str, out_json) -> None:
    """FID/KID of one sample set, written next to it with the set's identity; records
    'unavailable' with the reason instead of failing. Computed in the job that sampled the
    set, so no second process loads torch and the samples again. ``reference_npz`` None:
    not computed (restoration FID switched off), recorded as such."""
    if reference_npz is None:
        result = {"available": False, "reason": RESTORATION_FID_OFF, "n": len(images)}
    else:
        result = fid_kid(images, reference_npz, weights=weights, device=device)
    record = {"identity": identity, "nfe": nfe, **result, "stage": "fid", **code_version()}
    save_json(out_json, record)
