import json
import math
import re

import pytest

from asd.errors import ConfigError, TraceError
from asd.traces.bundle import open_bundle
from asd.traces.importers import import_trace, load_trace
from asd.traces.importers.tabular import parse_tiers

TIERS = "llama-8b:8:1,llama-70b:70:4"


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD_ROWS = [
    {"request_id": "q1", "model": "llama-8b", "output": "Paris", "quality": 1.0, "prompt": "Capital of France?",
     "task": "geo", "reference": "Paris", "n_prompt_tokens": 5, "n_output_tokens": 2,
     "token_logprobs": [-0.1, -0.3], "ttft_ms": 12.5, "e2e_ms": 40.0},
    {"request_id": "q1", "model": "llama-70b", "output": "Paris.", "quality": 1, "accepted": True,
     "n_output_tokens": 3, "token_logprobs": [-0.01, -0.02, 0]},
    {"request_id": 7, "tier": 0, "output": "4", "quality": 0.0, "accepted": False, "prompt": "2+3?"},
    {"request_id": 7, "tier": 1, "output": "5", "quality": 0.75, "prompt": "2+3?"},
]


def test_jsonl_rows_land_in_the_bundle_in_ladder_order(tmp_path):
    src = _jsonl(tmp_path / "runs.jsonl", GOOD_ROWS)
    summary = import_trace("jsonl", src, tmp_path / "b", tiers=TIERS)
    bundle = open_bundle(tmp_path / "b")
    assert bundle.tier_names == ["llama-8b", "llama-70b"]
    assert [t["params_b"] for t in bundle.tiers] == [8.0, 70.0]
    assert [t["tensor_parallel"] for t in bundle.tiers] == [1, 4]
    requests = bundle.to_pandas("requests")
    assert requests["request_id"].tolist() == ["q1", "7"]
    assert requests["prompt"].tolist() == ["Capital of France?", "2+3?"]
    assert requests["reference"].tolist()[0] == "Paris"
    out = bundle.to_pandas("outputs")
    assert out["tier"].tolist() == [0, 1, 0, 1]
    assert out["quality"].tolist() == [1.0, 1.0, 0.0, 0.75]
    assert out["accepted"].tolist()[1:3] == [True, False]
    assert out["accepted"].isna().tolist() == [True, False, False, True]
    assert out["token_logprobs"][0].tolist() == pytest.approx([-0.1, -0.3])
    assert out["mean_logprob"][1] == pytest.approx(-0.01)
    assert out["e2e_ms"][0] == 40.0 and math.isnan(out["e2e_ms"][1])
    assert summary["n_requests"] == 2 and summary["tiers"][1]["mean_quality"] == pytest.approx(0.875)
    provenance = bundle.manifest["provenance"]
    assert provenance["importer"] == "jsonl" and len(provenance["source_sha256"]) == 64


def test_csv_cells_are_typed_like_jsonl_values(tmp_path):
    src = tmp_path / "runs.csv"
    src.write_text(
        "request_id,model,output,quality,accepted,n_output_tokens,token_logprobs,e2e_ms,task\n"
        'a,llama-8b,"hi, there",0.5,true,2,"[-0.5, -1]",10,chat\n'
        "a,llama-70b,yo,,no,,,,chat\n"
    )
    import_trace("csv", src, tmp_path / "b", tiers=TIERS)
    out = open_bundle(tmp_path / "b").to_pandas("outputs")
    assert out["output"].tolist() == ["hi, there", "yo"]
    assert out["quality"][0] == 0.5 and math.isnan(out["quality"][1])
    assert out["accepted"].tolist() == [True, False]
    assert out["token_logprobs"][0].tolist() == [-0.5, -1.0]
    assert out["n_output_tokens"].tolist()[0] == 2


