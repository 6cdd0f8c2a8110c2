"""read_arrays: numpy columns equal to what pyarrow reads; request_index maps ids to rows."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings

from asd.errors import TraceError
from asd.traces import bundle as bundle_module
from asd.traces.bundle import open_bundle, write_bundle
from asd.traces.columns import SIMULATOR_DRAFT_COLUMNS, SIMULATOR_OUTPUT_COLUMNS, read_arrays
from asd.traces.synth import synthesize, write_synthetic_bundle
from tests.strategies import trace_bundles


def _expected_index(bundle, table):
    ids = bundle.read(table, ["request_id"]).column(0)
    known = bundle.read("requests", ["request_id"]).column(0).combine_chunks()
    return pc.fill_null(pc.index_in(ids, value_set=known), -1).to_numpy(zero_copy_only=False)


@pytest.mark.parametrize("shuffle", [False, True])
def test_simulator_columns_match_pyarrow_across_row_groups(tmp_path, monkeypatch, shuffle):
    monkeypatch.setattr(bundle_module, "ROW_GROUP_SIZE", 101)  # many row groups; requests straddle them
    manifest, requests, outputs, drafts = synthesize(300, 4, seed=0)
    if shuffle:  # rows out of request order: the hash-join path
        outputs = outputs.take(np.random.default_rng(0).permutation(outputs.num_rows))
    bundle = write_bundle(tmp_path / "b", manifest, requests, outputs, drafts)
    arrays = read_arrays(bundle, "outputs", SIMULATOR_OUTPUT_COLUMNS)
    np.testing.assert_array_equal(arrays["request_index"], _expected_index(bundle, "outputs"))
    for name in SIMULATOR_OUTPUT_COLUMNS[1:]:
        np.testing.assert_array_equal(arrays[name], bundle.read("outputs", [name]).column(0).to_numpy())
    d = read_arrays(bundle, "drafts", SIMULATOR_DRAFT_COLUMNS)
    np.testing.assert_array_equal(d["request_index"], _expected_index(bundle, "drafts"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trace_bundles())
def test_nulls_become_nan_and_ids_map_to_request_rows(tmp_path_factory, tables):
    bundle = write_bundle(tmp_path_factory.mktemp("c") / "b", *tables)
    arrays = read_arrays(bundle, "outputs", ["request_id", "quality", "accepted", "n_output_tokens"])
    np.testing.assert_array_equal(arrays["request_index"], _expected_index(bundle, "outputs"))
    for name in ("quality", "accepted", "n_output_tokens"):
        values = bundle.read("outputs", [name]).column(0).to_pylist()
        expected = np.array([np.nan if v is None else float(v) for v in values])
        np.testing.assert_array_equal(arrays[name].astype(float), expected)


def test_unknown_or_text_columns_are_trace_errors(tmp_path):
    bundle = write_synthetic_bundle(tmp_path / "b", 10, 2, seed=0)
    with pytest.raises(TraceError, match="no column 'nope'"):
        read_arrays(bundle, "outputs", ["nope"])
    with pytest.raises(TraceError, match="not numeric"):
        read_arrays(bundle, "outputs", ["label_source"])
    with pytest.raises(TraceError, match="unknown table"):
        read_arrays(bundle, "tables", ["tier"])
    assert isinstance(open_bundle(tmp_path / "b").read("outputs", ["tier"]), pa.Table)


def test_a_single_column_name_given_as_a_string_is_named():
    """A string is iterable: "quality" asked for columns 'q', 'u', … and blamed 'q'."""
    with pytest.raises(TraceError, match=r"columns 'quality': give a list of column names, e.g. \['quality'\]"):
        read_arrays("builtin", "outputs", "quality")
