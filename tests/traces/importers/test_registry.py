import json
import sys

import click
import pytest
from click.testing import CliRunner

from asd.cli import main, traces_import
from asd.errors import TraceError
from asd.traces.importers import IMPORTERS, import_trace
from asd.traces.importers.base import Importer, parse_params_b

ROWS = [
    {"request_id": "a", "model": "small", "output": "x", "quality": 0.0},
    {"request_id": "a", "model": "big", "output": "y", "quality": 1.0},
]


def _file(tmp_path, rows=ROWS):
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_format_choice_is_the_registry():
    fmt = next(p for p in traces_import.params if p.name == "fmt")
    assert isinstance(fmt.type, click.Choice) and list(fmt.type.choices) == list(IMPORTERS)
    assert all(issubclass(cls, Importer) and cls.name == name for name, cls in IMPORTERS.items())


@pytest.mark.parametrize(
    "name, params_b",
    [
        ("Llama-2-13b-hf", 13.0),
        ("Meta-Llama-3_1-70B-Instruct", 70.0),
        ("Qwen-1_8B", 1.8),
        ("Qwen1.5-110B", 110.0),
        ("vicuna-68m", 0.068),
        ("TempNet-LLaMA2-Chat-7B-v0.1", 7.0),
        ("Mixtral-8x7B-v0.1", None),
        ("c4ai-command-r-v01", None),
        ("Phi-3-mini-4k-instruct", None),
        ("llama3:8b", 8.0),  # Ollama's NAME:TAG
        ("qwen2.5:72b-instruct", 72.0),
        ("mixtral:8x7b", None),
        ("Infinity-Instruct-3M-0625-Llama3-70B", None),  # 3M is its data set: two sizes, no guess
        ("7M-Gen-Llama3_1-70B", None),
        ("Qwen2-7B-7b-chat", 7.0),  # the same size twice is still one size
    ],
)
def test_params_are_parsed_from_model_names_or_left_unknown(name, params_b):
    assert parse_params_b(name) == params_b


def test_cli_import_prints_the_summary_and_writes_json(tmp_path):
    src = _file(tmp_path)
    result = CliRunner().invoke(
        main,
        ["traces", "import", "jsonl", str(src), "--tiers", "small:1,big:8", "-o", str(tmp_path / "b"),
         "--json", str(tmp_path / "s.json")],
    )
    assert result.exit_code == 0, result.output
    assert f"imported jsonl -> {tmp_path / 'b'}: 1 request x 2 tiers" in result.output
    assert "tier 1  big" in result.output and "mean quality 1.0000" in result.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["n_requests"] == 1 and summary["tiers"][0]["mean_quality"] == 0.0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tiers", "small,big"], "error: {src}, line 1, column 'model': unknown model 'tiny'; tiers are small, big"),
        ([], "error: jsonl needs --tiers"),
        (["--tiers", "small,big", "--annotator", "x"], "error: --annotator does not apply to jsonl (it is for alpaca-eval)"),
    ],
)
def test_cli_bad_input_is_one_error_line_and_nonzero_exit(tmp_path, args, message):
    src = _file(tmp_path, [{"request_id": "a", "model": "tiny", "output": "x"}])
    result = CliRunner().invoke(main, ["traces", "import", "jsonl", str(src), "-o", str(tmp_path / "b"), *args])
    assert result.exit_code == 2
    assert result.output.strip() == message.format(src=src)
    assert "Traceback" not in result.output and not (tmp_path / "b").exists()


def test_cli_missing_source_is_one_line(tmp_path):
    result = CliRunner().invoke(
        main, ["traces", "import", "csv", str(tmp_path / "gone.csv"), "--tiers", "a,b", "-o", str(tmp_path / "b")]
    )
    assert result.exit_code == 2 and result.output.strip() == f"error: {tmp_path / 'gone.csv'}: no such file"


def test_cli_unknown_format_is_refused_by_click(tmp_path):
    result = CliRunner().invoke(main, ["traces", "import", "parquet", "x", "-o", str(tmp_path / "b")])
    assert result.exit_code != 0 and "'parquet' is not one of" in result.output


def test_cli_import_of_the_mmlu_pro_llama31_ladder(shared_data, tmp_path):
    result = CliRunner().invoke(
        main,
        ["traces", "import", "mmlu-pro", str(shared_data / "mmlu_pro"), "--models",
         "Meta-Llama-3_1-8B,Meta-Llama-3_1-70B", "-o", str(tmp_path / "b")],
    )
    assert result.exit_code == 0, result.output
    assert "mean quality 0.3649" in result.output and "mean quality 0.5247" in result.output


def test_a_bundle_failing_validation_is_not_put_in_place(tmp_path, monkeypatch):
    # A validator that always objects: the importers' own checks keep real bad data from
    # reaching validation, and the point here is that its verdict is obeyed.
    seen = []

    def validate_bundle(path, max_problems=20, stamp=False):
        seen.append(path)
        return ["outputs.parquet, column 'quality', row 0: out of range"]

    monkeypatch.setattr("asd.traces.importers.validate_bundle", validate_bundle)
    with pytest.raises(TraceError, match="fails validation: outputs.parquet, column 'quality', row 0"):
        import_trace("jsonl", _file(tmp_path), tmp_path / "b", tiers="small,big")
    assert seen and not (tmp_path / "b").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.jsonl"]


def test_installed_style_subprocess_reports_bad_input_on_stderr_with_exit_2(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    src = _file(tmp_path, [{"request_id": "a", "model": "small", "output": "x", "quality": 2}])
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run(
        [sys.executable, "-m", "asd.cli", "traces", "import", "jsonl", str(src), "--tiers", "small,big",
         "-o", str(tmp_path / "b")],
        cwd=repo, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: {src}, line 1, column 'quality': quality 2.0 is outside [0, 1]\n"


def test_summary_counts_recorded_outputs_per_tier_not_rows(tmp_path):
    rows = [
        {"request_id": "a", "model": "small", "output": None},
        {"request_id": "a", "model": "big", "output": "y"},
        {"request_id": "b", "model": "small", "output": None, "quality": 1.0},  # a label is recorded
        {"request_id": "b", "model": "big", "output": None, "e2e_ms": 5.0},  # so is a timing
    ]
    summary = import_trace("jsonl", _file(tmp_path, rows), tmp_path / "b", tiers="small,big")
    assert [t["n_outputs"] for t in summary["tiers"]] == [1, 2]
    assert [t["n_labelled"] for t in summary["tiers"]] == [1, 0]
