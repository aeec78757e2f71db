"""Teacher-forced scoring of a causal LM: per-row negative log-likelihood from logits."""

from __future__ import annotations

import numpy as np

from nlpforge.metrics import nll_predictions, perplexity, target_nll

__all__ = ["perplexity", "row_scores", "token_nll"]


def token_nll(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of −log p(target) and number of targets per sequence.

    ``logits``: [n, length, vocab]; ``labels``: [n, length] aligned with the inputs (the
    prediction at position t is scored against ``labels[t + 1]``, as the causal-LM loss does).
    """
    return target_nll(logits[:, :-1], labels[:, 1:])


def row_scores(logits: np.ndarray, labels: np.ndarray, owners: np.ndarray,
               rows: int) -> list[dict]:
    """NLL and target count per input row (summed over its windows)."""
    nll, count = token_nll(logits, labels)
    totals = np.zeros(rows)
    counts = np.zeros(rows, dtype=np.int64)
    np.add.at(totals, owners, nll)
    np.add.at(counts, owners, count)
    return nll_predictions(totals, counts)
