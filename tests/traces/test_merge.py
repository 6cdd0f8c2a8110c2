"""merge: shards of one workload join back into the whole; mismatches are refused."""

import json
import shutil

import pyarrow.compute as pc
import pytest

from asd.errors import TraceError
from asd.traces.bundle import write_bundle
from asd.traces.merge import merge_bundles
from asd.traces.synth import synthesize
from asd.traces.validate import validate_bundle


def _shards(tmp_path, n_shards=3, n=90, n_tiers=3):
    manifest, requests, outputs, drafts = synthesize(n, n_tiers, seed=0)
    ids = requests.column("request_id")
    paths = []
    for i in range(n_shards):
        mine = ids.take(list(range(i, n, n_shards)))
        keep = lambda t: t.filter(pc.is_in(t.column("request_id"), value_set=mine))  # noqa: E731
        path = tmp_path / f"shard{i}"
        write_bundle(path, dict(manifest, provenance={"shard": f"{i}/{n_shards}"}), keep(requests), keep(outputs), keep(drafts))
        paths.append(path)
    return paths, (requests, outputs, drafts)


def _sorted(table):
    return table.sort_by([(c, "ascending") for c in ("request_id", "tier", "draft_tier") if c in table.column_names])


def test_merged_shards_equal_the_whole(tmp_path):
    paths, (requests, outputs, drafts) = _shards(tmp_path)
    merged = merge_bundles(paths, tmp_path / "all")
    assert validate_bundle(merged) == []
    back = _sorted(merged.read("requests", requests.column_names))
    assert back.equals(_sorted(requests.cast(back.schema)))
    back = _sorted(merged.read("outputs", outputs.column_names))
    assert back.equals(_sorted(outputs.cast(back.schema)))
    back = _sorted(merged.read("drafts", drafts.column_names))
    assert back.equals(_sorted(drafts.cast(back.schema)))
    assert merged.manifest["synthetic"] is True
    assert [m["provenance"] for m in merged.manifest["provenance"]["merged_from"]] == [
        {"shard": "0/3"}, {"shard": "1/3"}, {"shard": "2/3"}]


