"""Model outputs → tags per word and entities with character spans. Torch-free.

Overlapping windows are merged per sub-token: each sub-token takes its scores from the window
in which it sits farthest from a window edge (the most context on both sides); ties go to the
earlier window. Sub-tokens are then read with one of the strategies Hugging Face's
``TokenClassificationPipeline`` offers:

- ``none``: every sub-token not tagged O, on its own;
- ``simple``: sub-tokens tagged separately, adjacent ones of one entity joined;
- ``first``: a word takes the tag of its first sub-token (the one labelled in training);
- ``average``: a word takes the best tag of its sub-tokens' averaged scores;
- ``max``: a word takes the tag of its most confident sub-token.

The word-level strategies never split a word between two entities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from nlpforge.metrics import softmax
from nlpforge_token_classification.tags import OUTSIDE, lenient_entities, split_tag
from nlpforge_token_classification.words import Words

STRATEGIES = ("none", "simple", "first", "average", "max")
WORD_STRATEGIES = ("first", "average", "max")


class SubToken(NamedTuple):
    word: int
    start: int
    end: int
    scores: np.ndarray  # probability of each label


def merge_windows(outputs: dict[str, np.ndarray], n_rows: int) -> list[list[SubToken]]:
    """The sub-tokens of each input, in text order, with scores from their best window."""
    probs = softmax(outputs["logits"].astype(np.float32))
    word_ids, spans = outputs["word_ids"], outputs["token_spans"]
    best: list[dict[tuple[int, int, int], tuple[int, np.ndarray]]] = [{} for _ in range(n_rows)]
    for k, row in enumerate(outputs["window_row"].tolist()):
        real = np.flatnonzero(word_ids[k] >= 0)
        if not real.size:
            continue
        first, last = real[0], real[-1]
        chosen = best[row]
        for p in real.tolist():
            key = (int(word_ids[k, p]), int(spans[k, p, 0]), int(spans[k, p, 1]))
            centrality = min(p - first, last - p)
            if key not in chosen or centrality > chosen[key][0]:
                chosen[key] = (centrality, probs[k, p])
    return [[SubToken(w, s, e, scores) for (w, s, e), (_, scores) in sorted(chosen.items())]
            for chosen in best]


def word_scores(tokens: Sequence[SubToken], n_words: int, labels: Sequence[str],
                strategy: str) -> tuple[list[str], list[float]]:
    """A tag and its score per word; words without sub-tokens are O with score 0."""
    by_word: list[list[SubToken]] = [[] for _ in range(n_words)]
    for token in tokens:
        by_word[token.word].append(token)
    tags, scores = [], []
    for pieces in by_word:
        if not pieces:
            tags.append(OUTSIDE)
            scores.append(0.0)
            continue
        if strategy == "average":
            probs = np.mean([t.scores for t in pieces], axis=0)
        elif strategy == "max":
            probs = max(pieces, key=lambda t: float(t.scores.max())).scores
        else:
            probs = pieces[0].scores
        best = int(probs.argmax())
        tags.append(labels[best])
        scores.append(float(probs[best]))
    return tags, scores


def _group(tags: Sequence[str], scores: Sequence[float], spans: Sequence[tuple[int, int]],
           text: str) -> list[dict]:
    found = []
    for entity in lenient_entities(tags):
        start, end = spans[entity.start][0], spans[entity.end - 1][1]
        found.append({"type": entity.type, "text": text[start:end], "start": start, "end": end,
                      "score": float(np.mean(scores[entity.start:entity.end]))})
    return found


def decode_row(tokens: Sequence[SubToken], words: Words, labels: Sequence[str],
               strategy: str) -> dict:
    """One input's prediction: ``entities``, plus ``tags`` per word for pre-split input."""
    word_strategy = strategy if strategy in WORD_STRATEGIES else "first"
    tags, scores = word_scores(tokens, len(words.words), labels, word_strategy)
    if strategy in WORD_STRATEGIES:
        found = _group(tags, scores, words.spans, words.text)
    else:
        best = [int(t.scores.argmax()) for t in tokens]
        token_tags = [labels[b] for b in best]
        token_scores = [float(t.scores[b]) for t, b in zip(tokens, best)]
        token_spans = [(t.start, t.end) for t in tokens]
        if strategy == "simple":
            found = _group(token_tags, token_scores, token_spans, words.text)
        else:
            found = [{"type": split_tag(tag)[1], "tag": tag, "text": words.text[s:e],
                      "start": s, "end": e, "score": score}
                     for tag, score, (s, e) in zip(token_tags, token_scores, token_spans)
                     if tag != OUTSIDE]
    return {"entities": found, "tags": tags}
