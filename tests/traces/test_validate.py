"""validate_bundle: valid bundles pass, every corruption is reported by file, column and row."""

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asd.traces.bundle import open_bundle, write_bundle
from asd.traces.synth import write_synthetic_bundle
from asd.errors import TraceError
from asd.traces.validate import Problem, validate_bundle
from tests.strategies import trace_bundles

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(trace_bundles())
def test_written_bundle_reads_back_equal(tmp_path_factory, tables):
    manifest, requests, outputs, drafts = tables
    path = tmp_path_factory.mktemp("rt") / "b"
    write_bundle(path, manifest, requests, outputs, drafts)
    bundle = open_bundle(path)
    assert bundle.manifest == manifest and bundle.validated and bundle.stamp is not None
    for name, data in (("requests", requests), ("outputs", outputs), ("drafts", drafts)):
        if data is None:
            assert not bundle.has(name)
            continue
        back = bundle.read(name, list(data))
        for column, values in data.items():
            assert back.column(column).to_pylist() == values, (name, column)
    # the per-row summaries are derived from the lists when not given
    back = bundle.read("outputs", ["token_logprobs", "mean_logprob", "min_logprob"]).to_pylist()
    for row in back:
        lps = row["token_logprobs"]
        if lps:
            assert row["mean_logprob"] == pytest.approx(float(np.mean(np.float32(lps))), rel=1e-5, abs=1e-5)
            assert row["min_logprob"] == min(lps)
        else:
            assert row["mean_logprob"] is None and row["min_logprob"] is None


@SETTINGS
@given(trace_bundles())
def test_bundles_built_to_the_schema_validate_clean(tmp_path_factory, tables):
    path = tmp_path_factory.mktemp("ok") / "b"
    write_bundle(path, *tables)
    assert validate_bundle(path) == []


@SETTINGS
@given(trace_bundles(), st.data())
def test_out_of_range_quality_is_reported_at_its_row(tmp_path_factory, tables, data):
    manifest, requests, outputs, drafts = tables
    n = len(outputs["request_id"])
    row = data.draw(st.integers(0, n - 1))
    bad = data.draw(st.sampled_from([math.nan, -0.25, 1.5, 7.0]))
    outputs = dict(outputs, quality=list(outputs["quality"]))
    outputs["quality"][row] = bad
    path = tmp_path_factory.mktemp("q") / "b"
    write_bundle(path, manifest, requests, outputs, drafts, validate=False)  # plant it past the writer's check
    problems = validate_bundle(path)
    assert [(p.file, p.column, p.row) for p in problems] == [("outputs.parquet", "quality", row)]


# --- one corrupted table per check ---------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "b"
    write_synthetic_bundle(path, 20, 3, seed=1, token_lists=True)
    assert validate_bundle(path) == []
    return path


def _copy(base, tmp_path):
    import shutil

    shutil.copytree(base, tmp_path / "b")
    return tmp_path / "b"


def _set(path, table, column, row, value):
    file = path / f"{table}.parquet"
    tb = pq.read_table(file)
    values = tb.column(column).to_pylist()
    values[row] = value(values[row]) if callable(value) else value
    idx = tb.schema.get_field_index(column)
    kind = tb.schema.field(idx).type
    tb = tb.set_column(idx, pa.field(column, kind), pa.array(values, type=kind))  # nullable: may plant a null
    pq.write_table(tb, file)


def _ids(path, table):
    return pq.read_table(path / f"{table}.parquet", columns=["request_id"]).column(0).to_pylist()