def test_duplicate_requests_are_refused_naming_both_bundles(tmp_path):
    paths, _ = _shards(tmp_path)
    shutil.copytree(paths[0], tmp_path / "again")
    with pytest.raises(TraceError, match=r"request 'synth-\d+' is also in .*shard0"):
        merge_bundles([paths[0], paths[1], tmp_path / "again"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _drop_last_tier(m):
    m["sampling"].pop(m["tiers"].pop()["name"], None)  # sampling is per tier: it goes too


def _rename_first_tier(m):
    m["sampling"]["other"] = m["sampling"].pop(m["tiers"][0]["name"], {})
    m["tiers"][0]["name"] = "other"


def _other_temperature(m):
    m["sampling"][m["tiers"][0]["name"]] = {**m["sampling"].get(m["tiers"][0]["name"], {}), "temperature": 0.7}


@pytest.mark.parametrize(
    "edit,message",
    [
        (_drop_last_tier, "tiers"),
        (lambda m: m["tiers"][1].update(params_b=99.0), "params_b=99.0"),
        (_rename_first_tier, "tiers"),
        (_other_temperature, "sampling"),
        (lambda m: m.update(label_rule="bleu against the last tier"), "labelled by 'bleu against the last tier'"),
    ],
)
def test_mismatched_ladders_are_refused(tmp_path, edit, message):
    paths, _ = _shards(tmp_path, n_shards=2)
    file = paths[1] / "manifest.json"
    manifest = json.loads(file.read_text())
    edit(manifest)
    file.write_text(json.dumps(manifest))
    with pytest.raises(TraceError, match=message):
        merge_bundles(paths, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_output_must_be_new_and_not_an_input(tmp_path):
    paths, _ = _shards(tmp_path, n_shards=2)
    with pytest.raises(TraceError, match="must not be one of the inputs"):
        merge_bundles(paths, paths[0])
    with pytest.raises(TraceError, match="at least two"):
        merge_bundles(paths[:1], tmp_path / "out")
    (tmp_path / "out").mkdir()
    with pytest.raises(TraceError, match="already exists"):
        merge_bundles(paths, tmp_path / "out")


def test_split_shards_merge_with_split_ones_only(tmp_path):
    """A split shard merged with an unsplit one left the latter's requests in neither split:
    calibrate, simulate and check read 41 of 120 and never said why."""
    from asd.traces.split import split_bundle

    paths, _ = _shards(tmp_path, n_shards=2, n=120)
    split_bundle(paths[0], test_frac=0.3, seed=0)
    with pytest.raises(TraceError, match=rf"{paths[0]} is split \(calibration/test\) but {paths[1]} is not: merged, "
                                         rf"{paths[1]}'s requests would be in neither split"):
        merge_bundles(paths, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    split_bundle(paths[1], test_frac=0.3, seed=0)
    merged = merge_bundles(paths, tmp_path / "out")
    assert merged.read("requests", ["split"]).column("split").null_count == 0


def _with_record(path, **record):
    file = path / "manifest.json"
    manifest = json.loads(file.read_text())
    manifest["record"] = {"fingerprint": path.name, "drafts": "all", "label": "agreement", **record}
    file.write_text(json.dumps(manifest))


def test_shards_recorded_with_other_options_are_refused_and_a_missing_shard_is_named(tmp_path):
    """A --drafts none shard beside a --drafts all one merged into a bundle whose manifest said
    'drafts: all' (shard 0's record, fingerprint and slice included); shard 2 of 3 left out
    merged without a word."""
    from click.testing import CliRunner

    from asd.cli import main

    paths, _ = _shards(tmp_path)
    for i, path in enumerate(paths):
        _with_record(path, shard=f"{i}/3", drafts="none" if i == 1 else "all")
    with pytest.raises(TraceError, match=r"shard1: recorded with --drafts none, .*shard0 with --drafts all"):
        merge_bundles(paths, tmp_path / "out")
    _with_record(paths[1], shard="1/3")
    result = CliRunner().invoke(main, ["traces", "merge", str(paths[0]), str(paths[1]), "-o", str(tmp_path / "two")])
    assert result.exit_code == 0, result.output
    assert "warning: shard 2/3 of the recording is not among the bundles merged" in result.output
    merged = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert merged["record"] == {"drafts": "all", "label": "agreement"}  # not shard 0's fingerprint or slice
    assert merged["provenance"]["missing_shards"] == ["2/3"]
    whole = merge_bundles(paths, tmp_path / "all")
    assert "missing_shards" not in whole.manifest["provenance"]


def test_shards_whose_drafts_count_acceptance_differently_are_refused(tmp_path):
    """The merged manifest took the first shard's draft_acceptance: which one the 1,000 drafts were
    read as hung on the order of the arguments."""
    paths, _ = _shards(tmp_path, n_shards=2)
    file = paths[0] / "manifest.json"
    manifest = json.loads(file.read_text())
    file.write_text(json.dumps(dict(manifest, draft_acceptance="sps_steps")))
    for order in (paths, paths[::-1]):
        with pytest.raises(TraceError, match=r"n_accepted as '(sps_steps|longest_prefix)'.*draft_acceptance"):
            merge_bundles(order, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    file = paths[1] / "manifest.json"
    file.write_text(json.dumps(dict(json.loads(file.read_text()), draft_acceptance="sps_steps")))
    assert merge_bundles(paths[::-1], tmp_path / "out").manifest["draft_acceptance"] == "sps_steps"


def test_a_shard_written_by_another_tool_merges(tmp_path):
    """Columns in another order and nullable fields (what a pandas export writes) make a valid
    bundle; merge concatenated the raw tables and raised pyarrow's 'Schema ... was different'."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths, (requests, outputs, _) = _shards(tmp_path, n_shards=2)
    table = pq.read_table(paths[1] / "outputs.parquet")
    table = table.select(table.column_names[::-1])
    pq.write_table(table.cast(pa.schema([f.with_nullable(True) for f in table.schema])), paths[1] / "outputs.parquet")
    manifest = json.loads((paths[1] / "manifest.json").read_text())
    manifest.pop("validation", None)  # its file hashes no longer match: checked in full
    (paths[1] / "manifest.json").write_text(json.dumps(manifest))
    assert validate_bundle(paths[1]) == []
    merged = merge_bundles(paths, tmp_path / "all")
    back = _sorted(merged.read("outputs", outputs.column_names))
    assert back.equals(_sorted(outputs.cast(back.schema)))
