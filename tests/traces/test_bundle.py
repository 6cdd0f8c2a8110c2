import json

import pandas as pd
import pytest

from asd.errors import TraceError
from asd.traces.bundle import new_manifest, open_bundle, write_bundle


def _small(tmp_path):
    manifest = new_manifest([{"name": "small", "params_b": 1.0}, {"name": "big", "params_b": 8.0}])
    requests = pd.DataFrame({"request_id": ["a", "b"]})
    outputs = pd.DataFrame(
        {
            "request_id": ["a", "a", "b", "b"],
            "tier": [0, 1, 0, 1],
            "token_logprobs": [[-0.5, -1.5], None, [-0.1], [-0.2, -0.4]],
            "quality": [0.0, 1.0, 1.0, 1.0],
        }
    )
    return write_bundle(tmp_path / "b", manifest, requests, outputs)


def test_write_then_read_back_selected_columns_and_summaries(tmp_path):
    _small(tmp_path)
    bundle = open_bundle(tmp_path / "b")
    assert bundle.tier_names == ["small", "big"]
    table = bundle.read("outputs", ["tier", "mean_logprob", "min_logprob"])
    assert table.column_names == ["tier", "mean_logprob", "min_logprob"]
    mean = table.column("mean_logprob").to_pylist()
    assert mean[0] == pytest.approx(-1.0) and mean[1] is None and mean[3] == pytest.approx(-0.3)
    assert table.column("min_logprob").to_pylist()[0] == pytest.approx(-1.5)


def test_newer_schema_version_is_refused_by_name(tmp_path):
    _small(tmp_path)
    manifest_file = tmp_path / "b" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["schema_version"] = 99
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(TraceError, match="schema version 99 is newer"):
        open_bundle(tmp_path / "b")


def test_existing_bundle_is_not_overwritten_by_default(tmp_path):
    _small(tmp_path)
    with pytest.raises(TraceError, match="already exists"):
        _small(tmp_path)
    assert open_bundle(tmp_path / "b").n_tiers == 2


def test_wrong_column_type_names_the_column(tmp_path):
    manifest = new_manifest([{"name": "t0"}])
    with pytest.raises(TraceError, match="'tier'"):
        write_bundle(tmp_path / "x", manifest, {"request_id": ["a"]}, {"request_id": ["a"], "tier": ["zero"]})
    assert not (tmp_path / "x").exists()


def test_builtin_is_never_an_output_path(tmp_path, monkeypatch):
    from asd.traces import bundle as B

    with pytest.raises(TraceError, match="^builtin: the built-in trace is read-only; write to another directory with -o OUT$"):
        B.output_path("builtin")
    assert B.output_path(tmp_path / "x") == tmp_path / "x"
    # In an installed copy (site-packages) its directory is refused by path too; in a source
    # checkout maintainers re-record it there, so the path is allowed.
    installed = tmp_path / "lib" / "site-packages" / "asd" / "traces" / "builtin" / "bundle"
    installed.mkdir(parents=True)
    monkeypatch.setattr(B, "builtin_bundle_path", lambda: installed)
    with pytest.raises(TraceError, match="read-only"):
        B.output_path(installed)
    source = tmp_path / "repo" / "asd" / "traces" / "builtin" / "bundle"
    monkeypatch.setattr(B, "builtin_bundle_path", lambda: source)
    assert B.output_path(source) == source


def test_unreadable_table_is_a_trace_error_naming_the_file(tmp_path):
    from asd.traces.columns import read_arrays

    bundle = _small(tmp_path)
    (bundle.path / "outputs.parquet").write_text("notparquet\n")
    for read in (lambda: bundle.columns("outputs"), lambda: bundle.read("outputs", ["tier"]),
                 lambda: read_arrays(bundle, "outputs", ["tier"])):
        with pytest.raises(TraceError, match=r"outputs\.parquet: unreadable Parquet"):
            read()


def test_a_nan_figure_in_the_manifest_is_written_as_null(tmp_path):
    """`asd live --deadline` recorded a request never sent with "sent_s": NaN, which strict JSON
    readers refuse; the stamp still matches the manifest as read back."""
    from asd.traces.synth import synthesize
    from asd.traces.validate import stamp_matches

    manifest, requests, outputs, drafts = synthesize(10, 2, 0)
    manifest["provenance"] = {**manifest.get("provenance", {}), "live": {"requests": [{"sent_s": float("nan")}],
                                                                         "rate": float("inf")}}
    written = write_bundle(tmp_path / "b", manifest, requests, outputs, drafts)
    text = (tmp_path / "b" / "manifest.json").read_text()
    live = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in manifest.json"))["provenance"]["live"]
    assert live == {"requests": [{"sent_s": None}], "rate": None}
    assert stamp_matches(written) and stamp_matches(open_bundle(tmp_path / "b"))
