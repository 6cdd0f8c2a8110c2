"""Quality labels: task scorers against references, agreement with the last tier."""

from __future__ import annotations

import importlib.util

import pytest

from asd.calibration.answers import extract_answer
from asd.errors import ConfigError
from asd.live import labels


@pytest.mark.parametrize(
    "output, reference, task, accepted",
    [
        ("The answer is 110.", "110", "arithmetic", True),
        ("76 + 34 = 110", "110", "arithmetic", True),
        ("76 + 34 = 100", "110", "arithmetic", False),  # the last number decides
        ("110 minus 34 is 76", "110", "arithmetic", False),
        ("1,024", "1024", "math", True),
        ("The capital of Japan is Tokyo.", "Tokyo", "facts", True),
        ("Tokyoite", "Tokyo", "facts", False),  # whole words only
        ("New Delhi.", "new delhi", None, True),
        ("WINTER SUMMER YELLOW", "WINTER SUMMER YELLOW", "copying", True),
        ("Winter, Summer, Yellow.", "WINTER SUMMER YELLOW", "copying", False),  # copy keeps case
        ("blue, river", "blue river", "copying", True),
        ("Positive", "positive", "classification", True),
        ("The answer is (C).", "C", "multiple_choice/law", True),
        ("A. is wrong, so B", "B", "multiple_choice", False),  # the first letter is the answer
        ("I think it's D", "D", "multiple_choice/math", True),  # the pronoun I is no option
        ("I think it's D", "C", "multiple_choice/math", False),
        ("the answer is b", "B", "multiple_choice", True),
        # read as asd reads answers offline (asd.calibration.answers.extract_answer)
        ("The answer is not (A) but (C).", "C", "multiple_choice/law", True),
        ("The answer is not (A) but (C).", "A", "multiple_choice/law", False),
        ("\\boxed{A}\nThe answer is (B).", "B", "multiple_choice", True),  # the marker written last
        ("\\boxed{A}\nThe answer is (B).", "A", "multiple_choice", False),
        ("The answer is (B).\n\\boxed{A}", "A", "multiple_choice", True),
        ("It is not (A) but (C), since the statute came later.", "C", "multiple_choice", True),  # loose: A is denied
        ("The answer is not 5 but 7.", "7", "math", True),
        ("The answer is not 5 but 7.", "5", "math", False),
        ("\\boxed{\\frac{1}{2}}", "0.5", "math", True),
        ("Answer: 3/4", "0.75", "math", True),
        ("The answer is 110. Check: 100 + 10", "110", "arithmetic", True),  # the marked number, not the last
        ("76 + 34 = 110\nHope this helps!", "110", "arithmetic", True),  # no answer read: the last number
    ],
)
def test_reference_scorers(output, reference, task, accepted):
    quality, ok, source = labels.label_by_reference(output, reference, task)
    assert ok is accepted and quality == float(accepted)
    assert source == f"reference:{labels.scorer_for(task)}"


@pytest.mark.parametrize(
    "output",
    ["The answer is not (A) but (C).", "\\boxed{A}\nThe answer is (B).", "The answer is (B).\n\\boxed{A}",
     "Answer: b", "The correct option is (D) Paris", "I choose option E.", "(C) Paris", "The answer is B because it rains"],
)
def test_choice_letter_is_the_option_extract_answer_reads(output):
    assert f"opt:{labels.choice_letter(output)}" == extract_answer(output).key


def test_agreement_with_last_tier_ignores_case_and_punctuation():
    assert labels.label_by_agreement("Paris.", "paris", "agreement") == (1.0, True, "agreement:last_tier")
    assert labels.label_by_agreement("Lyon", "Paris", "agreement")[1] is False


@pytest.mark.skipif(importlib.util.find_spec("sacrebleu") is None, reason="sacrebleu not installed (asd[bleu])")
def test_bleu_rule_accepts_above_point_eight():
    quality, ok, source = labels.label_by_agreement("the cat sat on the mat today", "the cat sat on the mat today", "bleu")
    assert ok and quality == pytest.approx(1.0) and source == "bleu:last_tier"
    assert labels.label_by_agreement("a dog ran", "the cat sat on the mat today", "bleu")[1] is False


def test_unknown_label_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown label mode"):
        labels.label_by_agreement("a", "b", "vibes")


def test_label_rule_states_both_paths():
    rule = labels.label_rule("agreement")
    assert "reference" in rule and "last tier" in rule
    assert "BLEU" in labels.label_rule("bleu")
