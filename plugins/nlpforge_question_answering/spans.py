"""Best answer spans from start/end logits over all windows of a question (numpy only).

Every (start, end) token pair with start <= end, at most ``max_answer_length`` tokens long
and inside the context is scored start logit + end logit; the search is exhaustive over
that band, not limited to the top-20 starts and ends as in Hugging Face's run_qa. The
reported score is a probability as Hugging Face's pipeline computes it: the start and end
softmax over the window's context tokens and its first token ([CLS], the no-answer
position), multiplied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Span:
    """A candidate answer: ``window``'s tokens ``start``..``end`` (inclusive)."""

    window: int
    start: int
    end: int
    logit: float          # start logit + end logit, comparable across windows
    probability: float    # as Hugging Face's pipeline reports it


@dataclass(frozen=True)
class RowSpans:
    """A question's candidates, best first, and its no-answer score (None: not allowed)."""

    spans: list[Span]
    null_logit: float | None = None
    null_probability: float = 0.0


def search_spans(outputs: dict[str, np.ndarray], rows: int, max_answer_length: int,
                 candidates: int, allow_no_answer: bool) -> list[RowSpans]:
    """The ``candidates`` best spans of each row over its windows.

    ``outputs`` holds ``start_logits``, ``end_logits`` and the window arrays of
    ``windows.window_features``. The null score of a row is its lowest window score for
    (first token, first token), as in run_qa; the null probability is that window's.
    """
    start = outputs["start_logits"].astype(np.float64)
    end = outputs["end_logits"].astype(np.float64)
    mask = outputs["context_mask"].astype(bool)
    owner = outputs["window_row"]
    cls = outputs["cls_index"]
    count, length = start.shape
    width = max(1, min(max_answer_length, length))
    # band[w, i, d]: span from token i to token i + d
    ends = np.arange(length)[:, None] + np.arange(width)[None, :]
    inside = ends < length
    ends = np.minimum(ends, length - 1)
    valid = mask[:, :, None] & mask[:, ends] & inside[None]
    band = np.where(valid, start[:, :, None] + end[:, ends], -np.inf)
    allowed = mask.copy()
    allowed[np.arange(count), cls] = True
    log_start, log_end = _log_softmax(start, allowed), _log_softmax(end, allowed)
    results = []
    for row in range(rows):
        windows = np.flatnonzero(owner == row)
        spans = _best(band, windows, ends, log_start, log_end, candidates * max(1, len(windows)))
        null_logit, null_probability = None, 0.0
        if allow_no_answer and len(windows):
            scores = start[windows, cls[windows]] + end[windows, cls[windows]]
            w = windows[int(np.argmin(scores))]
            null_logit = float(scores.min())
            null_probability = float(np.exp(log_start[w, cls[w]] + log_end[w, cls[w]]))
        results.append(RowSpans(spans, null_logit, null_probability))
    return results


def _best(band: np.ndarray, windows: np.ndarray, ends: np.ndarray, log_start: np.ndarray,
          log_end: np.ndarray, k: int) -> list[Span]:
    if not len(windows):
        return []
    scores = band[windows].reshape(-1)
    k = min(k, int(np.isfinite(scores).sum()))
    if k == 0:
        return []
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    length, width = band.shape[1], band.shape[2]
    spans = []
    for flat in top:
        w, rest = divmod(int(flat), length * width)
        i, d = divmod(rest, width)
        window, j = int(windows[w]), int(ends[i, d])
        probability = float(np.exp(log_start[window, i] + log_end[window, j]))
        spans.append(Span(window, i, j, float(scores[flat]), probability))
    return spans


def _log_softmax(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Log-softmax of each row over its allowed positions (-inf elsewhere)."""
    masked = np.where(allowed, logits, -np.inf)
    top = masked.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        total = np.log(np.exp(masked - top).sum(axis=1, keepdims=True))
    return masked - top - total