def test_token_counts_left_out_are_estimated_from_the_text_and_listed(tmp_path):
    """Own results often carry no token counts. Left null, every cost model priced each answer
    as a prefill alone (a 300-word chat answer took 5 ms on a 7B tier, p50 = p99 everywhere), so
    they are estimated as the public importers do, and the manifest says where and how."""
    rows = [
        {"request_id": "a", "model": "llama-8b", "prompt": "x" * 41, "output": "y" * 9},  # 11 and 3 tokens
        {"request_id": "a", "model": "llama-70b", "output": "z", "token_logprobs": [-0.1, -0.2, -0.3]},
        {"request_id": "b", "model": "llama-8b", "output": "w" * 100, "n_prompt_tokens": 7, "n_output_tokens": 5},
        {"request_id": "b", "model": "llama-70b", "output": None},
    ]
    summary = import_trace("jsonl", _jsonl(tmp_path / "r.jsonl", rows), tmp_path / "b", tiers=TIERS)
    bundle = open_bundle(tmp_path / "b")
    out = bundle.to_pandas("outputs")
    assert out["n_prompt_tokens"].tolist()[:3] == [11, 11, 7]  # given counts are kept
    assert math.isnan(out["n_prompt_tokens"][3])  # request b has no prompt text to count
    assert out["n_output_tokens"].tolist()[:3] == [3, 3, 5]  # the logprobs' count, not ceil(1 / 4)
    assert math.isnan(out["n_output_tokens"][3])  # no output recorded: nothing to count
    assert bundle.manifest["estimated_columns"] == ["outputs.n_output_tokens", "outputs.n_prompt_tokens"]
    rule = bundle.manifest["provenance"]["token_estimate_rule"]
    assert rule["outputs.n_output_tokens"].startswith("where the file gives none (2 of 4): the number of token_logprobs")
    assert rule["outputs.n_prompt_tokens"].startswith("where the file gives none (2 of 4): ceil(characters / 4)")
    assert summary["estimated_columns"] == bundle.manifest["estimated_columns"]
    # a file with every count given estimates nothing and says nothing
    import_trace("jsonl", _jsonl(tmp_path / "g.jsonl", GOOD_ROWS[:2]), tmp_path / "g", tiers=TIERS)
    assert open_bundle(tmp_path / "g").manifest["estimated_columns"] == ["outputs.n_prompt_tokens"]  # q1's 70B row


def test_a_count_left_out_follows_the_entropies_and_mismatched_lists_are_named(tmp_path):
    """token_entropy alone gives the count (the text's estimate disagreed with it, and the bundle
    then failed validation); logprobs and entropies of different lengths are one line naming both."""
    rows = [{"request_id": "a", "model": "llama-8b", "output": "abc", "token_entropy": [0.1] * 5},
            {"request_id": "a", "model": "llama-70b", "output": "x"}]
    import_trace("jsonl", _jsonl(tmp_path / "e.jsonl", rows), tmp_path / "b", tiers=TIERS)
    assert open_bundle(tmp_path / "b").to_pandas("outputs")["n_output_tokens"].tolist() == [5, 1]
    rows[0]["token_logprobs"] = [-0.1] * 4
    with pytest.raises(TraceError, match=r"line 1, column 'token_entropy': 5 items but token_logprobs has 4"):
        import_trace("jsonl", _jsonl(tmp_path / "m.jsonl", rows), tmp_path / "m", tiers=TIERS)


def test_rows_labelled_by_accepted_alone_count_as_labelled(tmp_path):
    """The summary said '0 labelled, mean quality -' for a file labelled by `accepted` only,
    which calibrate and simulate use as labels."""
    src = tmp_path / "runs.csv"
    src.write_text("request_id,model,output,accepted\na,llama-8b,x,true\na,llama-70b,y,false\n"
                   "b,llama-8b,x,false\nb,llama-70b,y,true\nc,llama-8b,x,\nc,llama-70b,y,true\n")
    summary = import_trace("csv", src, tmp_path / "b", tiers=TIERS)
    assert [t["n_labelled"] for t in summary["tiers"]] == [2, 3]
    assert [t["n_judged"] for t in summary["tiers"]] == [0, 0]
    # quality as inspect and the simulator score it: the judged quality, else the accepted flag
    assert [t["mean_quality"] for t in summary["tiers"]] == [0.5, pytest.approx(2 / 3)]
    assert [t["acceptance_rate"] for t in summary["tiers"]] == [0.5, pytest.approx(2 / 3)]
    from asd.traces.importers import summary_lines

    assert summary_lines(summary)[1].endswith("3 outputs  2 labelled  accepted 0.5000")
    # a mix: one judged answer and three rejected ones is 0.25, not the judged one's 1.0
    src.write_text("request_id,model,output,quality,accepted\na,llama-8b,x,1.0,\nb,llama-8b,x,,false\n"
                   "c,llama-8b,x,,false\nd,llama-8b,x,,false\n" + "".join(f"{r},llama-70b,y,1,\n" for r in "abcd"))
    mixed = import_trace("csv", src, tmp_path / "m", tiers=TIERS)["tiers"][0]
    assert (mixed["n_labelled"], mixed["n_judged"], mixed["mean_quality"]) == (4, 1, 0.25)
    from asd.traces.summary import summarize_bundle

    assert summarize_bundle(open_bundle(tmp_path / "m"))["tiers"][0]["mean_quality"] == 0.25  # inspect says the same


