"""Prompt files for `asd record`: JSONL, CSV, Parquet; bad files give one line naming the spot."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from asd.errors import ConfigError, TraceError
from asd.live.prompts import load_prompts, parse_shard, shard_of
from tests.live.conftest import write_jsonl

ROWS = [{"request_id": "x", "prompt": "What is 1 plus 1?", "reference": "2", "task": "arithmetic"},
        {"request_id": "y", "prompt": "Say hi."}]


def test_jsonl_csv_and_parquet_load_the_same_prompts(tmp_path):
    jsonl = load_prompts(write_jsonl(tmp_path / "p.jsonl", ROWS))
    pd.DataFrame(ROWS).to_csv(tmp_path / "p.csv", index=False)
    pd.DataFrame(ROWS).to_parquet(tmp_path / "p.parquet")
    for other in (load_prompts(tmp_path / "p.csv"), load_prompts(tmp_path / "p.parquet")):
        assert other.to_dict("records") == jsonl.to_dict("records")
    assert jsonl.loc[1, "reference"] is None and jsonl.loc[1, "task"] is None


def test_request_ids_default_to_row_numbers(tmp_path):
    frame = load_prompts(write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": "b"}]))
    assert list(frame["request_id"]) == ["r000000", "r000001"]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"prompt": "a"}\nnot json\n', "line 2, character 1: invalid JSON"),
        ('{"text": "a"}\n', "no 'prompt' column"),
        ('{"prompt": ""}\n', r"bad.jsonl, line 1: 'prompt' is empty"),
        ('\n{"request_id": "a", "prompt": "x"}\n{"request_id": "a", "prompt": "y"}\n',
         r"bad.jsonl, line 3: duplicate request_id 'a' \(first at line 2\)"),
        ('[1, 2]\n', "line 1: expected a JSON object"),
        # the last prompt was recorded without a word
        ('{"prompt": "a"}\n{"prompt": "b", "prompt": "c"}\n', r"bad.jsonl, line 2: key 'prompt' appears twice in one object"),
        ('{"prompt": "a"}\n{"prompt": "bad \\ud800 here"}\n', r"bad.jsonl, line 2: 'prompt' holds a lone surrogate"),
    ],
)
def test_malformed_prompt_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(TraceError, match=message):
        load_prompts(path)


@pytest.mark.parametrize(
    "name, content, message",
    [
        # Lines count from 1 with the header as line 1, as `asd traces import csv` counts them.
        ("bad.csv", "request_id,prompt\na,hello\nb,\n", r"bad.csv, line 3: 'prompt' is empty"),
        ("bad.csv", 'request_id,prompt\na,"two\nlines"\na,x\n', r"bad.csv, line 4: duplicate request_id 'a' \(first at line 2\)"),
        ("bad.csv", "request_id,prompt\na\n", r"bad.csv, line 2: 1 fields, the header has 2"),
        # the models were asked the word 'prompt', then the bundle write raised a traceback
        ("bad.csv", "request_id,prompt,prompt\na,hi,ho\n", r"bad.csv, line 1: column 'prompt' appears twice"),
        ("bad.csv", "request_id,prompt,request_id\na,hi,b\n", r"bad.csv, line 1: column 'request_id' appears twice"),
    ],
)
def test_csv_prompt_errors_name_the_line_counting_from_one(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(TraceError, match=message):
        load_prompts(path)


def test_parquet_prompt_errors_name_the_row_counting_from_one(tmp_path):
    import pandas as pd

    pd.DataFrame({"request_id": ["a", "b"], "prompt": ["x", " "]}).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(TraceError, match=r"p.parquet, row 2: 'prompt' is empty"):
        load_prompts(tmp_path / "p.parquet")


@pytest.mark.parametrize("name", ["p.jsonl", "p.csv", "p.parquet"])
def test_an_empty_prompt_file_is_said_to_be_empty(tmp_path, name):
    """0 bytes read as a table without columns, and was refused for having no 'prompt' column."""
    (tmp_path / name).write_text("")
    with pytest.raises(TraceError, match=f"^{re.escape(str(tmp_path / name))}: the prompt file is empty \\(0 bytes\\)$"):
        load_prompts(tmp_path / name)


@pytest.mark.parametrize("name, content", [("p.jsonl", "\n\n"), ("p.csv", "request_id,prompt\n"),
                                           ("p.csv", "request_id,text\n\n"), ("p.parquet", None)])
def test_a_prompt_file_without_rows_says_it_holds_no_prompts(tmp_path, name, content):
    path = tmp_path / name
    if content is None:
        pd.DataFrame({"prompt": pd.Series([], dtype=str)}).to_parquet(path)
    else:
        path.write_text(content)
    with pytest.raises(TraceError, match=f"^{re.escape(str(path))}: the prompt file holds no prompts \\(no rows\\)$"):
        load_prompts(path)


@pytest.mark.parametrize("name, content", [("p.jsonl", '{"text": "a"}\n'), ("p.csv", "request_id,text\na,hello\n")])
def test_rows_without_a_prompt_column_still_say_so(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    with pytest.raises(TraceError, match=f"^{re.escape(str(tmp_path / name))}: no 'prompt' column \\(columns are "):
        load_prompts(tmp_path / name)


def mmlu_pro_questions(**nulls) -> pd.DataFrame:
    """Two MMLU-Pro style questions (question_id, question, JSON options, answer letter, category);
    `nulls` gives a column's values where they differ from the well-formed ones."""
    questions = {"question_id": [70, 71], "question": ["2 + 2?", "3 + 3?"], "options": ['["4", "5"]', '["5", "6"]'],
                 "answer": ["A", "B"], "category": ["math", "math"]}
    return pd.DataFrame({**questions, **nulls})


