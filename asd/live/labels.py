"""Quality labels for recorded outputs: against a reference when the prompt has one (a task
scorer: numeric, copy, exact or contains), otherwise agreement with the last (largest) tier,
by normalised exact match or, with `bleu`, sacreBLEU > 0.8 as in the research protocol."""

from __future__ import annotations

import re
import string

from asd.errors import ConfigError

_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})

# Task name → scorer; anything else is scored with `contains`.
TASK_SCORERS = {"arithmetic": "numeric", "math": "numeric", "copying": "copy", "copy": "copy",
                "multiple_choice": "choice"}
BLEU_THRESHOLD = 0.8
LABEL_MODES = ("agreement", "bleu")


def normalise(text: str) -> str:
    """Case-folded, punctuation turned into spaces, whitespace collapsed."""
    return " ".join(text.casefold().translate(_PUNCT).split())


def last_number(text: str) -> float | None:
    """The last number in the text: answers end with it ("76 + 34 = 110", "The answer is 110.")."""
    matches = _NUMBER.findall(text)
    return float(matches[-1].replace(",", "")) if matches else None


def score_numeric(output: str, reference: str) -> bool:
    got, want = last_number(output), last_number(reference)
    return got is not None and want is not None and abs(got - want) < 1e-9


def score_exact(output: str, reference: str) -> bool:
    return normalise(output) == normalise(reference)


def score_contains(output: str, reference: str) -> bool:
    ref = normalise(reference)
    return bool(ref) and f" {ref} " in f" {normalise(output)} "


def score_copy(output: str, reference: str) -> bool:
    """The reference words appear in the output in order, case kept (copy tasks test case)."""
    strip = lambda t: " ".join(t.translate(_PUNCT).split())  # noqa: E731
    ref = strip(reference)
    return bool(ref) and f" {ref} " in f" {strip(output)} "


_CHOICE_PATTERNS = (
    re.compile(r"answer is:?\s*\(?([A-P])\b", re.IGNORECASE),  # "the answer is (C)"
    re.compile(r"^\s*\(?([A-P])(?:[).:]|\s*$|\s+(?![a-z']))"),  # starts with "C." / "(C)" / "C"
    re.compile(r"\(([A-P])\)"),  # "(C)" anywhere
    re.compile(r"\b([A-P])\b(?!\s+[a-z'])"),  # a lone letter, not the word "I" / "A" in a sentence
)


def choice_letter(output: str) -> str | None:
    for pattern in _CHOICE_PATTERNS:
        match = pattern.search(output)
        if match:
            return match.group(1).upper()
    return None


def score_choice(output: str, reference: str) -> bool:
    """Multiple choice: the letter the output picks ("The answer is (C)", "C. …", "(C)", "… C")."""
    return choice_letter(output) == reference.strip().upper()


SCORERS = {"numeric": score_numeric, "choice": score_choice, "exact": score_exact, "contains": score_contains, "copy": score_copy}


def scorer_for(task: str | None) -> str:
    """By task name, or its family before a slash (`multiple_choice/law` → choice)."""
    return TASK_SCORERS.get((task or "").casefold().split("/")[0], "contains")


def label_by_reference(output: str, reference: str, task: str | None) -> tuple[float, bool, str]:
    name = scorer_for(task)
    ok = SCORERS[name](output, reference)
    return float(ok), ok, f"reference:{name}"


def label_by_agreement(output: str, final: str, mode: str = "agreement") -> tuple[float, bool, str]:
    if mode == "agreement":
        ok = score_exact(output, final)
        return float(ok), ok, "agreement:last_tier"
    if mode == "bleu":
        try:
            import sacrebleu
        except ImportError:
            raise ConfigError("--label bleu needs sacrebleu (pip install 'asd[bleu]')") from None
        bleu = sacrebleu.sentence_bleu(output, [final]).score / 100.0
        return float(bleu), bleu > BLEU_THRESHOLD, "bleu:last_tier"
    raise ConfigError(f"unknown label mode {mode!r} (modes are {list(LABEL_MODES)})")


def label_rule(mode: str) -> str:
    """The rule, in words, written into the manifest's `label_rule`."""
    if mode == "bleu":
        fallback = (
            f"sacreBLEU sentence BLEU against the last tier's output: quality = BLEU/100, "
            f"accepted iff BLEU/100 > {BLEU_THRESHOLD} (the research protocol's rule)"
        )
    else:
        fallback = (
            "agreement with the last tier: accepted iff the output equals the last tier's output "
            "after case-folding, punctuation removal and whitespace collapsing"
        )
    return (
        "with a reference: numeric (the last number in the output equals the reference) for arithmetic/math tasks, "
        "copy (reference words appear in order, case kept) for copying tasks, choice (the option letter the output picks, "
        "e.g. 'The answer is (C)', 'C. ...', equals the reference letter) for multiple_choice tasks, contains "
        "(normalised reference appears as whole words in the normalised output) otherwise; "
        f"quality 1 if accepted else 0. Without a reference: {fallback}."
    )