def test_drop_incomplete_drops_and_counts_requests_missing_a_tier(tmp_path):
    rows = GOOD_ROWS + [{"request_id": "lonely", "model": "llama-70b", "output": "x"}]
    src = _jsonl(tmp_path / "runs.jsonl", rows)
    with pytest.raises(TraceError, match=r"request 'lonely' has no row for tier 'llama-8b'.*--drop-incomplete"):
        load_trace("jsonl", src, tiers=TIERS)
    summary = import_trace("jsonl", src, tmp_path / "b", tiers=TIERS, drop_incomplete=True)
    assert summary["dropped_incomplete"] == 1 and summary["n_requests"] == 2
    assert open_bundle(tmp_path / "b").manifest["provenance"]["dropped_incomplete_requests"] == 1


def _row(**changes):
    row = {"request_id": "r", "model": "llama-8b", "output": "x"}
    row.update(changes)
    return {k: v for k, v in row.items() if v is not ...}


# (rows of the file, what the one-line message must contain)
BAD_JSONL = {
    "unknown model lists the tiers": ([_row(model="gpt-5")], r"line 1, column 'model': unknown model 'gpt-5'; tiers are llama-8b, llama-70b"),
    "NaN quality": (['{"request_id": "r", "model": "llama-8b", "output": "x", "quality": NaN}'], r"line 1, column 'quality': quality is NaN"),
    "quality above 1": ([_row(quality=1.5)], r"line 1, column 'quality': quality 1.5 is outside \[0, 1\]"),
    "quality as text": ([_row(quality="good")], r"line 1, column 'quality': expected a number, got str 'good'"),
    "quality as bool": ([_row(quality=True)], r"column 'quality': expected a number, got bool"),
    "duplicate request and tier": ([_row(), _row(output="y")], r"line 2: duplicate row for request 'r' at tier 'llama-8b' \(first at line 1\)"),
    "same pair by name then index": ([_row(), _row(model=..., tier=0)], r"line 2: duplicate row"),
    "tier out of range": ([_row(model=..., tier=2)], r"line 1, column 'tier': 2 is out of range; tiers are 0..1"),
    "tier and model disagree": ([_row(tier=1)], r"column 'tier': 1 disagrees with model 'llama-8b'"),
    "negative token count": ([_row(n_output_tokens=-1)], r"column 'n_output_tokens': expected a whole number ≥ 0"),
    "fractional token count": ([_row(n_output_tokens=2.5)], r"column 'n_output_tokens': expected a whole number"),
    # past int32, the bundle's count type (it escaped as pandas' "cannot safely cast" TypeError)
    "token count past int32": ([_row(n_output_tokens=1e12)], r"column 'n_output_tokens': 1000000000000.0 exceeds 2147483647"),
    "positive logprob": ([_row(token_logprobs=[-0.1, 0.2])], r"column 'token_logprobs': item 1 is 0.2; a logprob is ≤ 0"),
    "negative entropy": ([_row(token_entropy=[0.3, -0.1])], r"column 'token_entropy': item 1 is -0.1; an entropy is finite \(as float32\) and ≥ 0"),
    # finite in float64, inf once stored as float32 (it was imported and validated as inf)
    "entropy past float32": ([_row(token_entropy=[0.3, 1e39])], r"column 'token_entropy': item 1 is 1e\+39; an entropy is finite \(as float32\)"),
    "logprobs not a list": ([_row(token_logprobs=-0.1)], r"column 'token_logprobs': expected a list of numbers"),
    "logprob count differs": ([_row(token_logprobs=[-0.1], n_output_tokens=2)], r"column 'token_logprobs': 1 items but n_output_tokens is 2"),
    "negative time": ([_row(e2e_ms=-3)], r"column 'e2e_ms': expected a time ≥ 0"),
    "accepted as text": ([_row(accepted="yes")], r"column 'accepted': expected true/false"),
    "output missing": ([{"request_id": "r", "model": "llama-8b"}], r"line 1, column 'output': missing"),
    "request id missing": ([{"model": "llama-8b", "output": "x"}], r"line 1, column 'request_id': missing"),
    "neither model nor tier": ([{"request_id": "r", "output": "x"}], r"line 1, column 'model': missing"),
    "unknown column": ([_row(qualty=1)], r"line 1: unknown column 'qualty'"),
    "prompt differs between tiers": ([_row(prompt="a"), _row(model="llama-70b", prompt="b")], r"line 2, column 'prompt': differs from the prompt given for request 'r' at line 1"),
    "invalid JSON": (['{"request_id": "r", "output": x}'], r"line 1, near column 'output', character 31: invalid JSON \(Expecting value\)$"),
    "not an object": (['[1, 2]'], r"line 1: expected a JSON object, got list"),
    # json kept the last value silently: this row imported as quality 1
    "a key twice": (['{"request_id": "r", "model": "llama-8b", "output": "x", "quality": 0, "quality": 1}'],
                    r"runs.jsonl, line 1: key 'quality' appears twice in one object \(which value is meant\?\)$"),
    "nested too deeply": (["[" * 100_000], r"line 1: invalid JSON \(nested too deeply\)"),  # was a RecursionError
    "empty file": ([], r"runs.jsonl: empty \(no rows\)"),
}


