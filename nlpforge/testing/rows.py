"""Synthetic training rows for tests and tools: sentences with people and places tagged in IOB2,
enough for a tiny tagger to learn them in a few hundred steps."""

from __future__ import annotations

import random

PEOPLE = ["ada", "grace", "alan", "marie curie"]
PLACES = ["paris", "london", "new york", "rome"]
TEMPLATES = ["{P} loved the movie in {L}", "the staff in {L} and {P} was great",
             "{P} and {P} read a book in {L}", "i met {P} in {L} , what a lovely view"]


def ner_rows(n: int, seed: int = 0) -> list[dict]:
    """Sentences with people (PER) and places (LOC), some of two words, tagged in IOB2."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens, tags = [], []
        for piece in rng.choice(TEMPLATES).split():
            if piece in ("{P}", "{L}"):
                kind, names = ("PER", PEOPLE) if piece == "{P}" else ("LOC", PLACES)
                words = rng.choice(names).split()
                tokens += words
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
            else:
                tokens.append(piece)
                tags.append("O")
        rows.append({"tokens": tokens, "tags": tags})
    return rows
