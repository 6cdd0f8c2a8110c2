"""MMLU-Pro (TIGER-AI-Lab's published 5-shot CoT outputs, as tidied in shared/data/mmlu_pro):
one tier per model, quality = exact-match correctness of the extracted answer letter.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from asd.errors import TraceError
from asd.traces.bundle import new_manifest
from asd.traces.importers.base import (
    TOKEN_ESTIMATE_RULE,
    ImportedTrace,
    Importer,
    check_known_models,
    complete_requests,
    estimate_tokens_from_chars,
    parse_model_list,
    parse_params_b,
    require_files,
)

SOURCE = {
    "repo": "TIGER-AI-Lab/MMLU-Pro",
    "commit": "f418b116db00b065c2aea046518d8fcf74d39872",
    "paths": ["eval_results/model_outputs_<model>_5shots.zip"],
    "license": "Apache-2.0 (repo); MMLU-Pro data MIT",
}
LABEL_RULE = (
    "quality = 1.0 if the answer letter MMLU-Pro extracted from the CoT output equals the "
    "reference letter, else 0.0 (no extracted letter counts as wrong; strict accuracy)"
)
LETTERS = "ABCDEFGHIJ"


def format_prompt(question: str, options_json: str) -> str:
    """The question followed by its lettered options (the 5-shot CoT preamble is not in the data)."""
    options = json.loads(options_json)
    return question + "\n" + "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(options))


class MmluProImporter(Importer):
    name = "mmlu-pro"
    summary = "shared/data/mmlu_pro: one tier per --models name, quality = correct"
    source_kind = "directory"
    options = ("models", "drop_incomplete")
    required = ("models",)

    def load(self, src: Path, *, models: str | None = None, drop_incomplete: bool = False) -> ImportedTrace:
        src = self.check_source(src)
        require_files(src, ("questions.parquet", "outputs.parquet"), "an MMLU-Pro export")
        names = parse_model_list(models)
        outputs_file = src / "outputs.parquet"
        available = pc.unique(pq.read_table(outputs_file, columns=["model"]).column("model")).to_pylist()
        check_known_models(names, available, str(outputs_file))

        rows = pq.read_table(
            outputs_file,
            columns=["model", "question_id", "correct", "generated_text", "generated_chars"],
            filters=[("model", "in", names)],
        ).to_pandas()
        rows["tier"] = rows["model"].map({name: i for i, name in enumerate(names)}).astype("int16")
        rows["request_id"] = rows["question_id"].astype(str)
        keep, dropped = complete_requests(rows[["request_id", "tier"]], len(names), names, drop_incomplete, str(outputs_file))

        questions = pd.read_parquet(src / "questions.parquet")
        questions["request_id"] = questions["question_id"].astype(str)
        questions = questions.set_index("request_id").reindex(keep)
        missing = questions.index[questions["question"].isna()]
        if len(missing):
            raise TraceError(f"{src / 'questions.parquet'}: no question {missing[0]!r} (it has outputs)")
        requests = pd.DataFrame(
            {
                "request_id": keep,
                "prompt": [format_prompt(q, o) for q, o in zip(questions["question"], questions["options"])],
                "task": questions["category"].to_numpy(),
                "reference": questions["answer"].to_numpy(),
            }
        )

        order = pd.Series(range(len(keep)), index=keep)
        rows = rows[rows["request_id"].isin(order.index)]
        rows = rows.assign(_order=rows["request_id"].map(order)).sort_values(["_order", "tier"]).reset_index(drop=True)
        # Some models' archives keep only the extracted letter (empty CoT text): not recorded.
        recorded = rows["generated_chars"] > 0
        outputs = pd.DataFrame(
            {
                "request_id": rows["request_id"],
                "tier": rows["tier"],
                "output": rows["generated_text"].where(recorded, None),
                "n_output_tokens": estimate_tokens_from_chars(rows["generated_chars"].where(recorded)),
                "quality": rows["correct"].astype("float32"),
                "accepted": rows["correct"].astype(bool),
                "label_source": "exact_match",
            }
        )
        tiers = [{"name": n, "model_id": n, "params_b": parse_params_b(n)} for n in names]
        manifest = new_manifest(
            tiers,
            label_rule=LABEL_RULE,
            estimated_columns=["outputs.n_output_tokens"],
            sampling={"prompting": "5-shot chain of thought (MMLU-Pro evaluation harness)"},
            provenance={
                "importer": self.name,
                "source": SOURCE,
                "source_dir": str(src.resolve()),
                "arguments": {"models": names, "drop_incomplete": drop_incomplete},
                "token_estimate_rule": {"outputs.n_output_tokens": TOKEN_ESTIMATE_RULE + " of the CoT text"},
                "params_b_rule": "parsed from the model name (asd.traces.importers.base.parse_params_b)",
                "dropped_incomplete_requests": dropped,
            },
        )
        return ImportedTrace(manifest, requests, outputs, report={"dropped_incomplete": dropped})
