import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from asd.cli import main
from asd.errors import TraceError
from asd.traces.importers import import_trace
from asd.traces.importers.base import check_columns, read_source
from tests.traces.importers.tiny_sources import SOURCES, replace_column, write_source


def _source(tmp_path, fmt, change=None):
    tables, options = SOURCES[fmt]
    return write_source(tmp_path / "src", tables(), change), options


def _cli_import(fmt, src, out, options):
    args = ["traces", "import", fmt, str(src), "-o", str(out)]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", value]
    return CliRunner().invoke(main, args)


def _all_files():
    return [(fmt, name) for fmt, (tables, _) in SOURCES.items() for name in tables()]


@pytest.mark.parametrize("fmt, name", _all_files())
def test_garbage_parquet_is_one_error_line_naming_the_file_and_nothing_is_written(tmp_path, fmt, name):
    src, options = _source(tmp_path, fmt)
    (src / name).write_text("x")
    with pytest.raises(TraceError, match=rf"^{src / name}: not a readable Parquet file \("):
        import_trace(fmt, src, tmp_path / "b", **options)
    result = _cli_import(fmt, src, tmp_path / "b", options)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {src / name}: not a readable Parquet file")
    assert not (tmp_path / "b").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src"]


# One required column per source file, taken away or given the wrong type.
MISSING = [
    ("mmlu-pro", "questions.parquet", "category", "string"),
    ("mmlu-pro", "outputs.parquet", "correct", "boolean"),
    ("alpaca-eval", "prompts.parquet", "instruction", "string"),
    ("alpaca-eval", "outputs.parquet", "output", "string"),
    ("alpaca-eval", "annotations.parquet", "preference", "number"),
    ("option-logits", "questions.parquet", "answer", "string"),
    ("option-logits", "option_logits.parquet", "pred", "string"),
    ("spec-bench", "questions.parquet", "turns", "list of strings"),
    ("spec-bench", "decoding_traces.parquet", "accept_lengths", "list of integers"),
]


@pytest.mark.parametrize("fmt, name, column, kind", MISSING)
def test_a_missing_required_column_is_named_with_its_file(tmp_path, fmt, name, column, kind):
    src, options = _source(tmp_path, fmt, (name, lambda t: t.drop_columns([column])))
    result = _cli_import(fmt, src, tmp_path / "b", options)
    assert result.exit_code == 2
    assert result.output == f"error: {src / name}, column {column!r}: missing (expected {kind})\n"
    assert not (tmp_path / "b").exists()


WRONG_TYPE = [
    ("mmlu-pro", "outputs.parquet", "correct", pa.array(["True", "False"] * 3 + ["True"], pa.string()), "boolean", "string"),
    ("mmlu-pro", "questions.parquet", "question_id", pa.array([70.0, 71.0, 72.0]), "id", "double"),
    ("alpaca-eval", "outputs.parquet", "prompt_idx", pa.array(["0", "1", "2"] * 2), "integer", "string"),
    ("alpaca-eval", "annotations.parquet", "preference", pa.array(["1"] * 8), "number", "string"),
    ("option-logits", "option_logits.parquet", "logit_C", pa.array(["0.1"] * 5), "number", "string"),
    ("option-logits", "questions.parquet", "choices", pa.array([1, 2], pa.int64()), "string", "int64"),
    ("spec-bench", "decoding_traces.parquet", "turn", pa.array(["0"] * 7), "integer", "string"),
    ("spec-bench", "questions.parquet", "turns", pa.array(["a", "b"]), "list of strings", "string"),
]


@pytest.mark.parametrize("fmt, name, column, values, kind, found", WRONG_TYPE)
def test_a_column_of_the_wrong_type_is_named_with_its_file(tmp_path, fmt, name, column, values, kind, found):
    src, options = _source(tmp_path, fmt, (name, lambda t: replace_column(t, column, values)))
    with pytest.raises(TraceError) as caught:
        import_trace(fmt, src, tmp_path / "b", **options)
    assert str(caught.value) == f"{src / name}, column {column!r}: expected {kind}, found {found}"
    assert not (tmp_path / "b").exists()


