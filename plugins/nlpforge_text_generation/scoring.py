"""Teacher-forced scoring: per-row negative log-likelihood from logits, and perplexity."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

IGNORE = -100


def token_nll(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of −log p(target) and number of targets per sequence.

    ``logits``: [n, length, vocab]; ``labels``: [n, length] aligned with the inputs (the
    prediction at position t is scored against ``labels[t + 1]``, as the causal-LM loss does).
    """
    logits = logits[:, :-1].astype(np.float32, copy=False)
    targets = labels[:, 1:]
    scored = targets != IGNORE
    safe = np.where(scored, targets, 0)
    top = logits.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
    picked = np.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    nll = np.where(scored, log_norm - picked, 0.0).astype(np.float64)
    return nll.sum(axis=-1), scored.sum(axis=-1)


def row_scores(logits: np.ndarray, labels: np.ndarray, owners: np.ndarray,
               rows: int) -> list[dict]:
    """NLL and target count per input row (summed over its windows)."""
    nll, count = token_nll(logits, labels)
    totals = np.zeros(rows)
    counts = np.zeros(rows, dtype=np.int64)
    np.add.at(totals, owners, nll)
    np.add.at(counts, owners, count)
    return [{"nll": float(t), "tokens": int(c),
             "perplexity": float(math.exp(t / c)) if c else None}
            for t, c in zip(totals, counts)]


def perplexity(predictions: Sequence[dict]) -> dict[str, float | int]:
    """Token-weighted: exp(total NLL / total target tokens), as run_clm reports it."""
    total = sum(p["nll"] for p in predictions)
    tokens = sum(p["tokens"] for p in predictions)
    loss = total / tokens if tokens else float("nan")
    return {"perplexity": math.exp(loss) if tokens and loss < 700 else float("inf"),
            "loss": loss, "tokens": tokens}
