"""MMLU-Pro (TIGER-AI-Lab's published 5-shot CoT outputs, as tidied in shared/data/mmlu_pro):
one tier per model, quality = exact-match correctness of the extracted answer letter.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from asd.errors import TraceError
from asd.traces.bundle import new_manifest, sampling_per_tier
from asd.traces.importers.base import (
    PARAMS_B_RULE,
    TOKEN_ESTIMATE_RULE,
    ImportedTrace,
    Importer,
    complete_ladder_requests,
    estimate_tokens,
    estimate_tokens_from_chars,
    in_request_order,
    parse_json_cell,
    parse_model_list,
    read_ladder_rows,
    read_request_table,
    require_files,
    tiers_named,
)

SOURCE = {
    "repo": "TIGER-AI-Lab/MMLU-Pro",
    "commit": "f418b116db00b065c2aea046518d8fcf74d39872",
    "paths": ["eval_results/model_outputs_<model>_5shots.zip"],
    "license": "Apache-2.0 (repo); MMLU-Pro data MIT",
}
LABEL_RULE = (
    "quality = the archive's own `correct`: 1.0 if the answer letter MMLU-Pro extracted from the CoT "
    "output equals the reference letter the model was graded against, else 0.0 (no extracted letter "
    "counts as wrong; strict accuracy). That key is questions.parquet's `answer` except on about 30 "
    "questions for a few models (82 of the archive's rows, e.g. Llama-3.1's question 143), kept as "
    "published so that means equal per_model_accuracy.csv"
)
LETTERS = "ABCDEFGHIJ"


OUTPUT_KINDS = {"correct": "boolean", "generated_text": "string", "generated_chars": "integer"}
QUESTION_KINDS = {"category": "string", "question": "string", "options": "string", "answer": "string"}


def format_prompt(question: str, options: list) -> str:
    """The question followed by its lettered options (the 5-shot CoT preamble is not in the data)."""
    return question + "\n" + "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(options))


def parse_options(value, path: Path, question_id: str) -> list:
    options = parse_json_cell(value, path, "options", f"question {question_id}")
    if not isinstance(options, list) or len(options) > len(LETTERS):
        raise TraceError(f"{path}, column 'options': question {question_id}: not a JSON list of up to {len(LETTERS)} options")
    return options


class MmluProImporter(Importer):
    name = "mmlu-pro"
    summary = ("MMLU-Pro's published CoT outputs (tidied Parquet, as in shared/data/mmlu_pro): one tier per --models "
               "name, quality = correct")
    source_kind = "directory"
    options = ("models", "drop_incomplete")
    required = ("models",)

    def load(self, src: Path, *, models: str | None = None, drop_incomplete: bool = False) -> ImportedTrace:
        src = self.check_source(src)
        require_files(src, ("questions.parquet", "outputs.parquet"), "an MMLU-Pro export")
        names = parse_model_list(models)
        outputs_file = src / "outputs.parquet"
        rows = read_ladder_rows(outputs_file, names, OUTPUT_KINDS, "question_id")
        keep, dropped = complete_ladder_requests(rows, names, drop_incomplete, str(outputs_file))

        questions_file = src / "questions.parquet"
        questions = read_request_table(
            questions_file, "question_id", keep, QUESTION_KINDS, ("question", "options", "answer"),
            "no question {!r} (it has outputs)",
        )
        prompts = [
            format_prompt(question, parse_options(options, questions_file, qid))
            for qid, question, options in zip(keep, questions["question"], questions["options"])
        ]
        requests = pd.DataFrame(
            {
                "request_id": keep,
                "prompt": prompts,
                "task": questions["category"].to_numpy(),
                "reference": questions["answer"].to_numpy(),
            }
        )

        rows = in_request_order(rows, keep)
        # The question and its options as the bundle's prompt holds them: a lower bound (the
        # harness's 5-shot CoT prefix is not in the data), where a null count would make every
        # tier a cascade visits read its prompt for free under the `params` and profile costs.
        prompt_tokens = estimate_tokens(requests.set_index("request_id")["prompt"])
        # Some models' archives keep only the extracted letter (empty CoT text): not recorded.
        recorded = rows["generated_chars"] > 0
        # A null `correct` is an unlabelled output: null quality and accepted, never a guess.
        correct = rows["correct"].astype("boolean")
        outputs = pd.DataFrame(
            {
                "request_id": rows["request_id"],
                "tier": rows["tier"],
                "output": rows["generated_text"].where(recorded, None),
                "n_prompt_tokens": prompt_tokens.reindex(rows["request_id"]).to_numpy(),
                "n_output_tokens": estimate_tokens_from_chars(rows["generated_chars"].where(recorded)),
                "quality": correct.astype("Float32"),
                "accepted": correct,
                "label_source": pd.Series("exact_match", index=rows.index).where(correct.notna(), None),
            }
        )
        tiers = tiers_named(names)
        manifest = new_manifest(
            tiers,
            label_rule=LABEL_RULE,
            estimated_columns=["outputs.n_prompt_tokens", "outputs.n_output_tokens"],
            sampling=sampling_per_tier(tiers, {"prompting": "5-shot chain of thought (MMLU-Pro evaluation harness)"}),
            provenance={
                "importer": self.name,
                "source": SOURCE,
                "source_dir": str(src.resolve()),
                "arguments": {"models": names, "drop_incomplete": drop_incomplete},
                "token_estimate_rule": {
                    "outputs.n_prompt_tokens": TOKEN_ESTIMATE_RULE + " of the question and its options (the "
                                               "harness's 5-shot CoT prefix is not in the data and not counted)",
                    "outputs.n_output_tokens": TOKEN_ESTIMATE_RULE + " of the CoT text"},
                "params_b_rule": PARAMS_B_RULE,
                "dropped_incomplete_requests": dropped,
            },
        )
        return ImportedTrace(manifest, requests, outputs, report={"dropped_incomplete": dropped})
