"""Tag schemes (IOB2, BIOES) and entity extraction from tag sequences. Torch-free.

Two readers of a tag sequence, both matching seqeval:

- ``lenient_entities`` is conlleval's chunker (seqeval's default mode). It accepts any
  sequence: an ``I-X`` after ``O`` or after another type starts an entity. Predictions are
  always decoded with it, whatever the scheme, because a model's raw tags are not guaranteed
  to form valid sequences and dropping such entities would hide what the model found.
- ``strict_entities`` is seqeval's strict mode for BIOES: only ``S-X`` or
  ``B-X (I-X)* E-X`` count; anything else is ignored. Metrics use it for BIOES data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

IOB2 = "iob2"
BIOES = "bioes"
SCHEMES = (IOB2, BIOES)
PREFIXES = {IOB2: ("B", "I"), BIOES: ("B", "I", "E", "S")}
OUTSIDE = "O"


class Span(NamedTuple):
    """An entity over items ``start`` (inclusive) to ``end`` (exclusive) of a sequence."""

    type: str
    start: int
    end: int


def split_tag(tag: str) -> tuple[str, str]:
    """``'B-PER'`` → ``('B', 'PER')``; ``'O'`` → ``('O', '')``.

    The type is what follows the first dash, as seqeval reads it (``B-X-Y`` has type ``X-Y``).
    """
    if tag == OUTSIDE:
        return OUTSIDE, ""
    return tag[0], tag[1:].split("-", 1)[-1]


def tag_problem(tag: str, scheme: str | None = None) -> str | None:
    """Why ``tag`` is not a valid tag of ``scheme`` (None: any supported scheme), or None."""
    allowed = PREFIXES[scheme] if scheme else PREFIXES[BIOES]
    names = "IOB2" if scheme == IOB2 else "BIOES" if scheme == BIOES else "IOB2 or BIOES"
    if tag == OUTSIDE:
        return None
    if len(tag) < 3 or tag[1] != "-" or tag[0] not in allowed or not tag[2:].strip():
        forms = ", ".join(f"{p}-TYPE" for p in allowed)
        return f"tag {tag!r} is not {names} (expected O, {forms})"
    return None


def detect_scheme(tag_lists: Iterable[Sequence[str]]) -> str:
    """BIOES when any tag starts with ``E-`` or ``S-``, IOB2 otherwise."""
    for tags in tag_lists:
        for tag in tags:
            if tag[:2] in ("E-", "S-"):
                return BIOES
    return IOB2


def label_set(tag_lists: Iterable[Sequence[str]], scheme: str) -> list[str]:
    """``O`` then every prefix of the scheme for each entity type seen, types sorted.

    All prefixes of a type are included even when the training data lacks some (a one-word
    ORG never shows ``I-ORG``), so validation data with them is not refused.
    """
    types = sorted({split_tag(tag)[1] for tags in tag_lists for tag in tags if tag != OUTSIDE})
    return [OUTSIDE] + [f"{p}-{t}" for t in types for p in PREFIXES[scheme]]


def continuation_tag(tag: str) -> str:
    """The tag of a word's later sub-tokens when every sub-token is labelled: ``I-X`` for
    any entity tag (``B-``, ``E-`` and ``S-`` mark word boundaries, not sub-word ones)."""
    prefix, kind = split_tag(tag)
    return tag if prefix == OUTSIDE else f"I-{kind}"


def _chunk_ends(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != kind


def _chunk_starts(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != kind


def lenient_entities(tags: Sequence[str]) -> list[Span]:
    """Entities as conlleval (and seqeval's default mode) reads them."""
    spans: list[Span] = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, full in enumerate([*tags, OUTSIDE]):
        tag = full[0]
        kind = full[1:].split("-", 1)[-1] or "_"
        if _chunk_ends(prev_tag, tag, prev_type, kind):
            spans.append(Span(prev_type, begin, i))
        if _chunk_starts(prev_tag, tag, prev_type, kind):
            begin = i
        prev_tag, prev_type = tag, kind
    return spans


def strict_entities(tags: Sequence[str]) -> list[Span]:
    """Entities as seqeval's strict mode reads BIOES: ``S-X`` or ``B-X (I-X)* E-X``."""
    parsed = [split_tag(tag) for tag in tags] + [(OUTSIDE, "")]
    spans: list[Span] = []
    i = 0
    while i < len(parsed):
        prefix, kind = parsed[i]
        if prefix in ("B", "S"):
            end = i + 1
            prev = parsed[i]
            while (prev[0] in ("B", "I") and parsed[end][0] in ("I", "E")
                   and parsed[end][1] == prev[1]):
                prev = parsed[end]
                end += 1
            if parsed[end - 1][0] in ("S", "E"):
                spans.append(Span(kind, i, end))
            i = end
        else:
            i += 1
    return spans


def entities(tags: Sequence[str], scheme: str = IOB2, strict: bool = False) -> list[Span]:
    """The entities of one tag sequence; ``strict`` applies to BIOES only."""
    return strict_entities(tags) if strict and scheme == BIOES else lenient_entities(tags)