CORRUPTIONS = [
    # table, column, row, new value, expected (column, row, message part)
    ("requests", "split", 4, "train", ("split", 4, "not one of")),
    ("requests", "arrival_s", 2, -1.0, ("arrival_s", 2, "negative")),
    ("outputs", "request_id", 5, "ghost", ("request_id", 5, "not in requests.parquet")),
    ("outputs", "tier", 1, 0, ("tier", 1, "duplicate (request, tier)")),
    ("outputs", "tier", 7, 9, ("tier", 7, "outside the manifest's 3 tiers")),
    ("outputs", "quality", 3, math.nan, ("quality", 3, "NaN quality")),
    ("outputs", "quality", 3, 1.5, ("quality", 3, "outside [0, 1]")),
    ("outputs", "n_prompt_tokens", 6, -4, ("n_prompt_tokens", 6, "negative")),
    ("outputs", "n_output_tokens", 8, -1, ("n_output_tokens", 8, "negative")),
    ("outputs", "n_output_tokens", 9, lambda n: n + 1, ("token_logprobs", 9, "values but n_output_tokens")),
    ("outputs", "token_logprobs", 10, lambda lps: lps[:-1] + [0.5], ("token_logprobs", 10, "logprob > 0")),
    ("outputs", "token_logprobs", 11, lambda lps: [math.nan] + lps[1:], ("token_logprobs", 11, "NaN logprob")),
    ("outputs", "token_entropy", 12, lambda e: [-1.0] + e[1:], ("token_entropy", 12, "negative")),
    ("outputs", "mean_logprob", 13, 0.3, ("mean_logprob", 13, "logprob > 0")),
    ("outputs", "min_logprob", 14, math.nan, ("min_logprob", 14, "NaN logprob")),
    ("outputs", "mean_entropy", 15, -0.1, ("mean_entropy", 15, "negative")),
    ("outputs", "mean_entropy", 16, float("inf"), ("mean_entropy", 16, "infinite")),  # passed as valid
    ("outputs", "token_entropy", 17, lambda e: e[:-1] + [float("inf")], ("token_entropy", 17, "infinite")),
    ("outputs", "ttft_ms", 16, -3.0, ("ttft_ms", 16, "negative")),
    ("outputs", "e2e_ms", 17, math.nan, ("e2e_ms", 17, "NaN")),
    ("outputs", "e2e_ms", 18, math.inf, ("e2e_ms", 18, "infinite")),
    ("outputs", "e2e_ms", 20, 1e300, ("e2e_ms", 20, "not a time in ms")),  # it passed, then overflowed simulate's fits
    ("outputs", "request_id", 19, None, ("request_id", 19, "required")),
    ("drafts", "request_id", 2, "ghost", ("request_id", 2, "not in requests.parquet")),
    ("drafts", "verify_tier", 3, 9, ("verify_tier", 3, "outside")),
    ("drafts", "verify_tier", 4, 0, ("verify_tier", 4, "deeper than the draft tier")),
    ("drafts", "request_id", 2, "synth-00", ("verify_tier", 2, "duplicate (request, draft_tier, verify_tier)")),
    ("drafts", "n_accepted", 5, 10_000, ("n_accepted", 5, "accepted of")),
    ("drafts", "n_draft_tokens", 6, -2, ("n_draft_tokens", 6, "negative")),
    ("drafts", "verifier_logprobs", 7, lambda lps: lps + [-0.1], ("verifier_logprobs", 7, "values but n_draft_tokens")),
    ("drafts", "verifier_logprobs", 8, lambda lps: [2.0] + lps[1:], ("verifier_logprobs", 8, "logprob > 0")),
    ("drafts", "verify_ms", 9, -1.0, ("verify_ms", 9, "negative")),
    ("drafts", "verify_ms", 10, 2e9, ("verify_ms", 10, "not a time in ms")),
]


@pytest.mark.parametrize("table,column,row,value,expected", CORRUPTIONS, ids=[f"{c[0]}.{c[1]}:{c[4][2]}" for c in CORRUPTIONS])
def test_each_corruption_is_named_by_file_column_and_row(base, tmp_path, table, column, row, value, expected):
    path = _copy(base, tmp_path)
    _set(path, table, column, row, value)
    problems = validate_bundle(path)
    col, r, message = expected
    hits = [p for p in problems if (p.file, p.column, p.row) == (f"{table}.parquet", col, r) and message in p.message]
    assert hits, problems
    assert str(hits[0]).startswith(f"{table}.parquet: column {col!r} row {r}: ")


def test_duplicate_request_rows_are_reported(base, tmp_path):
    path = _copy(base, tmp_path)
    first = _ids(path, "requests")[1]
    _set(path, "requests", "request_id", 3, first)
    problems = validate_bundle(path)
    assert ("requests.parquet", "request_id", 3) in [(p.file, p.column, p.row) for p in problems]
    assert any(f"duplicate request {first!r}" in p.message for p in problems)


