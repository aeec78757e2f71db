"""Metrics of generated text (ROUGE, BLEU, chrF) and of teacher-forced scoring (perplexity).

ROUGE comes from Google's ``rouge-score`` (the implementation behind published summarization
numbers), BLEU and chrF from ``sacrebleu`` (standard tokenization, corpus level). Both live in
the ``metrics`` extra and are imported only when a metric is asked for.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from nlpforge.errors import UsageError

IGNORE = -100


def _need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"{module.split('.')[0]} is needed for generation metrics: "
                         f"pip install 'nlpforge[metrics]'")


def rouge(predictions: Sequence[str], references: Sequence[str],
          stemmer: bool = True) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 ×100 over rows (English tokenization, Porter stemming)."""
    scorer_module = _need("rouge_score.rouge_scorer")
    scorer = scorer_module.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=stemmer)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)
        for key in totals:
            totals[key] += scores[key].fmeasure
    n = max(len(predictions), 1)
    return {key: round(100 * value / n, 4) for key, value in totals.items()}


def bleu_chrf(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu, default 13a tokenization) ×100."""
    sacrebleu = _need("sacrebleu")
    refs = [list(references)]
    return {"bleu": round(sacrebleu.corpus_bleu(list(predictions), refs).score, 4),
            "chrf": round(sacrebleu.corpus_chrf(list(predictions), refs).score, 4)}


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of rows whose generated text equals the reference (whitespace-normalised)."""
    if not predictions:
        return 0.0
    same = sum(" ".join(p.split()) == " ".join(r.split())
               for p, r in zip(predictions, references))
    return round(same / len(predictions), 6)


def target_nll(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: sum of −log p(label) and number of labels (``labels`` −100 is not scored).

    ``logits[:, t]`` is the decoder's prediction of ``labels[:, t]`` (the decoder input is the
    labels shifted right, as transformers' seq2seq loss has it).
    """
    logits = logits.astype(np.float32, copy=False)
    scored = labels != IGNORE
    safe = np.where(scored, labels, 0)
    top = logits.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
    picked = np.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    nll = np.where(scored, log_norm - picked, 0.0).astype(np.float64)
    return nll.sum(axis=-1), scored.sum(axis=-1)


def perplexity(predictions: Sequence[dict]) -> dict[str, float | int]:
    """Token-weighted loss and perplexity: exp(total NLL / total target tokens)."""
    total = sum(p["nll"] for p in predictions)
    tokens = sum(p["tokens"] for p in predictions)
    loss = total / tokens if tokens else float("nan")
    return {"loss": round(loss, 6),
            "perplexity": round(math.exp(loss), 6) if tokens and loss < 700 else float("inf"),
            "tokens": int(tokens)}