@pytest.mark.parametrize("column", ["answer", "question"])
def test_a_question_set_with_a_null_gold_answer_or_question_is_refused_naming_file_column_and_question(tmp_path, column):
    """A null answer letter was read as no reference: the question was labelled by agreement with the
    last tier (a null question asked the models 'None'); the MMLU-Pro importer refuses both."""
    path = tmp_path / "questions.parquet"
    mmlu_pro_questions(**{column: [mmlu_pro_questions()[column][0], None]}).to_parquet(path)
    with pytest.raises(TraceError, match=f"^{re.escape(str(path))}, row 2, column '{column}': null for question_id 71 "
                                         r"\(a value is required\)$"):
        load_prompts(path)
    csv = tmp_path / "questions.csv"
    mmlu_pro_questions(**{column: [None, "x"]}).to_csv(csv, index=False)
    with pytest.raises(TraceError, match=f"^{re.escape(str(csv))}, line 2, column '{column}': null for question_id 70 "):
        load_prompts(csv)


def test_a_prompt_file_of_our_own_may_leave_a_reference_out(tmp_path):
    """Only a question set's gold answer is required: a prompt without `reference` is labelled by agreement."""
    pd.DataFrame(ROWS).to_parquet(tmp_path / "p.parquet")
    assert list(load_prompts(tmp_path / "p.parquet")["reference"]) == ["2", None]
    mmlu_pro_questions().to_parquet(tmp_path / "questions.parquet")
    assert list(load_prompts(tmp_path / "questions.parquet")["reference"]) == ["A", "B"]


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(TraceError, match="prompt file not found"):
        load_prompts(tmp_path / "none.jsonl")
    (tmp_path / "p.txt").write_text("hi")
    with pytest.raises(TraceError, match="unknown prompt file type"):
        load_prompts(tmp_path / "p.txt")


def test_shard_spec_parsing_and_stability():
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) is None
    for bad in ("4/4", "x/2", "1", "-1/2"):
        with pytest.raises(ConfigError):
            parse_shard(bad)
    # The slice depends on the request id alone: fixed values pin it across versions.
    assert [shard_of(f"r{i}", 4) for i in range(8)] == [2, 1, 1, 0, 0, 2, 1, 3]
    counts = [sum(shard_of(f"q{i}", 4) == k for i in range(4000)) for k in range(4)]
    assert min(counts) > 850  # roughly even


def test_public_question_sets_load_as_prompts(shared_data):
    mt = load_prompts(shared_data / "mt_bench" / "questions.parquet")
    assert len(mt) == 80 and mt["request_id"].is_unique and mt["reference"].isna().all()
    assert mt["prompt"].str.len().min() > 10 and mt["task"].notna().all()
    mmlu = load_prompts(shared_data / "mmlu_pro" / "questions.parquet")
    assert len(mmlu) > 10000 and mmlu["request_id"].is_unique
    first = mmlu.iloc[0]
    assert "\nA. " in first["prompt"] and first["prompt"].endswith("Answer with the letter of the correct option.")
    assert first["reference"] in "ABCDEFGHIJ" and first["task"].startswith("multiple_choice/")
