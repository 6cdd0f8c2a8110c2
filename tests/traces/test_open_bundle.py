"""open_bundle: the one validated way to open a bundle; the validation stamp's fast path;
writers validate what they write; OS errors become one line naming the path."""

import json
import os
import shutil
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from asd.cli import main
from asd.errors import TraceError
from asd.traces import validate as V
from asd.traces.bundle import STAMP_KEY, Bundle, builtin_bundle_path, open_bundle
from asd.traces.columns import read_arrays
from asd.traces.split import split_bundle, split_request_ids
from asd.traces.summary import summarize_bundle
from asd.traces.synth import write_synthetic_bundle
from asd.traces.validate import validate_bundle


@pytest.fixture()
def synth(tmp_path):
    return write_synthetic_bundle(tmp_path / "s", 200, 3, seed=0)


def test_every_public_reader_takes_a_bundle_a_path_or_builtin(synth):
    opened = open_bundle("builtin")
    assert isinstance(opened, Bundle) and opened.validated and open_bundle(opened) is opened
    for bundle in ("builtin", builtin_bundle_path(), opened):
        assert summarize_bundle(bundle)["n_requests"] == 600
        assert read_arrays(bundle, "outputs", ["tier"])["tier"].size == 1200
        assert validate_bundle(bundle) == []
    n_test = split_bundle(synth.path, 0.3, 0)["n_test"]
    assert len(split_request_ids(str(synth.path), "test")) == n_test


def test_a_bundle_asd_wrote_is_stamped_and_trusted_while_its_files_match(synth, monkeypatch):
    stamp = json.loads((synth.path / "manifest.json").read_text())[STAMP_KEY]
    assert set(stamp["files"]) == {"requests.parquet", "outputs.parquet", "drafts.parquet"}
    assert synth.validated and STAMP_KEY not in synth.manifest
    calls = []
    monkeypatch.setattr(V, "validate_bundle", lambda *a, **k: calls.append(a) or [])
    open_bundle(synth.path)
    assert calls == []  # stamp matched: no full check

    # a bad sector: same size, same mtime, different bytes -> the full check runs
    file = synth.path / "outputs.parquet"
    info = file.stat()
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    os.utime(file, ns=(info.st_atime_ns, info.st_mtime_ns))
    open_bundle(synth.path)
    assert len(calls) == 1


def test_the_full_check_catches_the_bad_sector_the_stamp_flagged(synth):
    file = synth.path / "outputs.parquet"
    data = bytearray(file.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 8):
        data[i] ^= 0xFF
    file.write_bytes(bytes(data))
    with pytest.raises(TraceError, match=r"outputs\.parquet: unreadable Parquet"):
        open_bundle(synth.path)


def test_an_edited_manifest_no_longer_matches_its_stamp(synth):
    file = synth.path / "manifest.json"
    manifest = json.loads(file.read_text())
    dropped = manifest["tiers"].pop()  # the tables now name a tier the manifest lacks
    manifest["sampling"].pop(dropped["name"], None)
    file.write_text(json.dumps(manifest))
    with pytest.raises(TraceError, match="outside the manifest's 2 tiers"):
        open_bundle(synth.path)


def test_read_only_commands_never_write_a_stamp(tmp_path):
    shutil.copytree(builtin_bundle_path(), tmp_path / "b")
    before = {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}
    for command in (["validate"], ["inspect"]):
        assert CliRunner().invoke(main, ["traces", *command, str(tmp_path / "b")]).exit_code == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()} == before


def test_split_refuses_an_output_that_fails_validation_and_changes_nothing(synth, monkeypatch):
    import asd.traces.split as S

    real = S.write_parquet
    monkeypatch.setattr(S, "write_parquet", lambda table, file: real(pa.concat_tables([table, table.slice(0, 1)]), file))
    before = {p.name: p.read_bytes() for p in synth.path.iterdir()}
    with pytest.raises(TraceError, match="not split, the result fails validation: requests.parquet: column 'request_id' row 200: duplicate"):
        split_bundle(synth.path, 0.3, 0)
    assert {p.name: p.read_bytes() for p in synth.path.iterdir()} == before
    with pytest.raises(TraceError, match="fails validation"):
        split_bundle(synth.path, 0.3, 0, out=synth.path.parent / "copy")
    assert sorted(p.name for p in synth.path.parent.iterdir()) == ["s"]


def test_split_in_place_restamps_and_keeps_the_other_tables(synth):
    before = {f: (synth.path / f).read_bytes() for f in ("outputs.parquet", "drafts.parquet")}
    split_bundle(synth.path, 0.3, 0)
    assert {f: (synth.path / f).read_bytes() for f in before} == before
    assert V.stamp_matches(open_bundle(synth.path, validate=False))
    assert [p.name for p in synth.path.iterdir() if p.name.startswith(".")] == []


def test_writing_into_a_path_under_a_file_is_one_error_line(synth, tmp_path):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "out"
    result = CliRunner().invoke(main, ["traces", "split", str(synth.path), "-o", str(out)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {out}: cannot write (")


@pytest.fixture()
def full_disk(tmp_path):
    """A 64 KiB tmpfs: a real ENOSPC. Needs root and a kernel that lets us mount."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_while_writing_is_one_error_line_and_leaves_nothing(full_disk):
    result = CliRunner().invoke(main, ["traces", "split", "builtin", "-o", str(full_disk / "copy")])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0] == f"error: {full_disk / 'copy'}: cannot write (No space left on device)"
    assert list(full_disk.iterdir()) == []


def test_a_directory_where_the_manifest_should_be_is_not_called_missing(tmp_path):
    shutil.copytree(builtin_bundle_path(), tmp_path / "b")
    (tmp_path / "b" / "manifest.json").unlink()
    (tmp_path / "b" / "manifest.json").mkdir()
    with pytest.raises(TraceError, match=r"manifest\.json: a directory where a file is expected$"):
        open_bundle(tmp_path / "b")


def test_a_null_request_id_is_reported_without_a_numpy_warning(tmp_path, recwarn):
    shutil.copytree(builtin_bundle_path(), tmp_path / "b")
    file = tmp_path / "b" / "requests.parquet"
    table = pq.read_table(file)
    ids = table.column("request_id").to_pylist()
    ids[2] = None
    pq.write_table(table.set_column(0, pa.field("request_id", pa.string()), pa.array(ids, pa.string())), file)
    problems = validate_bundle(tmp_path / "b")
    assert [str(p) for p in problems][:1] == ["requests.parquet: column 'request_id' row 2: null (this column is required)"]
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
