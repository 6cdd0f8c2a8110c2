"""Answer extraction: the same answer in different wordings gets the same key; run-on text,
lists and free prose do not produce spurious answers."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asd.calibration.answers import (
    KIND_BOOLEAN, KIND_EMPTY, KIND_EXPRESSION, KIND_NUMBER, KIND_OPTION, KIND_TEXT, canonical_number, extract_answer, jaccard, normalise_text, word_set,
)


@pytest.mark.parametrize(
    "text, key",
    [
        ("The answer is (B).", "opt:B"),
        (" Let's think step by step. ... so the answer is (C).\n\n", "opt:C"),
        # MMLU-Pro base models run on into the next few-shot question: only the first answer counts.
        ("Thus x = 3. The answer is (D).\n\nQuestion: Which of these ... The answer is (A).", "opt:D"),
        # A number answer before the letter: the option letter wins, as the harness reads it.
        (" The answer is 34 residues per second. The answer is (J).\n\n", "opt:J"),
        ("Answer: C", "opt:C"),
        ("B", "opt:B"),
        ("(b) Paris", "opt:B"),
        ("C. Paris is the capital of France.", "opt:C"),
        ('{"answer": "B"}', "opt:B"),
        ('```json\n{"reasoning": "add them", "answer": 1234}\n```', "num:1234"),
        ('{"answer": "1,234.0"}', "num:1234"),
        ("The total is 1,250 dollars.\nSo she pays $1,250.", "num:1250"),
        ("76 + 34 = 110", "num:110"),
        ("so the answer is $1,234.50 dollars", "num:1234.5"),
        ("#### 1,000", "num:1000"),
        ("Therefore x = \\boxed{\\frac{3}{4}}.", "num:0.75"),
        ("The answer is approximately 14.1 m/s", "num:14.1"),
        ("The answer is -3.0", "num:-3"),
        ("It costs 7.50.", "num:7.5"),
        ("The answer is a dog.", "txt:dog"),
        # An option letter and then its reason, named as the correct option, or in backticks.
        ("The answer is B because the rate doubles.", "opt:B"),
        ("Answer: A since x > 0", "opt:A"),
        ("The correct option is (C) Paris", "opt:C"),
        ("So the best choice is **D**.", "opt:D"),
        ("Weighing both, I choose option E.", "opt:E"),
        ("The answer is `D. 50 units`.", "opt:D"),
        # Yes/no and true/false, one key per polarity.
        ("The answer is yes, because the sky scatters blue light.", "bool:yes"),
        ("No. It rained.", "bool:no"),
        ("The answer is True.", "bool:yes"),
        ("**false**", "bool:no"),
        ("  Zn ", "txt:zn"),
        # After a marker, a sentence with one number and at most its unit is that number (GSM8K
        # answers written out: 6 of 1,319 real pairs with the same number read as disagreeing).
        ("#### Each child got 5 books.", "num:5"),
        ("Answer: The animals have a total of 160 legs.", "num:160"),
        ("Answer: Paris has 3 million people in 2 areas", "txt:paris has 3 million people in 2 areas"),
        ("The answer is simply 15", "num:15"),
        # a bound, a denial, a name or a date is not the number alone
        ("The answer is not 5.", "txt:not 5"),
        ("Answer: no fewer than 12", "txt:no fewer than 12"),
        ("The answer is June 5.", "txt:june 5"),
        ("Answer: Paris, 3 times", "txt:paris 3 times"),
    ],
)
def test_answers_in_many_wordings_get_their_canonical_key(text, key):
    assert extract_answer(text).key == key


@pytest.mark.parametrize(
    "same, different",
    [
        # the sign before a dollar amount stays (LaTeX's "$" used to take it with it)
        (["The answer is -$5", "The answer is −$5", "The answer is -5"], "The answer is $5"),
        (["#### -$12.50", "#### -12.5"], "#### $12.50"),
        # scientific notation keeps its exponent, written any of the usual ways
        (['{"answer": 1e3}', "The answer is 1000", "The answer is 1 x 10^3", "Answer: $1 \\times 10^{3}$"],
         '{"answer": 1}'),
        (["The answer is 6.02e23", "The answer is 6.02 × 10^23"], "The answer is 6.02e22"),
        # a time or a ratio is not its first (or last) number
        (["The answer is 2:30", "The answer is 2:30."], "The answer is 2:45"),
        (["Answer: 3:2"], "Answer: 3:1"),
        # whole digits are kept: 6 significant digits merged 12345.67 with 12345.68
        (["The answer is 12345.67"], "The answer is 12345.68"),
        (["#### 1234567.5"], "#### 1234568.4"),
        (["The answer is 1.5 million", "The answer is 1,500,000"], "The answer is 1.5 billion"),
        # a lone lower-case letter is the option as its capital is
        (["Answer: b", "Answer: B", '{"answer": "b"}', "Answer: (b)"], "Answer: c"),
        (["The answer is a.", "The answer is (A)."], "The answer is the."),
        # ".5" is 0.5; "≈3.14" is 3.14
        (["The answer is .5", "The answer is 0.5", "The answer is 1/2"], "The answer is 5"),
        (["The answer is ≈3.14", "The answer is 3.14"], "The answer is 3.15"),
    ],
)
def test_equal_answers_agree_and_different_ones_do_not(same, different):
    """Found by a hunt: each pair was read as agreeing when different, or disagreeing when equal."""
    keys = {extract_answer(t).key for t in same}
    assert len(keys) == 1, {t: extract_answer(t).key for t in same}
    assert extract_answer(different).key not in keys


def test_the_same_answer_agrees_across_formats():
    same = ["The answer is (B).", '{"answer": "B"}', "B", "(B) 42 kg", "Answer: B"]
    assert {extract_answer(t).key for t in same} == {"opt:B"}
    numbers = ["1,234", "The answer is 1234.", "#### 1234.0", '{"answer": 1234}', "x = 1234"]
    assert {extract_answer(t).key for t in numbers} == {"num:1234"}


def test_kinds_and_flags():
    assert extract_answer('{"answer": "B"}').from_json
    assert extract_answer("The answer is (B).").kind == KIND_OPTION
    assert extract_answer("#### 7").kind == KIND_NUMBER and extract_answer("#### 7").marked
    prose = extract_answer("A dog is an animal that barks.")
    assert prose.kind == KIND_TEXT and prose.key == "txt:dog is animal that barks" and not prose.marked
    for empty in (None, "", "   \n"):
        assert extract_answer(empty).kind == KIND_EMPTY and extract_answer(empty).key is None


def test_yes_and_no_agree_across_wordings_and_openers_are_not_answers():
    assert {extract_answer(t).key for t in ("Yes", "yes.", "Yes, it is.", "Answer: Yes", "True", "The answer is yes.")} == {"bool:yes"}
    assert {extract_answer(t).key for t in ("No", "No, it is not.", "FALSE", "The answer is no because it rained.")} == {"bool:no"}
    assert extract_answer("Yes").kind == KIND_BOOLEAN
    for opener in ("No problem! Here is a recipe for bread.", "No matter what, keep going.", "True or false: cats bark",
                   "Nobody knows.", "Yes, here is a short poem about the sea and its waves."):
        assert extract_answer(opener).kind == KIND_TEXT, opener  # a long chat answer opening "Yes," is no verdict
    # "The best option is to rest" is advice, not an option letter: the whole text stays the key.
    assert extract_answer("The best option is to rest and drink water.").key == "txt:best option is to rest and drink water"


@pytest.mark.parametrize(
    "text, key",
    [
        # the answer is what follows "but", never the letter denied (these read as the text
        # "not but c", which agreed with nothing, or as the denied A)
        ("not A but C", "opt:C"),
        ("The answer is not (A) but (C).", "opt:C"),
        ("The answer is not A, but rather C.", "opt:C"),
        ("Answer: not (B) but (D) because the rate doubles", "opt:D"),
        ("The correct option is not (A) but (C)", "opt:C"),
        ("The answer is not 5 but 7.", "num:7"),
        ("Having checked again, I would say it is not B but D.", "opt:D"),
        # a denial alone, and "not only ... but also", are still what they were
        ("The answer is not 5.", "txt:not 5"),
        ("The answer is not only cheap but also fast.", "txt:not only cheap but also fast"),
    ],
)
def test_a_denied_answer_reads_as_the_one_after_but(text, key):
    assert extract_answer(text).key == key


@pytest.mark.parametrize(
    "text, key",
    [
        # \boxed{} took precedence wherever it stood: a later correction was never read
        (r"So $\boxed{A}$. Wait, let me recheck the units. The answer is (B).", "opt:B"),
        (r"Thus \boxed{7.4}. The answer is (E).", "opt:E"),  # MMLU-Pro CoT: a box, then the letter
        (r"The answer is (B). On reflection, \boxed{A}", "opt:A"),
        ("so the answer is 66 - 10 = 56 students, and then 66.\n#### 56", "num:56"),
        # within one kind of marker the old readings stand: "The answer is" names its first option
        # letter (MMLU-Pro's harness; later repeats are run-on), \boxed{} and "####" their last
        ("The answer is (A). The answer is (B).", "opt:A"),
        (" The answer is 34 residues per second. The answer is (J).", "opt:J"),
        (r"\boxed{3} and then \boxed{4}", "num:4"),
        # prose after a later marker does not undo a letter or number stated before it
        ("The answer is (F).\n\nAnswer: Let's think step by step. We refer to Wikipedia", "opt:F"),
        ("The answer is (I).\n\nFinal Answer: The answer is ... I.", "opt:I"),
        # a marker around a box is the box's statement ("Answer: \boxed{5:4}" was an expression "\boxed{5:4}")
        (r"Answer: \boxed{5:4}.", extract_answer(r"\boxed{5:4}").key),
        # a JSON `answer` field is the answer the format asked for, wherever it stands
        ('The answer is (B).\n{"answer": "C"}', "opt:C"),
    ],
)
def test_the_marker_written_last_states_the_answer(text, key):
    assert extract_answer(text).key == key


@pytest.mark.parametrize("text, key", [
    # a denied part that is no answer is prose, not a correction to read after "but"
    ("The answer is not listed, but the closest option is (D) 15000 K.", "txt:not listed but closest option is d 15000 k"),
    ("The answer is not among the choices, but it lies between 88.3 and 109.7 kJ/mol.",
     "txt:not among choices but it lies between 88 3 and 109 7 kj mol"),
    # an unclosed box (a cut-off output) is no box: the answer stated before it stands
    ("The answer is (B). Then \\boxed{", "opt:B"),
    ("The answer is (B) since \\boxed{", "opt:B"),
])
def test_prose_denials_and_unclosed_boxes_do_not_move_the_answer(text, key):
    assert extract_answer(text).key == key


def test_a_box_repeating_a_denial_a_thousand_times_is_read_without_recursion():
    assert extract_answer("\\boxed{" + "not 1 but " * 1000 + "2}").key == "num:2"


def test_list_items_and_sentence_openers_are_not_answers():
    assert extract_answer("Here are tips:\n1. Sleep well\n2. Eat well").kind == KIND_TEXT
    assert extract_answer("I think it is Paris.").kind == KIND_TEXT  # "I" is not option I
    assert extract_answer("A dog barks.").kind == KIND_TEXT  # nor is "A"


@pytest.mark.parametrize(
    "token, canon",
    [("1,234.50", "1234.5"), ("-3/4", "-0.75"), ("$5", "5"), ("7.0", "7"), ("−2", "-2"), ("1/0", None), ("abc", None)],
)
def test_canonical_numbers(token, canon):
    assert canonical_number(token) == canon


def test_normalised_text_drops_case_punctuation_and_articles():
    assert normalise_text("  The Quick, brown fox -- an ANIMAL!  ") == "quick brown fox animal"


def test_jaccard_of_word_sets():
    assert jaccard(word_set("the cat sat"), word_set("The cat sat!")) == 1.0
    assert jaccard(word_set("cat sat"), word_set("cat ran")) == pytest.approx(1 / 3)
    assert jaccard(word_set(""), word_set("")) == 0.0  # two empty outputs do not agree


@given(st.text(max_size=200))
def test_any_text_gives_a_key_or_empty_and_never_raises(text):
    answer = extract_answer(text)
    assert (answer.key is None) == (answer.kind == KIND_EMPTY)
    assert answer.key is None or answer.key.split(":", 1)[0] in {"num", "opt", "txt", "expr", "bool"}


# -- math answers (MATH-style \boxed{} and LaTeX) ----------------------------------------------

@pytest.mark.parametrize(
    "spellings, key",
    [
        ([r"\boxed{2\sqrt{3}}", r"so the answer is $\boxed{2 \sqrt{3}}$.", r"\boxed{2\sqrt3}"], r"expr:2\sqrt{3}"),
        ([r"\boxed{\frac{\sqrt{3}}{2}}", r"\boxed{\dfrac{\sqrt{3}}{2}}"], r"expr:\frac{\sqrt{3}}{2}"),
        ([r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\boxed{(3,\frac{\pi}{2})}"], r"expr:(3,\frac{\pi}{2})"),
        ([r"\boxed{x^{2} + 1}", r"\boxed{x^2+1}", r"The answer is $y = x^2 + 1$."], "expr:x^2+1"),
        ([r"\boxed{[0, 1)}", r"\boxed{[0,1)}"], "expr:[0,1)"),
        ([r"\boxed{\dfrac{1}{2}}", r"\boxed{\tfrac12}", r"\boxed{\frac{1}{2}}", "The answer is 0.5", r"\boxed{x = \frac12}"],
         "num:0.5"),
        ([r"\boxed{12^\circ}", r"\boxed{12^{\circ}}", r"\boxed{12}", r"\boxed{12\text{ degrees}}"], "num:12"),
        ([r"\boxed{1{,}000}", r"\boxed{\$1,000}", "#### 1,000"], "num:1000"),
        ([r"\boxed{\text{(B)}}", r"\boxed{B}", "The answer is (B)."], "opt:B"),
        ([r"\boxed{10\text{ cm}}", "The answer is 10 cm.", "Answer: 10"], "num:10"),
        ([r"\fbox{7}", "Final Answer: The final answer is $7$. I hope it is correct."], "num:7"),
    ],
)
def test_a_math_answer_gets_one_key_however_it_is_spelt(spellings, key):
    assert {extract_answer(t).key for t in spellings} == {key}


@pytest.mark.parametrize(
    "one, other",
    [
        # Reading only the first number made each of these pairs "agree".
        (r"\boxed{2\sqrt{3}}", r"\boxed{2\sqrt{2}}"),
        (r"\boxed{(1,2)}", r"\boxed{(1,5)}"),
        (r"\boxed{x^2+1}", r"\boxed{x^2+3}"),
        (r"\boxed{2^{10}}", r"\boxed{2}"),
        (r"\boxed{\frac{\sqrt{3}}{2}}", r"\boxed{\frac{\sqrt{2}}{2}}"),
        ("Answer: 3, 4", "Answer: 3, 5"),
        ("The answer is (A, B).", "The answer is (B)."),
    ],
)
def test_different_math_answers_do_not_agree(one, other):
    assert extract_answer(one).key != extract_answer(other).key


def test_commas_group_thousands_only():
    assert extract_answer("The answer is 1,234.").key == "num:1234"
    assert extract_answer("The answer is 1,2").key == "expr:1,2"  # a list, not twelve
    assert canonical_number("3,4") is None and canonical_number("1,234,567") == "1234567"
    # A truncated "130,000" does not end in a number 0 that every truncated output would share.
    assert extract_answer("The value after repairs is $130,00").key == "num:130"


def test_expressions_are_their_own_kind_and_marked():
    answer = extract_answer(r"\boxed{2\sqrt{3}}")
    assert answer.kind == KIND_EXPRESSION and answer.marked
    assert extract_answer("#### 24 2/3").kind == KIND_NUMBER  # a mixed number is not squeezed into 242/3
    assert extract_answer("The answer is 14.1 m/s").key == "num:14.1"  # a unit is not an expression
    assert extract_answer(r"\boxed{\frac{\sqrt{3}}{2}").kind != KIND_EMPTY  # an unclosed box still gives a key


_terms = st.sampled_from([r"\sqrt{3}", r"\pi", "x", "x^2", r"\frac{\pi}{4}", "7", "12", r"\sqrt{2}"])


@given(st.lists(_terms, min_size=1, max_size=4), st.lists(st.sampled_from(["+", "-", r"\cdot "]), min_size=3, max_size=3),
       st.sampled_from([r"\boxed{%s}", r"The answer is $%s$.", r"Answer: $\displaystyle %s$", r"$\boxed{ %s }$"]),
       st.booleans())
def test_spacing_and_markup_never_change_an_expressions_key(terms, ops, wrapper, spaced):
    tight = terms[0] + "".join(op + t for op, t in zip(ops, terms[1:]))
    loose = terms[0] + "".join(f" {op} {t}" for op, t in zip(ops, terms[1:]))
    assert extract_answer(r"\boxed{%s}" % tight).key == extract_answer(wrapper % (loose if spaced else tight)).key


def test_a_math_answer_longer_than_the_markers_window_is_read_whole():
    # hypothesis found it: "Answer: $\displaystyle ...$" with spaced operators runs past the
    # 80-character window, which cut it inside the last \frac and lost its closing brace
    frac = r"\frac{\pi}{4}"
    loose = f"{frac} + {frac} + {frac} \\cdot  {frac}"
    whole = extract_answer(r"\boxed{%s}" % loose.replace(" ", "")).key
    assert whole.endswith(r"*\frac{\pi}{4}")
    for wrapper in (r"Answer: $\displaystyle %s$", r"The answer is $\displaystyle %s$.", r"#### $\displaystyle %s$"):
        assert extract_answer(wrapper % loose).key == whole
    # math that does not close on its line is read as the window had it, never past the line
    cut = "Answer: " + "x + " * 30 + r"\frac{1" + "\nQuestion: 2}"
    assert extract_answer(cut).key == extract_answer("Answer: " + ("x + " * 30 + r"\frac{1")[:80]).key
