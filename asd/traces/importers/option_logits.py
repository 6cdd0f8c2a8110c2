"""Multiple-choice option logits (LLM-Uncertainty-Bench emotion task, shared/data/
option_logits_emotion): the answer token's log-probability and the entropy over the six
options become the token-level signals; quality = the chosen option is the gold one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from asd.errors import ConfigError, TraceError
from asd.traces.bundle import new_manifest, sampling_per_tier
from asd.traces.importers.base import (
    PARAMS_B_RULE,
    TOKEN_ESTIMATE_RULE,
    ImportedTrace,
    Importer,
    complete_ladder_requests,
    estimate_tokens,
    in_request_order,
    parse_json_cell,
    parse_model_list,
    read_ladder_rows,
    read_request_table,
    read_source_table,
    require_files,
    require_rows,
    tiers_named,
)

SOURCE = {
    "repo": "colts661/LLM-Uncertainty-Bench",
    "commit": "cfc8c3f4063430b6a5731afbd457c24f0b0b6823",
    "paths": ["data/emotion_10k_4.json", "outputs_base/<model>_emotion_10k_4_<style>_icl<k>.pkl"],
    "license": "fork of smartyfh/LLM-Uncertainty-Bench (MIT); the fork itself has no LICENSE file",
}
OPTIONS = "ABCDEF"
LOGIT_COLUMNS = [f"logit_{o}" for o in OPTIONS]
VARIANT_KINDS = {"model": "string", "prompt_style": "string", "icl_demos": "integer"}
LOGIT_KINDS = {**VARIANT_KINDS, **{column: "number" for column in LOGIT_COLUMNS}, "pred": "string"}
QUESTION_KINDS = {"context": "string", "question": "string", "choices": "string", "answer": "string", "source": "string"}
LABEL_RULE = "quality = 1.0 if the chosen (argmax) option letter equals the gold answer letter, else 0.0"
SIGNAL_RULE = (
    "token_logprobs = [log-softmax of the chosen option's logit over the 6 option letters]; "
    "token_entropy = [entropy (nats) of the softmax over the 6 option letters]"
)


def option_signals(logits: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: log-softmax of the chosen option over all options, and the options' entropy."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    chosen_logprob = log_probs[np.arange(len(logits)), chosen]
    entropy = -(np.exp(log_probs) * log_probs).sum(axis=1)
    return np.minimum(chosen_logprob, 0.0), np.maximum(entropy, 0.0)


def format_prompt(context: str, question: str, choices: dict) -> str:
    return f"{context}\n{question}\n" + "\n".join(f"{k}. {v}" for k, v in choices.items())


def parse_choices(value, path: Path, item_id: str) -> dict:
    choices = parse_json_cell(value, path, "choices", f"id {item_id}")
    if not isinstance(choices, dict):
        raise TraceError(f"{path}, column 'choices': id {item_id}: not a JSON object of lettered options")
    return choices


def check_gold(answer: str, choices: dict, path: Path, item_id: str) -> None:
    """The gold answer is one of the question's option letters (its `choices` keys among A–F:
    the letters a model's answer can be)."""
    letters = [k for k in choices if k in set(OPTIONS)]
    if answer not in letters:
        raise TraceError(
            f"{path}, column 'answer': id {item_id}: {answer!r} is not one of its option letters {', '.join(letters)}"
        )


