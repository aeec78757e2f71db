"""Numpy scores of sentence vectors: cosine similarity, retrieval of each text's own pair
among all pairs of an evaluated set, and Spearman's rank correlation."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [n, dim] arrays."""
    return (unit(a) * unit(b)).sum(-1)


def pair_retrieval(texts: np.ndarray, pairs: np.ndarray,
                   pair_keys: Sequence[str], block: int = 1024) -> dict[str, float]:
    """How well each text finds its own pair among the pairs of all rows.

    ``pair_accuracy``: the share of texts whose own pair has a higher cosine than every other
    row's pair (recall@1; a tie counts against, so a model that maps everything to one vector
    scores 0). ``pair_mrr``: the mean of 1 / rank of the own pair. Rows whose pair is the
    same text (``pair_keys`` equal) are not competitors of each other.
    """
    n = len(texts)
    if n == 0:
        return {"pair_accuracy": 0.0, "pair_mrr": 0.0}
    a, b = unit(texts), unit(pairs)
    _, codes = np.unique(np.array(list(pair_keys), dtype=str), return_inverse=True)
    rank = np.empty(n, dtype=np.int64)
    for start in range(0, n, block):  # a block of rows at a time: memory O(block × n)
        rows = slice(start, min(start + block, n))
        sims = a[rows] @ b.T
        own = (a[rows] * b[rows]).sum(-1)
        competitor = codes[rows, None] != codes[None, :]
        rank[rows] = 1 + ((sims >= own[:, None]) & competitor).sum(axis=1)
    return {"pair_accuracy": float(np.mean(rank == 1)), "pair_mrr": float(np.mean(1.0 / rank))}


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties sharing their average rank (what Spearman's rho needs)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + ends - 1) / 2.0)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho; 0 where it is undefined (fewer than 2 values, or a constant)."""
    x, y = ranks(np.asarray(x, dtype=np.float64)), ranks(np.asarray(y, dtype=np.float64))
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])
