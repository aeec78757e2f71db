"""Metrics of generated text (ROUGE, BLEU, chrF) and of teacher-forced scoring (perplexity).

ROUGE comes from Google's ``rouge-score`` (the implementation behind published summarization
numbers), BLEU and chrF from ``sacrebleu`` (standard tokenization, corpus level). Both live in
the ``metrics`` extra and are imported only when a metric is asked for.
"""

from __future__ import annotations

from typing import Any, Sequence

from nlpforge import UsageError
from nlpforge.metrics import perplexity, target_nll

__all__ = ["bleu_chrf", "exact_match", "perplexity", "rouge", "target_nll"]


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
