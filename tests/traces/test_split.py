"""split: by request, stratified by task, reproducible, independent of row order."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asd.errors import ConfigError, TraceError
from asd.traces.bundle import open_bundle
from asd.traces.split import assign_split, split_bundle, split_request_ids
from asd.traces.synth import write_synthetic_bundle
from asd.traces.validate import validate_bundle


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=60, unique=True),
    st.floats(0.05, 0.95),
    st.integers(0, 2**40),
    st.randoms(use_true_random=False),
)
def test_split_depends_on_ids_not_row_order_and_keeps_each_task_share(ids, frac, seed, rnd):
    tasks = [("a", "b", None)[len(i) % 3] for i in ids]
    test = assign_split(ids, tasks, frac, seed)
    order = list(range(len(ids)))
    rnd.shuffle(order)
    shuffled = assign_split([ids[i] for i in order], [tasks[i] for i in order], frac, seed)
    assert (shuffled == test[order]).all()
    frame = pd.DataFrame({"task": pd.Series(tasks, dtype=object).fillna("-"), "test": test})
    for _, group in frame.groupby("task"):
        assert group["test"].sum() == np.floor(len(group) * frac + 0.5)


def test_different_seeds_give_different_splits():
    ids = [f"r{i}" for i in range(500)]
    a, b = assign_split(ids, [None] * 500, 0.3, 0), assign_split(ids, [None] * 500, 0.3, 1)
    assert a.sum() == b.sum() == 150 and (a != b).any()


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1, 1.5])
def test_test_fraction_must_be_strictly_inside_0_1(frac):
    with pytest.raises(ConfigError, match="--test-frac"):
        assign_split(["a", "b"], [None, None], frac, 0)


def test_split_in_place_writes_the_column_and_stays_valid(tmp_path):
    path = tmp_path / "b"
    write_synthetic_bundle(path, 400, 3, seed=0, n_tasks=3)
    before = {f: (path / f).read_bytes() for f in ("outputs.parquet", "drafts.parquet")}
    result = split_bundle(path, test_frac=0.25, seed=5)
    assert result["n_test"] + result["n_calibration"] == 400
    assert all(abs(t["n_test"] - 0.25 * (t["n_test"] + t["n_calibration"])) <= 0.5 for t in result["tasks"])
    assert validate_bundle(path) == []
    assert {f: (path / f).read_bytes() for f in before} == before  # only requests.parquet changes
    bundle = open_bundle(path)
    test_ids = split_request_ids(bundle, "test").to_pylist()
    assert len(test_ids) == result["n_test"]
    again = split_bundle(path, test_frac=0.25, seed=5)
    assert again == result and split_request_ids(open_bundle(path), "test").to_pylist() == test_ids


def test_split_to_a_copy_leaves_the_source_unsplit(tmp_path):
    write_synthetic_bundle(tmp_path / "b", 50, 2, seed=0)
    split_bundle(tmp_path / "b", 0.3, 0, out=tmp_path / "c")
    assert pq.read_table(tmp_path / "b" / "requests.parquet").column("split").null_count == 50
    assert validate_bundle(tmp_path / "c") == []
    with pytest.raises(TraceError, match="not split yet"):
        split_request_ids(open_bundle(tmp_path / "b"), "test")
    with pytest.raises(TraceError, match="already exists"):
        split_bundle(tmp_path / "b", 0.3, 0, out=tmp_path / "c")


def test_a_fraction_leaving_one_side_empty_is_refused_and_writes_nothing(tmp_path):
    write_synthetic_bundle(tmp_path / "b", 10, 2, seed=0, n_tasks=1)
    before = (tmp_path / "b" / "requests.parquet").read_bytes()
    with pytest.raises(ConfigError, match="empty"):
        split_bundle(tmp_path / "b", test_frac=0.01, seed=0)
    assert (tmp_path / "b" / "requests.parquet").read_bytes() == before


def test_a_corrupt_table_is_refused_not_copied(tmp_path):
    write_synthetic_bundle(tmp_path / "b", 50, 2, seed=0)
    data = (tmp_path / "b" / "outputs.parquet").read_bytes()
    # keep the footer (the schema reads fine) but wipe the first page header after the magic
    (tmp_path / "b" / "outputs.parquet").write_bytes(data[:4] + bytes(64) + data[68:])
    assert open_bundle(tmp_path / "b", validate=False).columns("outputs")  # the footer reads fine
    with pytest.raises(TraceError, match=r"outputs\.parquet: unreadable Parquet"):
        split_bundle(tmp_path / "b", 0.3, 0, out=tmp_path / "c")
    assert not (tmp_path / "c").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_the_builtin_trace_is_not_split_in_place():
    with pytest.raises(TraceError, match="read-only; write to another directory with -o OUT"):
        split_bundle("builtin", 0.3, 0)


def test_the_split_line_counts_tasks_as_inspect_does(tmp_path):
    """Requests without a task are their own stratum, but not a task: '3 task(s)' beside inspect's 2."""
    from click.testing import CliRunner

    from asd.cli import main
    from asd.traces.bundle import new_manifest, write_bundle

    manifest = new_manifest([{"name": "s", "params_b": 1.0}])
    ids = [f"r{i}" for i in range(6)]
    write_bundle(tmp_path / "b", manifest, {"request_id": ids, "task": ["x", "x", "y", "y", None, None]},
                 {"request_id": ids, "tier": [0] * 6, "quality": [1.0] * 6})
    result = CliRunner().invoke(main, ["traces", "split", str(tmp_path / "b"), "-o", str(tmp_path / "c")])
    assert result.exit_code == 0 and "(2 task(s) and requests without one, seed 0)" in result.output, result.output


def test_requests_without_a_task_are_reported_apart_from_a_task_named_none(tmp_path):
    """The per-task report had filled a missing task with "(none)", so a task of that name and
    the requests without one were one row, and the summary counted no named task (found by a hunt)."""
    from click.testing import CliRunner

    from asd.cli import main
    from asd.traces.bundle import new_manifest, write_bundle

    ids = [f"r{i}" for i in range(10)]
    requests = {"request_id": ids, "task": ["(none)"] * 5 + [None] * 5}
    outputs = {"request_id": [r for r in ids for _ in range(2)], "tier": [0, 1] * 10, "quality": [1.0, 0.0] * 10}
    write_bundle(tmp_path / "b", new_manifest([{"name": "a", "params_b": 1.0}, {"name": "b", "params_b": 2.0}]),
                 requests, outputs)
    result = split_bundle(tmp_path / "b", test_frac=0.4, seed=0, out=tmp_path / "s")
    assert result["tasks"] == [{"task": "(none)", "n_calibration": 3, "n_test": 2},
                               {"task": None, "n_calibration": 3, "n_test": 2}]
    printed = CliRunner().invoke(main, ["traces", "split", str(tmp_path / "b"), "--test-frac", "0.4",
                                        "-o", str(tmp_path / "s2")])
    assert printed.exit_code == 0, printed.output
    assert "1 task(s) and requests without one" in printed.output