BAD_CSV = {
    "NaN quality": ("request_id,model,output,quality\nr,llama-8b,x,nan\n", r"line 2, column 'quality': quality is NaN"),
    "quality not a number": ("request_id,model,output,quality\nr,llama-8b,x,high\n", r"line 2, column 'quality': 'high' is not a number"),
    "unknown model": ("request_id,model,output\nr,llama-7b,x\n", r"line 2, column 'model': unknown model 'llama-7b'; tiers are llama-8b, llama-70b"),
    "tier not a number": ("request_id,tier,output\nr,first,x\n", r"line 2, column 'tier': 'first' is not a number"),
    "ragged row": ("request_id,model,output\nr,llama-8b\n", r"line 2: 2 fields, the header has 3"),
    "duplicate": ("request_id,model,output\nr,llama-8b,x\nr,llama-8b,y\n", r"line 3: duplicate row for request 'r'"),
    # a quoted answer over three lines: its record starts on line 2 (it ends on 4), the next on line 5
    "in a multi-line record": ('request_id,model,output\nr,llama-7b,"one\ntwo\nthree"\n',
                               r"line 2, column 'model': unknown model 'llama-7b'"),
    "after a multi-line record": ('request_id,model,output\nr,llama-8b,"one\ntwo\nthree"\nr,llama-7b,x\n',
                                  r"line 5, column 'model': unknown model 'llama-7b'"),
    "accepted not boolean": ("request_id,model,output,accepted\nr,llama-8b,x,maybe\n", r"line 2, column 'accepted': 'maybe' is not true/false"),
    "logprobs not JSON": ("request_id,model,output,token_logprobs\nr,llama-8b,x,-0.1;-0.2\n", r"column 'token_logprobs': '-0.1;-0.2' is not a JSON list"),
    "header only": ("request_id,model,output\n", r"runs.csv: empty \(no rows\)"),
    "prompt tokens past int32": ("request_id,model,output,n_prompt_tokens\nr,llama-8b,x,3000000000\n",
                                 r"line 2, column 'n_prompt_tokens': '3000000000' exceeds 2147483647"),
    "header typo": ("request_id,model,output,qualty\nr,llama-8b,x,1\n", r"runs.csv, line 1: unknown column 'qualty'"),
    "entropy count differs": ("request_id,model,output,n_output_tokens,token_entropy\nr,llama-8b,x,2,[0.5]\n",
                              r"line 2, column 'token_entropy': 1 items but n_output_tokens is 2"),
}


def _bad_source(tmp_path, fmt, case):
    """The bad source file of one BAD_JSONL / BAD_CSV case, written, and the message expected."""
    src = tmp_path / f"runs.{fmt}"
    if fmt == "jsonl":
        rows, expected = BAD_JSONL[case]
        _jsonl(src, rows)
    else:
        text, expected = BAD_CSV[case]
        src.write_text(text)
    return src, expected


@pytest.mark.parametrize(
    "fmt, case", [("jsonl", case) for case in BAD_JSONL] + [("csv", case) for case in BAD_CSV]
)
def test_bad_tabular_input_is_one_line_naming_file_line_and_column(tmp_path, fmt, case):
    src, expected = _bad_source(tmp_path, fmt, case)
    with pytest.raises(TraceError) as info:
        import_trace(fmt, src, tmp_path / "b", tiers=TIERS)
    message = str(info.value)
    assert "\n" not in message and str(src) in message
    assert re.search(expected, message), message
    assert not (tmp_path / "b").exists()
    assert [p.name for p in tmp_path.iterdir()] == [src.name]  # nothing half-written


