"""Split a bundle's requests into calibration and test sets, by request, stratified by task.

The split is stored in the `split` column of `requests.parquet` ("calibration" / "test"), so
one bundle carries both halves and later commands select a half by name. Within each task the
requests whose keyed hashes of (seed, id) rank lowest go to test, as many as the test fraction
asks: a request's side depends on its id, the seed, the test fraction and the other requests of
its task, not on row order, so re-splitting a re-sorted bundle gives the same answer (a subset
of the requests may split some of them the other way). The input is opened through
`open_bundle` (validated) and the result is validated and stamped before it replaces anything.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from asd.errors import ConfigError, TraceError
from asd.fsutil import move_into_place, scratch_dir
from asd.traces.bundle import MANIFEST, Bundle, bundle_target, open_bundle, output_path, staging_dir, write_errors, write_parquet
from asd.traces.validate import validate_bundle

CALIBRATION, TEST = "calibration", "test"
_HASH_KEY = "asd-split-v1-key"  # fixed 16-byte key: ids hash the same in every run


def assign_split(request_ids, tasks, test_frac: float, seed: int) -> np.ndarray:
    """Boolean array, True = test. Within each task (null task = one stratum) the
    round(test_frac · n_task) requests with the smallest seeded hash of their id go to test."""
    if not 0.0 < test_frac < 1.0:
        raise ConfigError(f"--test-frac must be strictly between 0 and 1, got {test_frac}")
    ids = pd.Series(np.asarray(request_ids, dtype=object))
    n = len(ids)
    key = pd.util.hash_pandas_object(ids, index=False, hash_key=_HASH_KEY).to_numpy()
    seed_bits = (int(seed) * 0x9E3779B97F4A7C15 + 1) & 0xFFFFFFFFFFFFFFFF
    key = _mix(key ^ _mix(np.uint64(seed_bits)))
    strata = pd.Series(np.asarray(tasks, dtype=object)).fillna("\x00no-task").to_numpy(dtype=object)
    codes, uniques = pd.factorize(strata, sort=True)
    order = np.lexsort((ids.to_numpy(dtype=object).astype(str), key, codes))  # ties broken by id
    sorted_codes = codes[order]
    starts = np.searchsorted(sorted_codes, np.arange(len(uniques)))
    rank = np.arange(n) - starts[sorted_codes]
    sizes = np.bincount(codes, minlength=len(uniques))
    n_test = np.floor(sizes * test_frac + 0.5).astype(np.int64)
    test = np.empty(n, dtype=bool)
    test[order] = rank < n_test[sorted_codes]
    return test


def _mix(x):
    """splitmix64 finaliser: spreads the seed over all bits (uint64 wrap-around intended)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def split_bundle(path, test_frac: float = 0.3, seed: int = 0, out=None, overwrite: bool = False) -> dict:
    """Write the `split` column. In place (atomic replace of requests.parquet) when `out` is
    None, else into a copy of the bundle at `out`. Returns counts per split and per task.
    `path`: a bundle directory, `builtin` or an open `Bundle`; it must pass validation, and
    so must the result before it is put in place. The built-in trace is read-only: split it
    into a copy."""
    if out is not None:
        output_path(out)
    else:
        output_path(path.path if isinstance(path, Bundle) else path)
    bundle = open_bundle(path)
    requests = bundle.read("requests")
    if requests.num_rows == 0:
        raise TraceError(f"{bundle.path}/requests.parquet: empty table, nothing to split")
    tasks = requests.column("task").to_numpy(zero_copy_only=False)
    test = assign_split(requests.column("request_id").to_numpy(zero_copy_only=False), tasks, test_frac, seed)
    n_test = int(test.sum())
    if n_test == 0 or n_test == len(test):
        side = TEST if n_test == 0 else CALIBRATION
        raise ConfigError(
            f"{bundle.path}: a test fraction of {test_frac} leaves the {side} split empty "
            f"({len(test)} requests)"
        )
    labels = pa.array(np.where(test, TEST, CALIBRATION), type=pa.string())
    idx = requests.schema.get_field_index("split")
    requests = requests.set_column(idx, requests.schema.field(idx), labels)
    if out is None:
        _split_in_place(bundle, requests)
        target = bundle.path
    else:
        target = _copy_with_requests(bundle, Path(out), requests, overwrite)
    # requests without a task are their own stratum, apart from a task that is named "(none)"
    task_names = pd.Series(tasks, dtype=object)
    per_task = (
        pd.DataFrame({"unnamed": task_names.isna(), "task": task_names.fillna(""), "test": test})
        .groupby(["unnamed", "task"])["test"].agg(["size", "sum"]).reset_index()
    )
    return {
        "bundle": str(target),
        "seed": int(seed),
        "test_frac": float(test_frac),
        "n_calibration": int(len(test) - n_test),
        "n_test": n_test,
        "tasks": [
            {"task": None if r.unnamed else str(r.task), "n_calibration": int(r.size - r.sum), "n_test": int(r.sum)}
            for r in per_task.itertuples(index=False)
        ],
    }


