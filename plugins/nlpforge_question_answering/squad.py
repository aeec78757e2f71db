"""Exact match and F1 as the official SQuAD evaluation scripts compute them (numpy-free).

Scores are comparable with published SQuAD figures only if the normalisation is the official
one, so ``normalize_answer`` and ``f1_score`` follow ``evaluate-v1.1.py`` line for line. With
no-answer questions (SQuAD 2.0) the v2.0 rule applies where a text normalises to nothing: an
empty prediction for an empty gold answer scores 1 instead of 0.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, articles (a, an, the) and extra whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str, no_answer_rule: bool = False) -> float:
    """Token-overlap F1 of the normalised texts (v1.1; ``no_answer_rule``: v2.0)."""
    predicted = normalize_answer(prediction).split()
    expected = normalize_answer(gold).split()
    if no_answer_rule and (not predicted or not expected):
        return float(predicted == expected)
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision = same / len(predicted)
    recall = same / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]],
                 no_answers: bool = False) -> dict[str, float]:
    """EM and F1 ×100, each the max over a question's gold answers, averaged over questions.

    ``golds[i]`` lists question i's gold answer texts; an empty list is a question without an
    answer (scored as the gold answer "", SQuAD 2.0 style). With ``no_answers`` the report
    also splits the scores between answerable and unanswerable questions.
    """
    if len(predictions) != len(golds):
        raise ValueError("predictions and gold answers differ in length")
    exact, f1 = [], []
    for prediction, answers in zip(predictions, golds):
        answers = list(answers) or [""]
        exact.append(max(exact_match_score(prediction, a) for a in answers))
        f1.append(max(f1_score(prediction, a, no_answers) for a in answers))
    report = {"exact_match": _mean(exact), "f1": _mean(f1), "questions": len(golds)}
    if no_answers:
        has = [i for i, answers in enumerate(golds) if answers]
        none = [i for i, answers in enumerate(golds) if not answers]
        report.update({
            "has_answer_exact_match": _mean([exact[i] for i in has]),
            "has_answer_f1": _mean([f1[i] for i in has]),
            "no_answer_accuracy": _mean([exact[i] for i in none]),
            "has_answer_questions": len(has),
            "no_answer_questions": len(none),
        })
    return report


def _mean(values: Sequence[float]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0


#: Answer-length buckets of the report: (name, fewest words, most words).
LENGTHS = [("0 (none)", 0, 0), ("1", 1, 1), ("2", 2, 2), ("3-4", 3, 4), ("5-8", 5, 8),
           ("9+", 9, 10**9)]


def by_answer_length(predictions: Sequence[str], golds: Sequence[Sequence[str]],
                     no_answers: bool = False) -> list[dict]:
    """``squad_scores`` per bucket of the shortest gold answer's length in normalised words;
    empty buckets are left out."""
    rows = []
    for name, low, high in LENGTHS:
        picked = [i for i, answers in enumerate(golds)
                  if low <= min((len(normalize_answer(a).split()) for a in answers),
                                default=0) <= high]
        if picked:
            scores = squad_scores([predictions[i] for i in picked], [golds[i] for i in picked],
                                  no_answers)
            rows.append({"answer words": name, "questions": len(picked),
                         "exact_match": scores["exact_match"], "f1": scores["f1"]})
    return rows
