"""Final answers out of model outputs, normalised so two tiers' answers can be compared.

On ladders without logprobs, "does tier i say what tier i−1 said" is the strongest signal
there is, so the answer must be found the same way whatever the wording: a JSON `answer`
field, an explicit marker ("The answer is (B)", "Answer: 42", \\boxed{42}, "#### 42"; of
several, the one written last, so a correction wins), a short bare answer ("C", "(C) Paris",
"1,234"), a number closing the last line, and else the whole text; "not A but C" is C. Keys
are typed, so "(B)" from a chain of thought and {"answer": "B"} agree:
`num:1234.5` (a sign before "$", an exponent however spelt, "million" and every whole digit
kept; "2:30" is no number), `opt:B` ("b" alone too), `bool:yes`, `txt:paris`, and a math answer that is not a plain number keeps its
whole expression, LaTeX spelling normalised (`expr:2\\sqrt{3}`, `expr:(1,2)`): reading only its
first number would make 2√3 and 2√2 "agree". Every pattern is compiled once; `extract_answer`
is called once per (request, tier) and caches by text.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from functools import lru_cache

# A new few-shot example or chat turn after the answer: base models run on past their answer
# ("... The answer is (C).\n\nQuestion: ..."); only the text before it is the answer.
_RUN_ON = re.compile(r"\n\s*(?:Question|Q|Human|User|Problem|### ?(?:Instruction|Question|Input))\s*[:.]", re.IGNORECASE)
_JSON_ANSWER = re.compile(
    r"[\"']answer[\"']\s*:\s*(\"(?:[^\"\\]|\\.)*\"|-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false)", re.IGNORECASE
)
# Case-sensitive alternatives are several times faster than IGNORECASE on long texts.
# The span is captured inside a lookahead so that a second marker within 80 characters of the
# first is still found ("The answer is 34 s. The answer is (J).").
_ANSWER_IS_WINDOW = re.compile(r"\b(?:[Aa]nswer|ANSWER)\s+(?:is|IS|Is|would\s+be|should\s+be)\s*:?\s*(?=([^\n]{0,80}))")
# "The correct option is (C) Paris", "The best choice is **B**": read for an option letter only;
# "The best option is to rest" is prose, not an answer.
_CHOICE_IS_WINDOW = re.compile(r"\b(?:[Cc]orrect|[Bb]est|[Rr]ight|[Ff]inal)\s+(?:option|choice)\s+(?:is|would\s+be)\s*:?\s*(?=([^\n]{0,80}))")
_ANSWER_COLON_WINDOW = re.compile(r"\b(?:[Aa]nswer|ANSWER)\s*[:：]\s*(?=([^\n]{0,80}))")
MATH_SPAN_LIMIT = 400  # how far past the window a cut $...$ or {...} may run to close on its line


def _close_math(text: str, start: int, span: str) -> str:
    """`span` (text[start:...], a marker's window) as it is, unless the window cut a math span:
    an open `$` or an unbalanced `{`. Then it runs on to where the math closes on the same line
    (at most MATH_SPAN_LIMIT characters), so a long LaTeX answer is read whole, not as a key
    that ends inside a \\frac. A span that does not close there is left as the window had it."""
    depth, dollars = span.count("{") - span.count("}"), span.count("$") % 2
    if depth <= 0 and not dollars:
        return span
    end = text.find("\n", start)
    limit = min(len(text) if end < 0 else end, start + MATH_SPAN_LIMIT)
    for i in range(start + len(span), limit):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "$":
            dollars ^= 1
        if depth <= 0 and not dollars:
            return text[start:i + 1]
    return span


class _MarkerSpans:
    """(where it starts, span) for each match of an answer marker's pattern: the span its window
    captured, closed by `_close_math` where the window cut a math span."""

    def __init__(self, pattern: re.Pattern):
        self.pattern = pattern

    def spans(self, text: str) -> list[tuple[int, str]]:
        return [(m.start(1), _close_math(text, m.start(1), m.group(1))) for m in self.pattern.finditer(text)]


_ANSWER_IS = _MarkerSpans(_ANSWER_IS_WINDOW)
_ANSWER_COLON = _MarkerSpans(_ANSWER_COLON_WINDOW)
_CHOICE_IS = _MarkerSpans(_CHOICE_IS_WINDOW)
_BOXED_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"[{}]")


class _Boxed:
    """\\boxed{...} spans with their braces balanced to any depth (\\frac{\\sqrt{3}}{2} nests two)."""

    @staticmethod
    def spans(text: str) -> list[tuple[int, str]]:
        spans = []
        for opening in _BOXED_OPEN.finditer(text):
            depth = 1
            for brace in _BRACE.finditer(text, opening.end()):
                depth += 1 if brace.group() == "{" else -1
                if depth == 0:
                    spans.append((opening.end(), text[opening.end():brace.start()]))
                    break
        return spans


_BOXED = _Boxed()

_HASHES = _MarkerSpans(re.compile(r"####\s*([^\n]{1,80})"))
# An option letter opening a span: "(C)", "C.", "C)", "C" alone, but not the words "A"/"I"
# starting a sentence ("A dog ...", "I think ...").
_OPTION = re.compile(r"^\s*(?:\(([A-Pa-p])\)|([A-P])(?=\s*$|[.,;:)\]*]|\s+(?![a-z']))|([a-p])(?=[.)\]*]?\s*$))")
_OPTION_WORD = re.compile(r"^\s*option\s+\(?([A-Pa-p])\b", re.IGNORECASE)
# A capital letter and then its reason: "The answer is B because ...", "Answer: A since ...".
_OPTION_BEFORE_REASON = re.compile(r"^\s*([A-P])\s+(?:because|since|as|which|given|due)\b")
_OPTION_AT_END = re.compile(r"\(([A-P])\)\W*$")
# "not A but C", "not (A), but rather (C)": the answer is what follows "but", never the letter
# denied; "not only cheap but also fast" is prose, not a correction.
# The denied part must itself look like an answer (an option letter, a token with a digit in it):
# "The answer is not listed, but the closest is (D)" is prose, not a correction to read after "but".
_NOT_BUT = re.compile(r"^\s*not\s+(?:(?:option\s+)?\(?[A-P]\)?|[^\s,]{0,30}\d[^\s,]{0,30}),?\s+but\s+(?!also\b)"
                      r"(?:rather\s+|instead\s+)?(?=\S)", re.IGNORECASE)
# and closing unmarked text ("I'd say it is not B but D."), for an option letter only
_NOT_BUT_OPTION_AT_END = re.compile(r"\bnot\s+(?:option\s+)?\(?[A-P]\)?,?\s+but\s+(?:rather\s+)?(?:option\s+)?\(?([A-P])\)?\W*$")
_OPTION_NAMED_AT_END = re.compile(r"\b(?:[Oo]ption|[Cc]hoice)\s+\(?([A-P])\)?(?![\w'])\W*$")  # "I choose option D."
# Yes/no and true/false opening what a marker points at or a bare short answer, then punctuation,
# its end or a reason ("Yes, because", "No. It", "True"), but not "No problem": one key per
# polarity, so "Yes, it is." and "The answer is true." agree. A long text that merely opens with
# "Yes, ..." keeps its own key: in chat that is politeness more often than a verdict.
_POLARITY = re.compile(
    r"^[\W_]*(yes|no|true|false)\b(?=[\W_]*$|\s*[,.;:!)\]*]|\s+(?:because|since|as|it|this|that|there|the|they|he|she|we|you|i)\b)",
    re.IGNORECASE,
)
_POLARITY_KEY = {"yes": "bool:yes", "true": "bool:yes", "no": "bool:no", "false": "bool:no"}
# A comma inside a number only groups thousands ("1,234"); "(1,2)" is not 12. Digits right
# after "d," are never a number of their own: "130,00" (a truncated 130,000) is not 0.
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
# ".5" is 0.5 and "6.02e23" keeps its exponent; "2:30" (a time, a ratio) is not the number 2
# nor 30, so digits touching "d:" on either side are no number of their own.
_MAGNITUDE = r"(?:" + _DIGITS + r"(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER = re.compile(r"(?<![\w.])(?<!\d,)(?<!\d:)[-−]?\$?" + _MAGNITUDE + r"(?:\s*/\s*\d+(?:\.\d+)?)?(?![\d]|:\d)")
_PLAIN_NUMBER = re.compile(r"[-−]?\$?" + _MAGNITUDE + r"(?:/\d+(?:\.\d+)?)?")
# "-$5" is −5: the sign stays with its digits when the dollar sign goes ("$" is also LaTeX's)
_SIGNED_DOLLAR = re.compile(r"([-−])\s*\\?\$(?=\s*[\d.])")
# "2 x 10^3", "6.02 \times 10^{23}": scientific notation spelt out, read as 2e3 and 6.02e23
_TIMES_TEN = re.compile(r"(\d(?:\.\d+)?)\s*(?:x|×|\*|\\times|\\cdot)\s*10\s*\^\s*\{?\s*([-−+]?\d+)\s*\}?")
# "1.5 million" is 1500000, not 1.5 (and so not "1.5 billion")
_SCALE_WORD = re.compile(r"\s*(thousand|million|billion|trillion)\b", re.IGNORECASE)
_SCALE = {"thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12}
_GROUPED_NUMBER = re.compile(r"-?" + _DIGITS + r"(?:\.\d+)?(?:/.*)?")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([-−]?\d+(?:\.\d+)?)\s*\}\s*\{\s*(\d+(?:\.\d+)?)\s*\}")
_LIST_MARKER = re.compile(r"^\s*(?:\d+|[a-zA-Z])[.)]\s+")  # "2. Eat well": a list, not an answer
_SENTENCE_END = re.compile(r"(?<!\d)[.!?](?:\s|$)|\n")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
PUNCTUATION_TO_SPACE = _PUNCT = str.maketrans({c: " " for c in string.punctuation + "“”‘’«»…—–"})
_SHORT_WORDS = 4  # a text of at most this many words is a bare answer ("C", "42", "Paris")
_UNIT_WORDS = 2  # after a marked sentence's one number: its unit ("160 legs", "5 books", "12 km/h")
_CLAUSE_WORDS = 3  # before it, a clause ("each child got 5"), not a name or a date ("Paris, 3", "June 5")
# words that make the number a bound or a denial, not the answer ("not 5", "no fewer than 12")
_QUALIFIERS = frozenset("not no never neither nor less fewer more greater least most than over under above below "
                        "except besides without nearly almost up".split())

# LaTeX spacing and sizing that never changes an answer; \text{...} and friends keep their words.
_LATEX_NOISE = re.compile(r"\\(?:left|right|displaystyle|[,;:! ])|\^\s*\{?\s*\\circ\s*\}?|\\circ|\\?\$")
_LATEX_WORDS = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{2,}")  # outside LaTeX commands: prose, not an expression
_NUMBER_AND_UNIT = re.compile(r"^[-−]?\$?\d[\d,.]*\s+[A-Za-z]")  # "14.1 m/s": a number, then its unit
# What makes a span an expression rather than a number: a LaTeX command, a power or index,
# braces, a tuple or interval, or operators between operands.
_STRUCTURE = re.compile(r"\\[A-Za-z]|[\^_{}]|[(\[][^()\[\]]*,[^()\[\]]*[)\]]|\d\s*,\s*\d|[\w)}]\s*[-+*/<>]\s*[\w(\\{]")
_ONE_CHAR_GROUP = re.compile(r"([\^_])\{(\w)\}")  # x^{2} → x^2
_BARE_ARGUMENT = re.compile(r"\\(sqrt|frac)(\d)(\d)?")  # \sqrt3 → \sqrt{3}, \frac12 → \frac{1}{2}
_TIMES = re.compile(r"\\(?:cdot|times)")
_SPACED_DIGITS = re.compile(r"\d\s+\d")  # "24 2/3", "1 000": not one expression to squeeze together
_OPERAND = re.compile(r"[0-9A-Za-z]")  # "{" or "+" alone is no expression
_ASSIGNMENT = re.compile(r"=|\\approx|\\equiv")

KIND_EMPTY, KIND_TEXT, KIND_NUMBER, KIND_OPTION, KIND_EXPRESSION, KIND_BOOLEAN = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Answer:
    """A parsed answer: `key` compares across tiers (None for an empty output); `kind` is
    one of KIND_*; `from_json` says a JSON `answer` field held it; `marked` that the text
    said which part is the answer (a marker, a JSON field, or a bare short answer)."""

    key: str | None
    kind: int
    from_json: bool = False
    marked: bool = False


EMPTY = Answer(None, KIND_EMPTY)


def normalise_text(text: str) -> str:
    """Case-folded, punctuation and the articles a/an/the removed, whitespace collapsed."""
    return " ".join(_ARTICLES.sub(" ", text.casefold().translate(_PUNCT)).split())


def canonical_number(token: str) -> str | None:
    """'1,234.50' → '1234.5', '-3/4' → '-0.75', '$5' → '5', '7.0' → '7'; None if not a number."""
    token = token.replace("−", "-").replace("$", "").replace(" ", "")
    if "," in token:
        if not _GROUPED_NUMBER.fullmatch(token):
            return None  # "3,4" is a list, not 34
        token = token.replace(",", "")
    try:
        if "/" in token:
            num, den = token.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(token)
    except (ValueError, ZeroDivisionError):
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    # 6 significant digits merge 0.30000000000000004 with 0.3, but every whole digit is kept
    # (12345.67 and 12345.68, 1234567.5 and 1234568.4 are different answers)
    whole = len(str(int(abs(value)))) if abs(value) < 1e15 else 0
    return f"{value:.{max(6, whole + 2)}g}"


def _first_sentence(span: str) -> str:
    match = _SENTENCE_END.search(span)
    return span[: match.start()] if match else span


def _bare_argument(match: re.Match) -> str:
    command, first, second = match.groups()
    return f"\\{command}{{{first}}}" + (f"{{{second}}}" if second else "")


def _expression(sentence: str) -> Answer | None:
    """A math answer that is more than one number ("2\\sqrt{3}", "x^2+1", "(1, 2)", "[0,1)"),
    as one key: spaces and one-character braces normalised (the caller has dropped \\left,
    \\right and units and spelt \\dfrac12 as \\frac{1}{2}), \\cdot and \\times as *, and an
    assignment read as its right-hand side ("x = 5" is 5). None for prose, a number with its
    unit, digits apart ("24 2/3") or a plain number (the caller reads those)."""
    span = sentence.strip().rstrip(".")
    if (not span or _WORD.search(_LATEX_COMMAND.sub(" ", span)) or _NUMBER_AND_UNIT.match(span)
            or _SPACED_DIGITS.search(span)):
        return None
    if not _STRUCTURE.search(span) or not _OPERAND.search(span):
        return None
    sides = [part for part in _ASSIGNMENT.split(span) if part.strip()]
    span = sides[-1] if sides else span
    compact = _TIMES.sub("*", _ONE_CHAR_GROUP.sub(r"\1\2", "".join(span.split())))
    if _PLAIN_NUMBER.fullmatch(compact):
        canon = canonical_number(compact)
        return None if canon is None else Answer(f"num:{canon}", KIND_NUMBER, marked=True)
    return Answer(f"expr:{compact}", KIND_EXPRESSION, marked=True)


def _parse_span(span: str, marker: bool = False) -> Answer | None:
    """What an answer marker points at: an option letter, else a math expression, else a
    number, else its text. marker: the span follows an answer marker (####, "Answer:", "The
    answer is", \boxed), so a sentence holding one number and at most a unit after it is that
    number ("#### Each child got 5 books." is 5, as "#### 5"); a bare short answer is read as
    written ("Paris, 3 times" stays text)."""
    span = span.strip().strip("*$` ")
    while span[:3].lower() == "not":  # a loop, not recursion: a box may repeat "not 1 but" a thousand times
        denial = _NOT_BUT.match(span)
        if not denial:
            break
        span = span[denial.end():].strip().strip("*$` ")
    if not span:
        return None
    if "\\" in span or "$" in span:  # LaTeX: drop spacing and units' markup, one spelling of fractions
        span = _SIGNED_DOLLAR.sub(r"\1", span)
        span = _LATEX_WORDS.sub(lambda m: f" {m.group(1)} ", _LATEX_NOISE.sub(" ", span)).strip()
        span = _BARE_ARGUMENT.sub(_bare_argument, span.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac"))
    span = span.replace("{,}", ",")  # LaTeX's thousands separator: 1{,}000
    span = _TIMES_TEN.sub(lambda m: f"{m.group(1)}e{m.group(2).replace('−', '-')}", span)
    match = _OPTION.match(span) or _OPTION_WORD.match(span) or _OPTION_BEFORE_REASON.match(span)
    if match:
        letter = next(g for g in match.groups() if g)
        return Answer(f"opt:{letter.upper()}", KIND_OPTION, marked=True)
    span = _LATEX_FRAC.sub(lambda m: f"{m.group(1)}/{m.group(2)}", span)
    sentence = _first_sentence(span)
    expression = _expression(sentence)
    if expression is not None:
        return expression
    number = _NUMBER.search(sentence)
    # "42", "$1,234", "42 apples" are numeric answers; "Paris, 3 times" is text.
    if number:
        canon, end = _scaled(canonical_number(number.group(0)), sentence, number.end())
        if canon is not None and not _has_words_before(sentence[: number.start()]):
            return Answer(f"num:{canon}", KIND_NUMBER, marked=True)
        before = normalise_text(sentence[: number.start()]).split()
        if (canon is not None and marker and len(_NUMBER.findall(sentence)) == 1
                and len(before) >= _CLAUSE_WORDS and not _QUALIFIERS.intersection(before)
                and len(normalise_text(sentence[end:]).split()) <= _UNIT_WORDS):
            return Answer(f"num:{canon}", KIND_NUMBER, marked=True)
    polarity = _polarity(sentence)
    if polarity is not None:
        return polarity
    text = normalise_text(sentence)
    return Answer(f"txt:{text}", KIND_TEXT, marked=True) if text else None


def _scaled(canon: str | None, sentence: str, end: int) -> tuple[str | None, int]:
    """A number's key and end, times the scale word right after it ("1.5 million")."""
    scale = _SCALE_WORD.match(sentence, end)
    if canon is None or scale is None:
        return canon, end
    return canonical_number(repr(float(canon) * _SCALE[scale.group(1).lower()])), scale.end()


def _polarity(text: str) -> Answer | None:
    match = _POLARITY.match(text)
    return None if match is None else Answer(_POLARITY_KEY[match.group(1).lower()], KIND_BOOLEAN, marked=True)


def _has_words_before(prefix: str) -> bool:
    # "approximately 42" and "x = 42" still count as numeric; "Paris has 3" does not.
    words = [w for w in normalise_text(prefix).split() if w not in _NUMERIC_LEAD]
    return len(words) > 0


_NUMERIC_LEAD = frozenset("approximately about around roughly nearly exactly just simply x y n total equals equal is so therefore "
                          "thus ≈ ∼".split())


def _json_answer(text: str) -> Answer | None:
    if "nswer" not in text and "NSWER" not in text:
        return None
    match = _JSON_ANSWER.search(text)
    if not match:
        return None
    raw = match.group(1)
    if raw.startswith('"'):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = raw[1:-1]
    parsed = _parse_span(str(raw))
    if parsed is None:
        return None
    return Answer(parsed.key, parsed.kind, from_json=True, marked=True)


_ANSWER_WORDS = ("nswer", "NSWER")
# (pattern, take the last match, words it needs, only an option letter counts)
_MARKERS = ((_BOXED, True, ("box",), False), (_ANSWER_IS, False, _ANSWER_WORDS, False),
            (_CHOICE_IS, False, ("ption", "hoice"), True), (_HASHES, True, ("####",), False),
            (_ANSWER_COLON, True, _ANSWER_WORDS, False))


def _marked_answer(text: str) -> Answer | None:
    """What the answer markers say. Each kind names one answer: "The answer is" its first option
    letter, else its first answer, as MMLU-Pro's harness reads it ("The answer is 34 s. The
    answer is (J)." is J; a base model's later repeats are run-on); "The correct option is" its
    first option letter only; \\boxed{}, "####" and "Answer:" their last. Of the kinds a text
    uses, the one it uses last wins: \\boxed{A} then "The answer is (B)" is B (a correction, or
    MMLU-Pro's CoT boxing a value before naming its letter), "The answer is (B)" then \\boxed{A}
    is A. But prose after a marker (a text key: "Answer: Let's think step by step", a run-on
    exemplar) never overrides a letter, number, expression or yes/no stated before it, and a
    marker around a box ("Answer: \\boxed{5}") is the box's statement. A marker is looked for
    only where its words are in the text (cheap)."""
    best = {False: (-1, None), True: (-1, None)}  # by "is prose": the latest of each
    boxes = None
    for pattern, last, needs, options_only in _MARKERS:
        if not any(word in text for word in needs):
            continue
        # a kind whose words all come before the latest answer found cannot be the one used last
        # (and prose never overrides an answer): skip its parsing, most texts use one kind
        if best[False][1] is not None and max(text.rfind(word) for word in needs) < best[False][0]:
            continue
        spans = pattern.spans(text)
        if pattern is _BOXED:
            boxes = [at for at, _ in spans]
        elif boxes:  # "Answer: \\boxed{5}" is the box's statement, read there (an unclosed box is no box)
            spans = [(at, span) for at, span in spans if not any(at <= box <= at + len(span) for box in boxes)]
        found = ((at, _parse_span(span, marker=True)) for at, span in spans)
        found = [(at, a) for at, a in found if a is not None and (a.kind == KIND_OPTION or not options_only)]
        if not found:
            continue
        answer = found[-1][1] if last else next((a for _, a in found if a.kind == KIND_OPTION), found[0][1])
        prose = answer.kind == KIND_TEXT
        if found[-1][0] > best[prose][0]:  # where this kind of marker is last used
            best[prose] = found[-1][0], answer
    return best[False][1] or best[True][1]


def last_number(text: str) -> str | None:
    """The canonical form (see `canonical_number`) of the last number in `text`, a LaTeX
    fraction read as its value; None when it holds none."""
    for token in reversed(_NUMBER.findall(_LATEX_FRAC.sub(lambda m: f"{m.group(1)}/{m.group(2)}", text))):
        canon = canonical_number(token)
        if canon is not None:
            return canon
    return None


@lru_cache(maxsize=1 << 16)
def extract_answer(text: str | None) -> Answer:
    """The final answer of one output (see the module docstring for the order of rules)."""
    if text is None or not text.strip():
        return EMPTY
    run_on = _RUN_ON.search(text)
    if run_on and run_on.start() > 0:
        text = text[: run_on.start()]
    found = _json_answer(text)
    if found:
        return found
    found = _marked_answer(text)
    if found:
        return found
    stripped = text.strip()
    short = len(stripped.split()) <= _SHORT_WORDS
    if short:
        found = _parse_span(stripped)
        if found and found.kind != KIND_TEXT:
            return found
    option = _OPTION.match(stripped)
    if option and (option.group(1) or stripped[1:2] in ".)"):
        letter = next(g for g in option.groups() if g)
        return Answer(f"opt:{letter.upper()}", KIND_OPTION, marked=True)
    tail = _LIST_MARKER.sub("", stripped.rsplit("\n", 1)[-1][-200:])
    end_option = (_OPTION_AT_END.search(tail) or _OPTION_NAMED_AT_END.search(tail)
                  or _NOT_BUT_OPTION_AT_END.search(tail))
    if end_option:
        return Answer(f"opt:{end_option.group(1)}", KIND_OPTION)
    canon = last_number(tail)
    if canon is not None:
        return Answer(f"num:{canon}", KIND_NUMBER)
    text_key = normalise_text(stripped)
    return Answer(f"txt:{text_key}", KIND_TEXT, marked=short) if text_key else EMPTY


def word_set(text: str | None) -> frozenset:
    """The distinct words of the normalised text (for the Jaccard similarity of free text)."""
    return frozenset(normalise_text(text).split()) if text else frozenset()


def jaccard(a: frozenset, b: frozenset) -> float:
    """|a ∩ b| / |a ∪ b|; 0 when either is empty (two empty outputs do not agree)."""
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


__all__ = [
    "Answer", "KIND_BOOLEAN", "KIND_EMPTY", "KIND_EXPRESSION", "KIND_NUMBER", "KIND_OPTION", "KIND_TEXT", "canonical_number",
    "extract_answer", "jaccard", "last_number", "normalise_text", "word_set",
]