class OptionLogitsImporter(Importer):
    name = "option-logits"
    summary = ("LLM-Uncertainty-Bench option logits, emotion task (as in shared/data/option_logits_emotion): "
               "answer-token logprob + option entropy, quality = correct")
    source_kind = "directory"
    options = ("models", "prompt_style", "icl_demos", "drop_incomplete")
    required = ("models",)

    def load(
        self,
        src: Path,
        *,
        models: str | None = None,
        prompt_style: str | None = None,
        icl_demos: int | None = None,
        drop_incomplete: bool = False,
    ) -> ImportedTrace:
        src = self.check_source(src)
        require_files(src, ("questions.parquet", "option_logits.parquet"), "an option-logits export")
        # task/1 is the variant that covers the most models (11; the others 5).
        prompt_style = "task" if prompt_style is None else prompt_style
        icl_demos = 1 if icl_demos is None else int(icl_demos)
        names = parse_model_list(models)
        logits_file = src / "option_logits.parquet"
        variant_rows = read_source_table(logits_file, VARIANT_KINDS)
        require_rows(logits_file, variant_rows.num_rows)
        variants = variant_rows.group_by(["prompt_style", "icl_demos"]).aggregate([("model", "distinct")]).to_pylist()
        by_variant = {(v["prompt_style"], v["icl_demos"]): v["model_distinct"] for v in variants}
        if (prompt_style, icl_demos) not in by_variant:
            raise ConfigError(
                f"--prompt-style {prompt_style} --icl-demos {icl_demos}: not in {logits_file}; variants are "
                + ", ".join(f"{s}/{k}" for s, k in sorted(by_variant))
            )
        rows = read_ladder_rows(
            logits_file,
            names,
            LOGIT_KINDS,
            "id",
            available=by_variant[prompt_style, icl_demos],
            where=f"{logits_file} ({prompt_style}/icl{icl_demos})",
            filters=(("prompt_style", "=", prompt_style), ("icl_demos", "=", icl_demos)),
        )
        keep, dropped = complete_ladder_requests(rows, names, drop_incomplete, str(logits_file))

        questions_file = src / "questions.parquet"
        questions = read_request_table(
            questions_file, "id", keep, QUESTION_KINDS, ("context", "question", "choices", "answer"),
            "no question with id {} (it has logits)",
        )
        prompts = []
        for i, c, q, ch, gold in zip(
            keep, questions["context"], questions["question"], questions["choices"], questions["answer"]
        ):
            choices = parse_choices(ch, questions_file, i)
            check_gold(gold, choices, questions_file, i)
            prompts.append(format_prompt(c, q, choices))
        requests = pd.DataFrame(
            {
                "request_id": keep,
                "prompt": prompts,
                "task": questions["source"].to_numpy(),
                "reference": questions["answer"].to_numpy(),
            }
        )
        rows = in_request_order(rows, keep)
        # the prompt as the bundle holds it (in-context demonstrations are not in the data): a
        # null count would make every tier a cascade visits read its prompt for free
        prompt_tokens = estimate_tokens(requests.set_index("request_id")["prompt"])

        # The answer is the data's `pred` (the argmax option letter); its log-softmax is the signal.
        unknown = ~rows["pred"].isin(list(OPTIONS))
        if unknown.any():
            raise TraceError(f"{logits_file}, column 'pred': {rows['pred'][unknown].iloc[0]!r} is not one of {OPTIONS}")
        logits = rows[LOGIT_COLUMNS].to_numpy(dtype=np.float64)
        not_finite = ~np.isfinite(logits)
        if not_finite.any():
            row, option = np.argwhere(not_finite)[0]
            raise TraceError(
                f"{logits_file}, column {LOGIT_COLUMNS[option]!r}: {logits[row, option]} for model "
                f"{rows['model'].iloc[row]!r}, id {rows['request_id'].iloc[row]} (a logit must be a finite number)"
            )
        chosen = rows["pred"].map({o: i for i, o in enumerate(OPTIONS)}).to_numpy()
        logprob, entropy = option_signals(logits, chosen)
        answer = rows["pred"].to_numpy()
        gold = requests.set_index("request_id")["reference"].reindex(rows["request_id"]).to_numpy()
        correct = answer == gold
        outputs = pd.DataFrame(
            {
                "request_id": rows["request_id"],
                "tier": rows["tier"],
                "output": answer,
                "n_prompt_tokens": prompt_tokens.reindex(rows["request_id"]).to_numpy(),
                "n_output_tokens": np.ones(len(rows), dtype=np.int32),  # one option letter
                "token_logprobs": [[float(v)] for v in logprob],
                "token_entropy": [[float(v)] for v in entropy],
                "quality": correct.astype(np.float32),
                "accepted": correct,
                "label_source": "gold_label",
            }
        )
        tiers = tiers_named(names)
        manifest = new_manifest(
            tiers,
            label_rule=LABEL_RULE,
            estimated_columns=["outputs.n_prompt_tokens"],
            sampling=sampling_per_tier(
                tiers, {"prompt_style": prompt_style, "icl_demos": icl_demos, "decoding": "next-token option logits"}
            ),
            provenance={
                "importer": self.name,
                "source": SOURCE,
                "source_dir": str(src.resolve()),
                "arguments": {
                    "models": names,
                    "prompt_style": prompt_style,
                    "icl_demos": icl_demos,
                    "drop_incomplete": drop_incomplete,
                },
                "signal_rule": SIGNAL_RULE,
                "token_estimate_rule": {"outputs.n_prompt_tokens": TOKEN_ESTIMATE_RULE + " of the context, question "
                                        "and options (in-context demonstrations are not in the data and not counted)"},
                "params_b_rule": PARAMS_B_RULE,
                "dropped_incomplete_requests": dropped,
            },
        )
        return ImportedTrace(manifest, requests, outputs, report={"dropped_incomplete": dropped})
