"""Quality labels for recorded outputs: against a reference when the prompt has one (a task
scorer: numeric, copy, exact or contains), otherwise agreement with the last (largest) tier,
by normalised exact match or, with `bleu`, sacreBLEU > 0.8 as in the research protocol."""

from __future__ import annotations

import re
import string

from asd.calibration.answers import KIND_NUMBER, KIND_OPTION, extract_answer, last_number
from asd.errors import ConfigError

_PUNCT = str.maketrans({c: " " for c in string.punctuation})

# Task name → scorer; anything else is scored with `contains`.
TASK_SCORERS = {"arithmetic": "numeric", "math": "numeric", "copying": "copy", "copy": "copy",
                "multiple_choice": "choice"}
BLEU_THRESHOLD = 0.8
LABEL_MODES = ("agreement", "bleu")


def normalise(text: str) -> str:
    """Case-folded, punctuation turned into spaces, whitespace collapsed."""
    return " ".join(text.casefold().translate(_PUNCT).split())


def final_number(text: str) -> str | None:
    """The answer's number, canonical ('1,024' and '1024.0' → '1024'), read as asd reads answers
    offline (`extract_answer`: a marked answer, a short bare one, else the number closing the
    last line; "not 5 but 7" is 7); else the last number anywhere in the text. That fallback is
    labelling's own: offline a chatty tail ("76 + 34 = 110\nHope this helps!") stays text, which
    only fails to agree with another tier, but a label scores it against a numeric reference."""
    answer = extract_answer(text)
    if answer.kind == KIND_NUMBER:
        return answer.key.removeprefix("num:")
    return last_number(text)


def score_numeric(output: str, reference: str) -> bool:
    got = final_number(output)
    return got is not None and got == final_number(reference)


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


# Where `extract_answer` reads no option letter, labelling still finds one in free text ("I
# think it's D"): "(C)" anywhere, else a lone capital letter that is not the word "I"/"A" in a
# sentence. Offline such a text is only compared with another tier's text, but a label scores
# it against a gold letter, and a small model seldom writes a marker. A denied letter ("not (A),
# but ...") is never the answer.
_LOOSE_CHOICE = (re.compile(r"\(([A-P])\)"), re.compile(r"\b([A-P])\b(?!\s+[a-z'])"))
_DENIED_CHOICE = re.compile(r"\bnot\s+(?:option\s+)?(?:\([A-P]\)|[A-P]\b)")


def choice_letter(output: str) -> str | None:
    """The option letter the output picks: as asd reads answers offline (`extract_answer`:
    "The answer is (C)", "C. …", "not (A) but (C)", of several markers the one written last),
    else the first loose letter (see `_LOOSE_CHOICE`)."""
    answer = extract_answer(output)
    if answer.kind == KIND_OPTION:
        return answer.key.removeprefix("opt:")
    text = _DENIED_CHOICE.sub(" ", output)
    for pattern in _LOOSE_CHOICE:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


def score_choice(output: str, reference: str) -> bool:
    """Multiple choice: the letter the output picks (`choice_letter`) is the reference letter."""
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
        "with a reference: numeric (the output's number equals the reference's: each the number asd reads as the "
        "answer, e.g. 'The answer is 110.', else the last number in it) for arithmetic/math tasks, "
        "copy (reference words appear in order, case kept) for copying tasks, choice (the option letter the output picks "
        "as asd reads answers, e.g. 'The answer is (C)', 'C. ...', 'not (A) but (C)', of several markers the last, else "
        "its first '(C)' or lone capital letter not denied by 'not', equals the reference letter) for multiple_choice "
        "tasks, contains "
        "(normalised reference appears as whole words in the normalised output) otherwise; "
        f"quality 1 if accepted else 0. Without a reference: {fallback}."
    )
