"""Which requests a policy was calibrated on, in a few kilobytes: a bottom-k sketch of their
hashed request ids (the k smallest 64-bit hashes), kept in the policy's meta.

A bundle's content hash says only "this is the same bundle": a split copy, a merge or a
re-import of the same requests has another hash, so replaying a policy on its own calibration
requests went unnoticed. The sketch answers "what share of these requests did the policy see":
every calibration id whose hash is at most the sketch's largest is in the sketch, so among the
replayed requests whose hash falls below it, the share found in the sketch estimates the share
of all replayed requests that were calibration requests (exactly, when the calibration set is
no larger than k). Hashes are pandas' `hash_array` with its fixed key: the same across runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SKETCH_SIZE = 1024      # 16 KB of hex in the policy header; ±3% on the share at 300 compared rows
MIN_COMPARED = 30       # fewer replayed requests below the sketch's largest hash: no estimate


def _hashes(request_ids) -> np.ndarray:
    ids = np.asarray(request_ids, dtype=object).astype(str).astype(object)
    return np.unique(pd.util.hash_array(ids))


def request_id_sketch(request_ids, size: int = SKETCH_SIZE) -> list[str]:
    """The `size` smallest hashes of these (distinct) ids, as 16-digit hex, ascending."""
    return [f"{h:016x}" for h in _hashes(request_ids)[:size]]


def calibration_share(sketch, request_ids) -> tuple[float, int] | None:
    """(estimated share of `request_ids` that the sketch's calibration set holds, the number of
    ids the estimate rests on), or None when too few ids fall below the sketch's largest hash
    (or the sketch is empty or malformed)."""
    try:
        hashes = np.array([int(h, 16) for h in sketch], dtype=np.uint64)
    except (TypeError, ValueError):
        return None
    if hashes.size == 0:
        return None
    mine = _hashes(request_ids)
    compared = mine[mine <= hashes.max()]
    if compared.size == 0 or compared.size < min(MIN_COMPARED, mine.size):
        return None
    return float(np.isin(compared, hashes).mean()), int(compared.size)