def test_missing_file_is_named(tmp_path):
    with pytest.raises(TraceError, match=r"nope.jsonl: no such file"):
        import_trace("jsonl", tmp_path / "nope.jsonl", tmp_path / "b", tiers=TIERS)


def test_output_under_a_file_names_the_file(tmp_path):
    src = _jsonl(tmp_path / "runs.jsonl", GOOD_ROWS)
    with pytest.raises(NotADirectoryError, match=f"{src} is a file, not a directory") as info:
        import_trace("jsonl", src, src / "bundles" / "b", tiers=TIERS)  # not mkdir's bare "File exists"
    assert info.value.filename == str(src / "bundles" / "b")


def test_existing_bundle_is_kept_unless_overwrite(tmp_path):
    src = _jsonl(tmp_path / "runs.jsonl", GOOD_ROWS)
    import_trace("jsonl", src, tmp_path / "b", tiers=TIERS)
    with pytest.raises(TraceError, match="already exists"):
        import_trace("jsonl", src, tmp_path / "b", tiers=TIERS)
    import_trace("jsonl", src, tmp_path / "b", tiers="llama-8b:8:2,llama-70b:70:8", overwrite=True)
    assert [t["tensor_parallel"] for t in open_bundle(tmp_path / "b").tiers] == [2, 8]


