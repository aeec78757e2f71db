"""Logits → what fill-mask returns (numpy only): the scores of the masked tokens of evaluation
rows, and the top-k fillers of each mask token of a request."""

from __future__ import annotations

from typing import Any

import numpy as np

from nlpforge import IGNORE_INDEX
from nlpforge_fill_mask.masking import Vocabulary


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities, in float64 (a 30k-way softmax loses digits in float32)."""
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def masked_scores(logits: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Per window position with a target: negative log-likelihood, top-1 id, target id.

    Returns arrays over the chosen positions in row-major order, plus their window index.
    """
    windows, cols = np.nonzero(targets != IGNORE_INDEX)
    if not windows.size:
        empty = np.zeros(0)
        return {"window": windows, "nll": empty, "predicted": windows, "target": windows}
    picked = log_softmax(logits[windows, cols])
    target = targets[windows, cols]
    return {"window": windows, "nll": -picked[np.arange(target.size), target],
            "predicted": picked.argmax(axis=-1), "target": target}


def fillers(logits: np.ndarray, ids: np.ndarray, mask: np.ndarray, position: int,
            vocab: Vocabulary, top_k: int) -> list[dict[str, Any]]:
    """The ``top_k`` most likely tokens at ``position`` of one window, best first, as Hugging
    Face's fill-mask pipeline returns them: score, token id, token string, and the decoded
    window with this mask filled in (other mask tokens stay; padding and [CLS]/[SEP] go)."""
    probs = np.exp(log_softmax(logits[position][None])[0])
    k = min(top_k, probs.size)
    best = np.argpartition(-probs, k - 1)[:k]
    best = best[np.argsort(-probs[best], kind="stable")]
    decode = vocab.tokenizer.decode
    keep = mask.astype(bool) & (~np.isin(ids, vocab.special_ids) | (ids == vocab.mask_id))
    out = []
    for token in best.tolist():
        filled = ids.copy()
        filled[position] = token
        keep_here = keep.copy()
        keep_here[position] = True
        out.append({"score": float(probs[token]), "token": int(token),
                    "token_str": decode([token], skip_special_tokens=False),
                    "sequence": decode(filled[keep_here].tolist(), skip_special_tokens=False)})
    return out
