"""Words of a request, with their character spans. Torch-free.

Models are trained on pre-split words (CoNLL: ``"Paris" ","``), and their tags are read per
word. Raw text is therefore split into words the way such corpora are: at whitespace, with
punctuation split off (``"Paris,"`` → ``"Paris" ","``), but keeping hyphenated words, dotted
abbreviations, decimals and apostrophes inside a word (``"U.S."``, ``"1996-08-22"``,
``"3.5"``, ``"O'Neil"``). The model's own tokenizer then splits each word into sub-tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

WORD = re.compile(r"(?:\w\.){2,}|\w+(?:[-'’.,/&]\w+)*|\S")


class Words(NamedTuple):
    """The words of one request and the character span of each in ``text``."""

    text: str
    words: list[str]
    spans: list[tuple[int, int]]


def split_text(text: str) -> Words:
    """Raw text → words and their character spans."""
    found = list(WORD.finditer(text))
    return Words(text, [m.group() for m in found], [m.span() for m in found])


def join_tokens(tokens: Sequence[str]) -> Words:
    """Pre-split words → the text they make joined by single spaces, and their spans in it."""
    spans, start = [], 0
    for token in tokens:
        spans.append((start, start + len(token)))
        start += len(token) + 1
    return Words(" ".join(tokens), list(tokens), spans)


def words_of(row: dict) -> Words:
    """The words of a request or data row: its ``tokens`` if given, else its split ``text``."""
    if row.get("tokens") is not None:
        return join_tokens(row["tokens"])
    return split_text(row["text"])