def split_request_ids(bundle: Bundle | str, which: str) -> pa.Array:
    """Request ids of the `calibration` or `test` split (error when the bundle is not split).
    `bundle`: an open bundle, a path or `builtin` (opened and validated by `open_bundle`)."""
    if which not in (CALIBRATION, TEST):
        raise ConfigError(f"split must be {CALIBRATION!r} or {TEST!r}, got {which!r}")
    bundle = open_bundle(bundle)
    requests = bundle.read("requests", ["request_id", "split"])
    split = requests.column("split")
    if split.null_count == requests.num_rows:
        raise TraceError(f"{bundle.path}: not split yet (run `asd traces split {bundle.path}`)")
    return requests.column("request_id").filter(pc.fill_null(pc.equal(split, which), False)).combine_chunks()


def _split_in_place(bundle: Bundle, requests: pa.Table) -> None:
    """Replace requests.parquet (and the manifest's stamp) only after the bundle with the new
    table has passed validation: it is assembled in a hidden directory inside the bundle
    (the other tables hard-linked, or copied where links are not allowed) and validated there."""
    with write_errors(bundle.path):
        tmp = scratch_dir(bundle.path, ".split-")
    try:
        with write_errors(bundle.path):
            write_parquet(requests, tmp / "requests.parquet")
            for name in ("outputs.parquet", "drafts.parquet"):
                if (bundle.path / name).is_file():
                    try:
                        os.link(bundle.path / name, tmp / name)
                    except OSError:
                        shutil.copy2(bundle.path / name, tmp / name)
            shutil.copy2(bundle.path / MANIFEST, tmp / MANIFEST)
        problems = validate_bundle(tmp, max_problems=1, stamp=True)
        if problems:
            raise TraceError(f"{bundle.path}: not split, the result fails validation: {problems[0]}")
        with write_errors(bundle.path):
            # requests first: if we stop in between, the old stamp no longer matches and the
            # next reader validates in full
            move_into_place(tmp / "requests.parquet", bundle.path / "requests.parquet")
            move_into_place(tmp / MANIFEST, bundle.path / MANIFEST)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_with_requests(bundle: Bundle, out: Path, requests: pa.Table, overwrite: bool) -> Path:
    if os.path.lexists(out) and out.resolve() == bundle.path.resolve():
        _split_in_place(bundle, requests)
        return out
    bundle_target(out, overwrite)
    # The source passed validation (or matched its stamp byte for byte), so its other tables
    # are copied as they are; the copy is validated again before it is renamed into place.
    with staging_dir(out) as tmp:
        with write_errors(out):
            for name in ("outputs.parquet", "drafts.parquet", MANIFEST):
                if (bundle.path / name).is_file():
                    shutil.copy2(bundle.path / name, tmp / name)
            write_parquet(requests, tmp / "requests.parquet")
    return out