def test_wrong_column_type_is_reported_without_reading_its_values(base, tmp_path):
    path = _copy(base, tmp_path)
    tb = pq.read_table(path / "outputs.parquet")
    idx = tb.schema.get_field_index("quality")
    tb = tb.set_column(idx, pa.field("quality", pa.string()), pc_cast_str(tb.column("quality")))
    pq.write_table(tb, path / "outputs.parquet")
    problems = validate_bundle(path)
    assert [str(p) for p in problems] == ["outputs.parquet: column 'quality': type string, expected float"]


def pc_cast_str(col):
    import pyarrow.compute as pc

    return pc.cast(col, pa.string())


def test_missing_and_unknown_columns_are_reported(base, tmp_path):
    path = _copy(base, tmp_path)
    tb = pq.read_table(path / "outputs.parquet").drop_columns(["ttft_ms"])
    tb = tb.append_column("gpu", pa.array(["h100"] * tb.num_rows))
    pq.write_table(tb, path / "outputs.parquet")
    problems = {(p.column, p.message.split(" (")[0]) for p in validate_bundle(path)}
    assert ("ttft_ms", "column missing") in problems and ("gpu", "unknown column") in problems


def test_empty_tables_are_reported(base, tmp_path):
    path = _copy(base, tmp_path)
    for table in ("outputs", "drafts"):
        tb = pq.read_table(path / f"{table}.parquet")
        pq.write_table(tb.slice(0, 0), path / f"{table}.parquet")
    problems = validate_bundle(path)
    assert ("outputs.parquet", "empty table") in [(p.file, p.message) for p in problems]
    assert any(p.file == "drafts.parquet" and p.message.startswith("empty table") for p in problems)


