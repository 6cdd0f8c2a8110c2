"""Write the built-in trace's prompt set: short prompts with automatic references.

Deterministic (fixed seed): arithmetic, facts, copying and classification prompts, written
as JSONL (request_id, prompt, reference, task) to asd/traces/builtin/prompts.jsonl.
Run: python scripts/make_builtin_prompts.py [--n 600] [-o PATH]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
    "Egypt": "Cairo", "Russia": "Moscow", "China": "Beijing", "Canada": "Ottawa", "Greece": "Athens",
    "Portugal": "Lisbon", "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Denmark": "Copenhagen", "Poland": "Warsaw", "Austria": "Vienna",
    "Hungary": "Budapest", "Kenya": "Nairobi", "Peru": "Lima", "Chile": "Santiago",
    "Argentina": "Buenos Aires", "Mexico": "Mexico City", "Thailand": "Bangkok", "Vietnam": "Hanoi",
    "India": "New Delhi", "Iran": "Tehran", "Iraq": "Baghdad", "Cuba": "Havana",
    "South Korea": "Seoul", "Turkey": "Ankara", "Australia": "Canberra", "Belgium": "Brussels",
    "Netherlands": "Amsterdam", "Switzerland": "Bern", "Czech Republic": "Prague",
    "Ukraine": "Kyiv", "Colombia": "Bogota", "Indonesia": "Jakarta", "Philippines": "Manila",
    "Nigeria": "Abuja", "Morocco": "Rabat", "Brazil": "Brasilia", "New Zealand": "Wellington",
}
SYMBOLS = {
    "gold": "Au", "silver": "Ag", "iron": "Fe", "oxygen": "O", "hydrogen": "H", "carbon": "C",
    "sodium": "Na", "helium": "He", "nitrogen": "N", "copper": "Cu", "lead": "Pb", "zinc": "Zn",
    "calcium": "Ca", "potassium": "K", "neon": "Ne", "sulfur": "S", "tin": "Sn", "mercury": "Hg",
}
OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "fast": "slow", "day": "night", "open": "closed",
    "happy": "sad", "light": "dark", "old": "new", "early": "late", "full": "empty", "rich": "poor",
    "wet": "dry", "hard": "soft", "high": "low", "strong": "weak", "win": "lose", "left": "right",
}
WORDS = (
    "apple river stone cloud green window tiger paper silver mountain orange candle garden "
    "pencil ocean yellow rabbit bridge winter music forest little castle dragon planet summer "
    "coffee violet number basket engine lemon rocket meadow copper shadow thunder velvet"
).split()
ANIMALS = "dog cat horse cow lion eagle salmon rabbit sheep goat wolf bear frog owl shark".split()
PLANTS = "oak rose tulip fern cactus maple pine daisy moss bamboo ivy lily willow clover".split()
POSITIVE = ["I loved this movie.", "What a wonderful day!", "The food was delicious.",
            "This is the best book I have read.", "I am so happy with my new phone.",
            "The staff were friendly and helpful.", "Great job, team!", "The concert was amazing."]
NEGATIVE = ["I hated this movie.", "What a terrible day.", "The food was awful.",
            "This is the worst book I have read.", "I am very unhappy with my new phone.",
            "The staff were rude and slow.", "The trip was a disaster.", "The concert was boring."]

NUMBER = "Answer with just the number."
WORD = "Answer with one word."


def arithmetic(rng: random.Random) -> tuple[str, str]:
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        return f"What is {a} times {b}? {NUMBER}", str(a * b)
    a, b = rng.randint(1, 99), rng.randint(1, 99)
    if op == "-":
        a, b = max(a, b), min(a, b)
        return f"What is {a} minus {b}? {NUMBER}", str(a - b)
    return f"What is {a} plus {b}? {NUMBER}", str(a + b)


def fact(rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(["capital", "capital", "symbol", "opposite"])
    if kind == "capital":
        country = rng.choice(sorted(CAPITALS))
        question = rng.choice(["What is the capital of {}?", "Which city is the capital of {}?"])
        return f"{question.format(country)} Answer with just the city name.", CAPITALS[country]
    if kind == "symbol":
        element = rng.choice(sorted(SYMBOLS))
        question = rng.choice(["What is the chemical symbol for {}?", "Which chemical symbol stands for {}?"])
        return f"{question.format(element)} Answer with just the symbol.", SYMBOLS[element]
    word = rng.choice(sorted(OPPOSITES))
    question = rng.choice(["What is the opposite of '{}'?", "Give the opposite of the word '{}'."])
    return f"{question.format(word)} {WORD}", OPPOSITES[word]


def copying(rng: random.Random) -> tuple[str, str]:
    words = " ".join(rng.sample(WORDS, rng.randint(2, 5)))
    if rng.random() < 0.5:
        return f"Repeat these words exactly: {words}", words
    return f"Write these words in capital letters: {words}", words.upper()


def classification(rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(["sentiment", "parity", "kingdom"])
    if kind == "sentiment":
        label = rng.choice(["positive", "negative"])
        sentence = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
        return f'Is the sentiment of "{sentence}" positive or negative? {WORD}', label
    if kind == "parity":
        n = rng.randint(1, 999)
        return f"Is {n} even or odd? {WORD}", "even" if n % 2 == 0 else "odd"
    label = rng.choice(["animal", "plant"])
    thing = rng.choice(ANIMALS if label == "animal" else PLANTS)
    return f"Is a {thing} an animal or a plant? {WORD}", label


MAKERS = {"arithmetic": arithmetic, "facts": fact, "copying": copying, "classification": classification}


def make_prompts(n: int, seed: int = 20261127) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set()
    tasks = list(MAKERS)  # round robin; a task whose small fact list runs dry drops out
    turn = 0
    while len(rows) < n:
        if not tasks:
            raise RuntimeError(f"cannot make {n} unique prompts (made {len(rows)})")
        task = tasks[turn % len(tasks)]
        turn += 1
        for _ in range(500):
            prompt, reference = MAKERS[task](rng)
            if prompt not in seen:
                break
        else:
            tasks.remove(task)
            continue
        seen.add(prompt)
        rows.append({"request_id": f"b{len(rows):04d}", "prompt": prompt, "reference": reference, "task": task})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--seed", type=int, default=20261127)
    here = Path(__file__).resolve().parents[1]
    parser.add_argument("-o", "--output", type=Path, default=here / "asd/traces/builtin/prompts.jsonl")
    args = parser.parse_args()
    rows = make_prompts(args.n, args.seed)
    with open(args.output, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    counts = {t: sum(r["task"] == t for r in rows) for t in MAKERS}
    print(f"wrote {len(rows)} prompts to {args.output}: {counts}")


if __name__ == "__main__":
    main()
