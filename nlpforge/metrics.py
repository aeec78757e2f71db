"""Metric helpers for task plugins (numpy only)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def accuracy(predicted: Sequence, reference: Sequence) -> float:
    """Share of exact matches."""
    if len(predicted) != len(reference):
        raise ValueError("predicted and reference differ in length")
    if not len(reference):
        return 0.0
    return float(np.mean([p == r for p, r in zip(predicted, reference)]))


def f1_scores(true_pos: np.ndarray, false_pos: np.ndarray, false_neg: np.ndarray) -> np.ndarray:
    """Per-class F1 from counts; 0 where a class has neither predictions nor references."""
    precision_den = true_pos + false_pos
    recall_den = true_pos + false_neg
    precision = np.divide(true_pos, precision_den, out=np.zeros(len(true_pos)),
                          where=precision_den > 0)
    recall = np.divide(true_pos, recall_den, out=np.zeros(len(true_pos)), where=recall_den > 0)
    den = precision + recall
    return np.divide(2 * precision * recall, den, out=np.zeros(len(true_pos)), where=den > 0)


def classification_report(predicted: Sequence[str], reference: Sequence[str],
                          labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1 and per-label precision/recall/F1 of single-label predictions."""
    index = {label: i for i, label in enumerate(labels)}
    pred = np.array([index[p] for p in predicted], dtype=np.int64)
    ref = np.array([index[r] for r in reference], dtype=np.int64)
    onehot = np.eye(len(labels), dtype=bool)
    return _report(onehot[pred], onehot[ref], labels, accuracy(list(pred), list(ref)))


def multilabel_report(predicted: Sequence[Sequence[str]], reference: Sequence[Sequence[str]],
                      labels: Sequence[str]) -> dict:
    """Subset accuracy, micro/macro-F1 and per-label scores of multi-label predictions."""
    index = {label: i for i, label in enumerate(labels)}

    def hot(sets: Sequence[Sequence[str]]) -> np.ndarray:
        out = np.zeros((len(sets), len(labels)), dtype=bool)
        for row, names in enumerate(sets):
            out[row, [index[n] for n in names]] = True
        return out

    pred, ref = hot(predicted), hot(reference)
    report = _report(pred, ref, labels, float(np.mean(np.all(pred == ref, axis=1))))
    tp, fp, fn = (pred & ref).sum(), (pred & ~ref).sum(), (~pred & ref).sum()
    report["micro_f1"] = float(f1_scores(np.array([tp]), np.array([fp]), np.array([fn]))[0])
    return report


def _report(pred: np.ndarray, ref: np.ndarray, labels: Sequence[str], acc: float) -> dict:
    tp = (pred & ref).sum(axis=0).astype(float)
    fp = (pred & ~ref).sum(axis=0).astype(float)
    fn = (~pred & ref).sum(axis=0).astype(float)
    f1 = f1_scores(tp, fp, fn)
    precision = np.divide(tp, tp + fp, out=np.zeros(len(tp)), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros(len(tp)), where=(tp + fn) > 0)
    present = (tp + fn + fp) > 0  # labels seen in references or predictions
    return {
        "accuracy": acc,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_label": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]),
                    "f1": float(f1[i]), "support": int(tp[i] + fn[i])}
            for i, label in enumerate(labels)
        },
    }


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


#: The label of a position that is not a target: losses and teacher-forced scores skip it
#: (PyTorch's ``ignore_index``). Plugins import it as ``nlpforge.IGNORE_INDEX``.
IGNORE_INDEX = -100


def target_nll(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the sum of −log p(label) and the number of labels scored.

    ``logits[:, t]`` predicts ``labels[:, t]`` (shift first for a causal LM, whose position t
    predicts token t + 1); labels equal to ``IGNORE_INDEX`` are not scored.
    """
    logits = logits.astype(np.float32, copy=False)
    scored = labels != IGNORE_INDEX
    safe = np.where(scored, labels, 0)
    top = logits.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
    picked = np.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    nll = np.where(scored, log_norm - picked, 0.0).astype(np.float64)
    return nll.sum(axis=-1), scored.sum(axis=-1)


def nll_predictions(nll: Sequence[float], tokens: Sequence[int]) -> list[dict]:
    """One prediction per row from its summed NLL and target count."""
    return [{"nll": float(n), "tokens": int(c), "perplexity": math.exp(n / c) if c else None}
            for n, c in zip(nll, tokens)]


def perplexity(predictions: Sequence[dict]) -> dict[str, float | int]:
    """Token-weighted loss and perplexity over predictions with ``nll`` and ``tokens``:
    exp(total NLL / total target tokens), as transformers' run_clm reports it."""
    total = sum(p["nll"] for p in predictions)
    tokens = sum(p["tokens"] for p in predictions)
    loss = total / tokens if tokens else float("nan")
    return {"perplexity": math.exp(loss) if tokens and loss < 700 else float("inf"),
            "loss": loss, "tokens": int(tokens)}