def test_newer_schema_version_is_one_problem_naming_the_manifest(base, tmp_path):
    path = _copy(base, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["schema_version"] = 2
    (path / "manifest.json").write_text(json.dumps(manifest))
    problems = validate_bundle(path)
    assert len(problems) == 1 and problems[0].file.endswith("manifest.json")
    assert "schema version 2 is newer" in problems[0].message


def test_nonpositive_params_in_manifest_is_reported(base, tmp_path):
    path = _copy(base, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["tiers"][1]["params_b"] = -13
    (path / "manifest.json").write_text(json.dumps(manifest))
    problems = validate_bundle(path)
    # named like every other manifest problem: by the manifest's path, bundle included
    assert [(p.file, p.message) for p in problems] == [
        (str(path / "manifest.json"), "tiers[1] (synth-34b): params_b must be a positive number or null, got -13")]


def test_unknown_draft_acceptance_in_manifest_is_reported(base, tmp_path):
    path = _copy(base, tmp_path)
    assert validate_bundle(path) == []  # absent: longest_prefix
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["draft_acceptance"] = "sps_steps"
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert validate_bundle(path) == []
    manifest["draft_acceptance"] = "per_step"
    (path / "manifest.json").write_text(json.dumps(manifest))
    problems = validate_bundle(path)
    assert problems and problems[0].file == "manifest.json" and "draft_acceptance 'per_step'" in problems[0].message


def test_missing_bundle_is_a_problem_not_an_exception(tmp_path):
    problems = validate_bundle(tmp_path / "nope")
    assert len(problems) == 1 and "no such bundle" in problems[0].message


def test_many_bad_rows_are_one_problem_with_a_count_and_max_problems_caps(base, tmp_path):
    path = _copy(base, tmp_path)
    tb = pq.read_table(path / "outputs.parquet")
    idx = tb.schema.get_field_index("quality")
    tb = tb.set_column(idx, tb.schema.field(idx), pa.array(np.full(tb.num_rows, 2.0, dtype=np.float32)))
    pq.write_table(tb, path / "outputs.parquet")
    (problem,) = validate_bundle(path)
    assert problem.row == 0 and f"(and {tb.num_rows - 1} more rows)" in problem.message
    _set(path, "outputs", "ttft_ms", 0, -1.0)
    assert len(validate_bundle(path, max_problems=1)) == 1


def test_problem_str_is_one_line():
    assert str(Problem("outputs.parquet", "quality", 12, "NaN quality")) == "outputs.parquet: column 'quality' row 12: NaN quality"
    assert str(Problem("manifest.json", None, None, "bad")) == "manifest.json: bad"


def test_a_million_row_table_is_checked_vectorised(tmp_path):
    """Not a timing test: proves the large path runs end to end and finds a planted problem."""
    path = tmp_path / "big"
    write_synthetic_bundle(path, 50_000, 4, seed=3)
    _set(path, "outputs", "quality", 123_456, 3.0)
    problems = validate_bundle(path)
    assert [(p.column, p.row) for p in problems] == [("quality", 123_456)]


def test_unreadable_parquet_is_reported_by_file(base, tmp_path):
    path = _copy(base, tmp_path)
    (path / "drafts.parquet").write_bytes(b"not parquet at all")
    problems = validate_bundle(path)
    assert [(p.file, p.message.split(" (")[0]) for p in problems] == [("drafts.parquet", "unreadable Parquet")]


@pytest.mark.parametrize("name", ["nonexist", "vnewer"])
def test_bundle_level_problem_names_its_path_once(base, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    if name == "vnewer":
        path = _copy(base, tmp_path)
        path.rename(tmp_path / name)
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        manifest["schema_version"] = 2
        (tmp_path / name / "manifest.json").write_text(json.dumps(manifest))
    (problem,) = validate_bundle(name)
    expected = {"nonexist": "nonexist: no such bundle",
                "vnewer": "vnewer/manifest.json: schema version 2 is newer than this asd reads (1); upgrade asd"}
    assert str(problem) == expected[name]


def test_every_manifest_problem_is_listed_and_the_tables_are_still_checked(base, tmp_path):
    """A bad params_b stopped validation at that one problem: the other manifest problems and the
    tables went unchecked ('1 problem(s)' where there were 4)."""
    path = _copy(base, tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["tiers"][0]["params_b"] = -1
    del manifest["tiers"][1]["dtype"]
    manifest["tiers"][2]["tensor_parallel"] = True
    (path / "manifest.json").write_text(json.dumps(manifest))
    _set(path, "outputs", "quality", 1, float("nan"))
    problems = [str(p) for p in validate_bundle(path)]
    assert len(problems) == 4, problems
    assert "params_b must be a positive number or null, got -1" in problems[0]
    assert "missing dtype" in problems[1] and "tensor_parallel must be an integer >= 1" in problems[2]
    assert "quality" in problems[3] and "NaN" in problems[3]
    # a manifest whose ladder cannot be read (no tier names) is still one problem
    manifest["tiers"][0]["name"] = ""
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert [str(p) for p in validate_bundle(path)] == [problems[0].split(": tiers[0]")[0] + ": tiers[0] has no name"]


def test_a_tier_out_of_range_does_not_hide_the_other_rows_duplicates(base, tmp_path):
    """One row's tier 7 stopped the duplicate (request, tier) check for every row."""
    path = _copy(base, tmp_path)
    file = path / "outputs.parquet"
    table = pq.read_table(file)
    rows = table.to_pylist()
    rows[0]["tier"] = 7
    rows.append(dict(rows[4]))
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), file)
    problems = [str(p) for p in validate_bundle(path)]
    assert any("tier 7 is outside" in p for p in problems) and any("duplicate (request, tier)" in p for p in problems)


def test_a_deleted_drafts_table_is_a_problem_not_a_bundle_without_drafts(tmp_path):
    """The drafts table is optional, so deleting it from a written bundle left a valid bundle
    that every command replayed by regeneration instead of speculative continuation."""
    path = tmp_path / "b"
    write_synthetic_bundle(path, 30, 3, 0)
    (path / "drafts.parquet").unlink()
    problems = validate_bundle(path)
    assert [(p.file, p.message) for p in problems] == [
        ("drafts.parquet", "missing, though the bundle was written and validated with it (restore it; to use the "
                           "bundle without it, delete the manifest's 'validation' entry)")]
    with pytest.raises(TraceError, match="drafts.parquet: missing"):
        open_bundle(path)
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["validation"]  # the way out the message names
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert validate_bundle(path) == [] and not open_bundle(path).has("drafts")
