"""Tiny hand-written sources in the column layout of the shared/data exports (see
shared/data/README.md), so every importer is tested end to end without the real data.
Each `*_tables()` returns {file name: Arrow table}; `write_source` puts them in a directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

STR = pa.large_string()  # as in the shared exports


def write_source(directory: Path, tables: dict[str, pa.Table], change=None) -> Path:
    """Write `tables` into `directory`; `change` = (file name, edit) rewrites one table first."""
    if change is not None:
        name, edit = change
        tables = {**tables, name: edit(tables[name])}
    directory.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        pq.write_table(table, directory / name)
    return directory


def replace_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


MMLU_MODELS = ["Llama-2-7b-hf", "Llama-2-13b-hf"]


def mmlu_pro_tables() -> dict[str, pa.Table]:
    questions = pa.table(
        {
            "question_id": pa.array([70, 71, 72], pa.int64()),
            "category": pa.array(["math", "law", "math"], STR),
            "src": pa.array(["ori_mmlu-a", "ori_mmlu-b", "stemez-c"], STR),
            "question": pa.array(["2 + 2 = ?", "Is a contract binding?", "3 * 3 = ?"], STR),
            "options": pa.array([json.dumps(["3", "4"]), json.dumps(["Yes", "No", "Maybe"]), json.dumps(["6", "9"])], STR),
            "answer": pa.array(["B", "A", "B"], STR),
        }
    )
    # 13b has no CoT text for question 71 (letter only) and no correctness for question 72;
    # a third model outside the ladder must not leak in.
    outputs = pa.table(
        {
            "model": pa.array(["Llama-2-7b-hf"] * 3 + ["Llama-2-13b-hf"] * 3 + ["gemma-7b"], STR),
            "question_id": pa.array([70, 71, 72, 70, 71, 72, 70], pa.int64()),
            "pred": pa.array(["A", "A", None, "B", "A", "B", "B"], STR),
            "correct": pa.array([False, True, False, True, True, None, True], pa.bool_()),
            "no_pred": pa.array([False, False, True, False, False, False, False], pa.bool_()),
            "generated_text": pa.array(["The answer is (A)", "Yes. (A)", "hmm", "2+2=4 (B)", "", "9 (B)", "(B)"], STR),
            "generated_chars": pa.array([17, 8, 3, 9, 0, 5, 3], pa.int64()),
        }
    )
    return {"questions.parquet": questions, "outputs.parquet": outputs}


ALPACA_MODELS = ["llama-2-7b-chat-hf", "llama-2-13b-chat-hf"]


def alpaca_eval_tables() -> dict[str, pa.Table]:
    prompts = pa.table(
        {
            "prompt_idx": pa.array([0, 1, 2], pa.int64()),
            "dataset": pa.array(["helpful_base", "koala", "oasst"], STR),
            "instruction": pa.array(["Name a fruit.", "Write a haiku about rain.", "Why is the sky blue?"], STR),
        }
    )
    outputs = pa.table(
        {
            "model": pa.array(ALPACA_MODELS[:1] * 3 + ALPACA_MODELS[1:] * 3, STR),
            "family": pa.array(["llama-2-chat"] * 6, STR),
            "params_b": pa.array([7.0, 7.0, 7.0, None, None, None], pa.float64()),  # 13b: size from its name
            "prompt_idx": pa.array([0, 1, 2, 0, 1, 2], pa.int64()),
            "output": pa.array(["Apple", "Rain falls", "Rayleigh scattering.", "Pear", "Soft rain", "Scattering"], STR),
            "output_chars": pa.array([5, 10, 20, 4, 9, 10], pa.int64()),
            "output_words": pa.array([1, 2, 2, 1, 2, 1], pa.int64()),
        }
    )
    n = 8
    annotations = pa.table(
        {
            "model": pa.array(ALPACA_MODELS[:1] * 3 + ALPACA_MODELS[1:] * 3 + ALPACA_MODELS[:1] * 2, STR),
            "annotator": pa.array(["alpaca_eval_gpt4"] * 6 + ["weighted_alpaca_eval_gpt4_turbo"] * 2, STR),
            "prompt_idx": pa.array([0, 1, 2, 0, 1, 2, 0, 1], pa.int64()),
            "baseline": pa.array(["text_davinci_003"] * 6 + ["gpt4_1106_preview"] * 2, STR),
            "generator_2": pa.array(ALPACA_MODELS[:1] * 3 + ALPACA_MODELS[1:] * 3 + ALPACA_MODELS[:1] * 2, STR),
            # 13b: a null preference at prompt 1 and a stale judged text at prompt 2.
            "preference": pa.array([1.0, 2.0, 1.5, 0.0, None, 2.0, 1.25, 1.75], pa.float64()),
            "price_per_example": pa.array([0.01] * n, pa.float64()),
            "time_per_example": pa.array([1.5] * n, pa.float64()),
            "output_2_matches_model_outputs": pa.array([True, True, True, True, True, False, True, True], pa.bool_()),
        }
    )
    return {"prompts.parquet": prompts, "outputs.parquet": outputs, "annotations.parquet": annotations}


OPTION_MODELS = ["Qwen-1_8B", "Qwen-7B"]
LOGITS = {
    ("Qwen-1_8B", 0): [2.0, 1.0, 0.0, 0.0, -1.0, -1.0],
    ("Qwen-1_8B", 1): [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],
    ("Qwen-7B", 0): [0.0, 3.0, 0.0, 0.0, 0.0, 0.0],
    ("Qwen-7B", 1): [5.0, 0.0, 0.0, 0.0, 0.0, 0.0],
}


def option_logits_tables() -> dict[str, pa.Table]:
    questions = pa.table(
        {
            "id": pa.array([0, 1], pa.int64()),
            "context": pa.array(["i feel so generous today", "i often feel lonely"], STR),
            "question": pa.array(["Which sentiment best describes the context?"] * 2, STR),
            "choices": pa.array(
                [json.dumps(dict(zip("ABCDEF", ["Sadness", "Joy", "Anger", "Fear", "I don't know", "None"])))] * 2, STR
            ),
            "answer": pa.array(["B", "A"], STR),
            "source": pa.array(["Emotion", "Emotion"], STR),
        }
    )
    keys = list(LOGITS)
    rows = {
        "model": [m for m, _ in keys] + ["Qwen-7B"],
        "prompt_style": ["task"] * 4 + ["base"],  # another variant's row must be filtered out
        "icl_demos": [1] * 4 + [0],
        "id": [i for _, i in keys] + [0],
        **{f"logit_{o}": [LOGITS[k][j] for k in keys] + [9.0] for j, o in enumerate("ABCDEF")},
        "pred": ["A", "A", "B", "A", "A"],
        "correct": [False, True, True, True, False],
        "p_pred": [0.5, 0.2, 0.8, 0.97, 0.99],
    }
    types = {"model": STR, "prompt_style": STR, "icl_demos": pa.int64(), "id": pa.int64(), "pred": STR,
             "correct": pa.bool_(), "p_pred": pa.float32(), **{f"logit_{o}": pa.float32() for o in "ABCDEF"}}
    logits = pa.table({name: pa.array(values, types[name]) for name, values in rows.items()})
    return {"questions.parquet": questions, "option_logits.parquet": logits}


def spec_bench_tables() -> dict[str, pa.Table]:
    questions = pa.table(
        {
            "question_id": pa.array([81, 300], pa.int64()),
            "category": pa.array(["writing", "translation"], STR),
            "turns": pa.array([["Write a blog post.", "Rewrite it as a poem."], ["Translate: Guten Tag"]],
                              pa.list_(pa.string())),
            "n_turns": pa.array([2, 1], pa.int64()),
            "reference": pa.array([None, json.dumps(["Good day"])], STR),
        }
    )
    # (method, question_id, turn, new_tokens, decoding_steps, wall_time_s, accept_lengths, output)
    runs = [
        ("vanilla", "81", 0, 4, 4, 0.08, [1, 1, 1, 1], "Post."),
        ("vanilla", "81", 1, 3, 3, 0.06, [1, 1, 1], "Poem."),
        ("vanilla", "300", 0, 2, 2, 0.04, [1, 1], "Good day"),
        ("sps-68m", "81", 0, 4, 2, 0.05, [3, 1], "Post."),
        ("sps-68m", "81", 1, 3, 1, 0.02, [3], "Poem."),
        ("sps-68m", "300", 0, 2, 2, 0.04, [1, 1], "Good day"),
        ("eagle", "81", 0, 4, 1, 0.01, [4], "Post."),  # a heads method: not a draft tier
    ]
    n = len(runs)
    traces = pa.table(
        {
            "source_repo": pa.array(["yukiki-jc/Spec-Bench"] * n, STR),
            "commit": pa.array(["3b73a28cde526f453b6fb9fe5ca91bc9f0731853"] * n, STR),
            "dataset": pa.array(["spec_bench"] * n, STR),
            "file_model_id": pa.array([f"vicuna-7b-v1.3-{r[0]}-float16-temp-0.0" for r in runs], STR),
            "base_model": pa.array(["vicuna-7b-v1.3"] * n, STR),
            "method": pa.array([r[0] for r in runs], STR),
            "temperature": pa.array([0.0] * n, pa.float64()),
            "question_id": pa.array([r[1] for r in runs], STR),
            "category": pa.array(["writing" if r[1] == "81" else "translation" for r in runs], STR),
            "turn": pa.array([r[2] for r in runs], pa.int64()),
            "new_tokens": pa.array([r[3] for r in runs], pa.int64()),
            "decoding_steps": pa.array([r[4] for r in runs], pa.int64()),
            "wall_time_s": pa.array([r[5] for r in runs], pa.float64()),
            "tokens_per_s": pa.array([r[3] / r[5] for r in runs], pa.float64()),
            "mean_accept_length": pa.array([r[3] / r[4] for r in runs], pa.float64()),
            "accept_lengths": pa.array([r[6] for r in runs], pa.list_(pa.int64())),
            "output": pa.array([r[7] for r in runs], STR),
        }
    )
    return {"questions.parquet": questions, "decoding_traces.parquet": traces}


# format → (tables, the options a plain import needs)
SOURCES = {
    "mmlu-pro": (mmlu_pro_tables, {"models": ",".join(MMLU_MODELS)}),
    "alpaca-eval": (alpaca_eval_tables, {"models": ",".join(ALPACA_MODELS)}),
    "option-logits": (option_logits_tables, {"models": ",".join(OPTION_MODELS)}),
    "spec-bench": (spec_bench_tables, {}),
}