def test_kinds_accept_any_string_width_integer_size_and_an_all_null_column(tmp_path):
    path = tmp_path / "t.parquet"
    table = pa.table(
        {
            "a": pa.array(["x"], pa.string()),
            "b": pa.array(["y"], pa.large_string()),
            "c": pa.array([1], pa.int8()),
            "d": pa.array([None], pa.null()),
            "e": pa.array([[1, 2]], pa.large_list(pa.int32())),
        }
    )
    pq.write_table(table, path)
    kinds = {"a": "string", "b": "string", "c": "number", "d": "boolean", "e": "list of integers"}
    check_columns(path, kinds)
    frame = read_source(path, {"a": "id", "c": "integer"})
    assert list(frame.columns) == ["a", "c"] and frame["c"].tolist() == [1]
    with pytest.raises(TraceError, match=r"column 'd': 1 null value \(a value is required\)"):
        read_source(path, {"d": "boolean"}, non_null=("d",))


# A null text a kept request needs: (format, file, column, the request key named).
NULL_TEXT = [
    ("option-logits", "questions.parquet", "context", "id 1"),
    ("option-logits", "questions.parquet", "question", "id 1"),
    ("option-logits", "questions.parquet", "choices", "id 1"),
    ("option-logits", "questions.parquet", "answer", "id 1"),
    ("mmlu-pro", "questions.parquet", "question", "question_id 71"),
    ("mmlu-pro", "questions.parquet", "options", "question_id 71"),
    ("mmlu-pro", "questions.parquet", "answer", "question_id 71"),
    ("alpaca-eval", "prompts.parquet", "instruction", "prompt_idx 1"),
]


@pytest.mark.parametrize("fmt, name, column, key", NULL_TEXT)
def test_a_null_text_of_a_kept_request_names_the_column_and_the_request(tmp_path, fmt, name, column, key):
    """A null context became the prompt text 'nan\\n...'; a null answer, question or instruction
    was reported as the request having no row at all ("no question with id 1 (it has logits)")."""
    def null_row_1(table):
        values = table.column(column).to_pylist()
        values[1] = None
        return replace_column(table, column, pa.array(values, table.schema.field(column).type))

    src, options = _source(tmp_path, fmt, (name, null_row_1))
    result = _cli_import(fmt, src, tmp_path / "b", options)
    assert result.exit_code == 2
    assert result.output == f"error: {src / name}, column {column!r}: null for {key} (a value is required)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_a_json_cell_naming_a_key_twice_names_the_file_column_request_and_key(tmp_path):
    """option-logits `choices` {"A": "Sadness", "A": "Joy"} kept "Joy" as option A silently."""
    def repeated_letter(table):
        values = table.column("choices").to_pylist()
        values[1] = '{"A": "Sadness", "A": "Joy", "B": "Anger"}'
        return replace_column(table, "choices", pa.array(values, table.schema.field("choices").type))

    src, options = _source(tmp_path, "option-logits", ("questions.parquet", repeated_letter))
    result = _cli_import("option-logits", src, tmp_path / "b", options)
    assert result.exit_code == 2
    assert result.output == (f"error: {src / 'questions.parquet'}, column 'choices': id 1: key 'A' appears twice "
                             "in one object\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


@pytest.mark.parametrize("fmt, name, key, value, message", [
    ("option-logits", "questions.parquet", "id", 1, "no question with id 1 (it has logits)"),
    ("mmlu-pro", "questions.parquet", "question_id", 71, "no question '71' (it has outputs)"),
    ("alpaca-eval", "prompts.parquet", "prompt_idx", 1, "no instruction for prompt_idx 1 (it has outputs)"),
])
def test_a_request_without_a_row_still_says_so(tmp_path, fmt, name, key, value, message):
    src, options = _source(tmp_path, fmt, (name, lambda t: t.filter(pc.not_equal(t.column(key), value))))
    result = _cli_import(fmt, src, tmp_path / "b", options)
    assert result.exit_code == 2 and result.output == f"error: {src / name}: {message}\n", result.output


@pytest.mark.parametrize("fmt, name", [("option-logits", "option_logits.parquet"), ("mmlu-pro", "outputs.parquet"),
                                       ("alpaca-eval", "outputs.parquet"), ("spec-bench", "decoding_traces.parquet")])
def test_a_source_file_with_no_rows_is_said_to_be_empty(tmp_path, fmt, name):
    """It was "...; variants are " (option-logits), "unknown model ...; available: " or
    "--source-repo ...: not in ...; available: ", each with an empty list."""
    src, options = _source(tmp_path, fmt, (name, lambda t: t.slice(0, 0)))
    result = _cli_import(fmt, src, tmp_path / "b", options)
    assert result.exit_code == 2 and result.output == f"error: {src / name}: empty (no rows)\n", result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
