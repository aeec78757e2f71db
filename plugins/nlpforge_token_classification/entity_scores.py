"""Entity-level precision, recall and F1, as seqeval computes them. Torch-free.

An entity counts as found when the prediction has the same type over exactly the same words.
IOB2 data is read with conlleval's lenient chunker (seqeval's default mode); BIOES data with
seqeval's strict mode (only well-formed entities count), so the figures are those papers and
the Hugging Face examples report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from nlpforge_token_classification.tags import IOB2, entities


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def _scores(tp: int, n_pred: int, n_true: int) -> dict[str, float]:
    precision, recall = _ratio(tp, n_pred), _ratio(tp, n_true)
    return {"precision": precision, "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall)}


def entity_report(predicted: Sequence[Sequence[str]], reference: Sequence[Sequence[str]],
                  scheme: str = IOB2) -> dict:
    """Overall (micro) precision/recall/F1, word accuracy and the same per entity type.

    ``predicted`` and ``reference`` hold one tag list per sentence, of equal lengths.
    """
    strict = scheme != IOB2
    true_pos: Counter = Counter()
    n_pred: Counter = Counter()
    n_true: Counter = Counter()
    correct = total = 0
    for pred_tags, true_tags in zip(predicted, reference, strict=True):
        if len(pred_tags) != len(true_tags):
            raise ValueError(f"a prediction has {len(pred_tags)} tags for {len(true_tags)} words")
        pred = set(entities(pred_tags, scheme, strict))
        true = set(entities(true_tags, scheme, strict))
        n_pred.update(span.type for span in pred)
        n_true.update(span.type for span in true)
        true_pos.update(span.type for span in pred & true)
        correct += sum(p == t for p, t in zip(pred_tags, true_tags))
        total += len(true_tags)
    report: dict = _scores(sum(true_pos.values()), sum(n_pred.values()), sum(n_true.values()))
    report["accuracy"] = _ratio(correct, total)
    report["entities"] = sum(n_true.values())
    report["per_type"] = {
        kind: {**_scores(true_pos[kind], n_pred[kind], n_true[kind]), "support": n_true[kind]}
        for kind in sorted(set(n_true) | set(n_pred))
    }
    return report