@pytest.mark.parametrize(
    "spec, message",
    [
        (None, "--tiers is required"),
        ("a:-1", "PARAMS_B must be a positive number"),
        ("a:nan", "PARAMS_B must be a positive number"),
        ("a:8:0", "TP must be a positive integer"),
        ("a:8:²", "TP must be a positive integer"),  # a digit to str.isdigit, not to int()
        # a size typed with its unit would read as part of the name, and the name's own size win
        ("llama-8b:7.5b", r"the name states 8B in 'llama-8b' and 7.5B in '7.5b'; give PARAMS_B as a number "
                          r"\(llama-8b:7.5\)"),
        ("llama-70b:65b::4", "the name states 70B in 'llama-70b' and 65B in '65b'"),
        ("a:8:1:2", "is not NAME"),
        ("a,a", "'a' appears twice"),
        ("a,,b", "is not NAME"),
    ],
)
def test_bad_tiers_spec_is_a_config_error(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_tiers(spec)


def test_tiers_spec_keeps_ladder_order_and_optional_fields():
    tiers = parse_tiers("llama-8b:8:1, llama-70b:70:4,llama-405b")
    assert [t["name"] for t in tiers] == ["llama-8b", "llama-70b", "llama-405b"]
    assert tiers[1] == {"name": "llama-70b", "model_id": "llama-70b", "params_b": 70.0, "tensor_parallel": 4}
    # a size left out is read from the name, as every importer reads it; a name without one has none
    assert tiers[2]["params_b"] == 405.0 and "tensor_parallel" not in tiers[2]
    assert "params_b" not in parse_tiers("small,large")[0]
    assert parse_tiers("Qwen-1_8B,x")[0]["params_b"] == 1.8


def test_tiers_spec_trims_spaces_around_every_field_as_around_every_item():
    # "small-1b :1" named a tier "small-1b " that no row's model matched
    tiers = parse_tiers("small-1b :1, big-7b : 7 : 2 ,c")
    assert tiers[0] == {"name": "small-1b", "model_id": "small-1b", "params_b": 1.0}
    assert tiers[1] == {"name": "big-7b", "model_id": "big-7b", "params_b": 7.0, "tensor_parallel": 2}


def test_tier_names_may_hold_a_colon_as_ollama_names_do():
    # the fields start at the first part after a ':' that is a number or empty
    tiers = parse_tiers("llama3:8b,llama3:70b:70:4,qwen2.5:72b-instruct::2,mixtral:8x7b:46.7,a:x")
    assert [t["name"] for t in tiers] == ["llama3:8b", "llama3:70b", "qwen2.5:72b-instruct", "mixtral:8x7b", "a:x"]
    assert [t.get("params_b") for t in tiers] == [8.0, 70.0, 72.0, 46.7, None]
    assert [t.get("tensor_parallel") for t in tiers] == [None, 4, 2, None, None]


def test_jsonl_rows_name_colon_tiers(tmp_path):
    rows = [{**r, "model": {"llama-8b": "llama3:8b", "llama-70b": "llama3:70b"}[r["model"]]} if "model" in r else r
            for r in GOOD_ROWS]
    import_trace("jsonl", _jsonl(tmp_path / "runs.jsonl", rows), tmp_path / "b", tiers="llama3:8b,llama3:70b::4")
    bundle = open_bundle(tmp_path / "b")
    assert bundle.tier_names == ["llama3:8b", "llama3:70b"]
    assert [t["params_b"] for t in bundle.tiers] == [8.0, 70.0]
    assert bundle.to_pandas("outputs")["tier"].tolist() == [0, 1, 0, 1]


def test_option_for_another_format_is_refused(tmp_path):
    src = _jsonl(tmp_path / "runs.jsonl", GOOD_ROWS)
    with pytest.raises(ConfigError, match="--models does not apply to jsonl"):
        load_trace("jsonl", src, tiers=TIERS, models="a,b")


def test_csv_saved_with_a_byte_order_mark_reads_its_header(tmp_path):
    src = tmp_path / "excel.csv"
    src.write_bytes("request_id,tier,output\nr,0,x\nr,1,y\n".encode("utf-8-sig"))
    trace = load_trace("csv", src, tiers="a,b")
    assert trace.requests["request_id"].tolist() == ["r"]


def test_params_b_may_override_a_size_read_from_a_name_but_not_contradict_one_stated(tmp_path):
    src = _jsonl(tmp_path / "runs.jsonl", GOOD_ROWS)
    with pytest.raises(ConfigError, match=r"--params-b: llama-8b=9 contradicts --tiers llama-8b:8; give the size once"):
        import_trace("jsonl", src, tmp_path / "b", tiers=TIERS, params_b="llama-8b=9")
    assert not (tmp_path / "b").exists()
    # the same size twice is no contradiction; a size the name gave (llama-70b → 70) may be replaced
    import_trace("jsonl", src, tmp_path / "b", tiers="llama-8b:8,llama-70b", params_b="llama-8b=8,llama-70b=65")
    manifest = open_bundle(tmp_path / "b").manifest
    assert [t["params_b"] for t in manifest["tiers"]] == [8.0, 65.0]
    assert manifest["provenance"]["params_b_stated"] == {"llama-8b": 8.0}


def test_an_id_given_as_a_number_and_as_a_string_is_refused_rather_than_merged(tmp_path):
    rows = [{"request_id": 1, "tier": 0, "output": "x"}, {"request_id": "1", "tier": 1, "output": "y"}]
    with pytest.raises(TraceError, match=r"line 2, column 'request_id': '1' is a string here but a number at "
                                         r"line 1; write each id one way"):
        load_trace("jsonl", _jsonl(tmp_path / "mixed.jsonl", rows), tiers="a,b")
    # ids written one way, as numbers, are one request
    rows[1]["request_id"] = 1
    assert load_trace("jsonl", _jsonl(tmp_path / "numbers.jsonl", rows), tiers="a,b").requests["request_id"].tolist() == ["1"]


def test_a_file_cut_off_mid_row_is_named_as_such(tmp_path):
    # the writer stopped inside the last row: no closing quote, brace or newline
    src = tmp_path / "runs.jsonl"
    src.write_text('{"request_id": "r", "model": "llama-8b", "output": "x"}\n{"request_id": "r", "model": "llama-70b", "outp')
    with pytest.raises(TraceError, match=r"runs.jsonl, line 2, near column 'model', character 43: invalid JSON "
                                         r"\(Unterminated string starting at\); the file ends inside it \(cut off\?\)$"):
        load_trace("jsonl", src, tiers=TIERS)
    # stopped after a whole value, at the line's end: cut off too
    src.write_text('{"request_id": "r", "model": "llama-8b", "output": "x"')
    with pytest.raises(TraceError, match=r"invalid JSON \(Expecting ',' delimiter\); the file ends inside it"):
        load_trace("jsonl", src, tiers=TIERS)
    # a typo mid-line in a file written without a final newline is not a cut-off file
    src.write_text('{"request_id": "r", "model": "llama-8b", "output": x, "quality": 1}')
    with pytest.raises(TraceError, match=r"near column 'output', character 52: invalid JSON \(Expecting value\)$"):
        load_trace("jsonl", src, tiers=TIERS)
