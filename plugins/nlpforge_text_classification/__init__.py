"""text-classification: single- and multi-label classification of a text or a text pair.

Built into nlpforge, found through the ``nlpforge`` entry-point group like any plugin.
This module imports no torch; the head is built inside ``build_model``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

import nlpforge
from nlpforge import ENCODER_INPUTS, DataError, Field, ModelFamily, Option, Task, UsageError
from nlpforge.metrics import classification_report, multilabel_report, sigmoid, softmax

NLPFORGE_PLUGIN_API = 1


class TextClassification(Task):
    """Sentiment, topic, intent…: one label per text (or several with multi_label=true)."""

    id = "text-classification"
    version = 1
    description = "Label a text or a text pair (single- or multi-label)"
    family = ModelFamily.ENCODER
    train_fields = (
        Field("text", str, description="the text to classify"),
        Field("text_pair", str, required=False, description="second text of a pair (NLI, QA)"),
        Field("label", (str, int, list), items=(str, int),
              description="a label; a list of labels with multi_label=true"),
    )
    request_fields = (
        Field("text", str, description="the text to classify"),
        Field("text_pair", str, required=False, description="second text of a pair"),
    )
    options = (
        Option("multi_label", False, "each text may carry several labels (sigmoid, BCE loss)"),
        Option("threshold", 0.5, "multi-label: the score from which a label is predicted"),
    )
    primary_metric = "macro_f1"
    greater_is_better = True
    checkpoint_heads = ("ForSequenceClassification",)

    @classmethod
    def from_pretrained_config(cls, config: dict[str, Any], tokenizer: Any,
                               directory: Any) -> "TextClassification":
        """Labels from ``id2label``; multi-label when ``problem_type`` says so."""
        problem = config.get("problem_type")
        if problem == "regression" or config.get("num_labels") == 1 and not problem:
            raise UsageError(f"{directory}: a regression head (one output, problem_type "
                             f"{problem or 'unset'}); text-classification predicts labels")
        return cls(labels=nlpforge.config_labels(config),
                   multi_label=problem == "multi_label_classification")

    # -- data -------------------------------------------------------------------------------

    def _row_labels(self, row: dict, path: str | None, line: int | None) -> list[str]:
        value = row["label"]
        if self.settings["multi_label"]:
            if not isinstance(value, list):
                value = [value]
            return [str(v) for v in value]
        if isinstance(value, list):
            raise DataError("a list of labels needs the task option multi_label=true",
                            path, line, "label")
        return [str(value)]

    def check_row(self, row: dict, path: str | None = None, line: int | None = None,
                  training: bool = True) -> None:
        super().check_row(row, path, line, training)
        if not training:
            return
        labels = self._row_labels(row, path, line)
        if self.labels is not None:
            unknown = [label for label in labels if label not in self.labels]
            if unknown:
                raise DataError(f"unknown label {unknown[0]!r} (known labels: "
                                f"{', '.join(self.labels)})", path, line, "label")

    def fit(self, rows: Sequence[dict]) -> None:
        if self.labels is not None:
            return
        seen = sorted({label for row in rows for label in self._row_labels(row, None, None)})
        if len(seen) < 2 and not self.settings["multi_label"]:
            raise UsageError(f"the training data has {len(seen)} label(s); a classifier needs "
                             f"at least 2")
        self.labels = seen

    # -- preprocessing ----------------------------------------------------------------------

    def encode(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        """Each row as it is: a text alone, or a text pair; a batch may hold both (a row
        without ``text_pair`` gets no empty second segment from its neighbours)."""
        pairs = [i for i, row in enumerate(rows) if row.get("text_pair") is not None]
        if not pairs:
            return tokenizer.pad(tokenizer.encode([row["text"] for row in rows]), ENCODER_INPUTS)
        singles = [i for i, row in enumerate(rows) if row.get("text_pair") is None]
        encodings: list[Any] = [None] * len(rows)
        for i, encoding in zip(singles, tokenizer.encode([rows[i]["text"] for i in singles])):
            encodings[i] = encoding
        for i, encoding in zip(pairs, tokenizer.encode([rows[i]["text"] for i in pairs],
                                                       [rows[i]["text_pair"] for i in pairs])):
            encodings[i] = encoding
        return tokenizer.pad(encodings, ENCODER_INPUTS)

    def targets(self, rows: Sequence[dict]) -> dict[str, np.ndarray]:
        index = {label: i for i, label in enumerate(self.labels or [])}
        if self.settings["multi_label"]:
            hot = np.zeros((len(rows), len(index)), dtype=np.float32)
            for r, row in enumerate(rows):
                hot[r, [index[label] for label in self._row_labels(row, None, None)]] = 1.0
            return {"labels": hot}
        return {"labels": np.array([index[str(row["label"])] for row in rows], dtype=np.int64)}

    # -- head -------------------------------------------------------------------------------

    def build_model(self, base: str, **kwargs: Any) -> Any:
        from transformers import AutoModelForSequenceClassification

        labels = self.labels or []
        return AutoModelForSequenceClassification.from_pretrained(
            base,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            problem_type=("multi_label_classification" if self.settings["multi_label"]
                          else "single_label_classification"),
            **kwargs,
        )

    def load_model(self, path: str, **kwargs: Any) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(path, **kwargs)

    # -- outputs ----------------------------------------------------------------------------

    def postprocess(self, outputs: dict[str, np.ndarray], rows: Sequence[dict]) -> list[dict]:
        labels = self.labels or []
        logits = outputs["logits"].astype(np.float64)
        if self.settings["multi_label"]:
            probs = sigmoid(logits)
            threshold = self.settings["threshold"]
            return [{
                "labels": [labels[j] for j in np.flatnonzero(p >= threshold)],
                "scores": {label: float(s) for label, s in zip(labels, p)},
            } for p in probs]
        probs = softmax(logits)
        best = probs.argmax(axis=-1)
        return [{
            "label": labels[b],
            "score": float(p[b]),
            "scores": {label: float(s) for label, s in zip(labels, p)},
        } for b, p in zip(best, probs)]

    def metrics(self, predictions: Sequence[dict], rows: Sequence[dict]) -> dict[str, Any]:
        labels = self.labels or []
        if self.settings["multi_label"]:
            return multilabel_report([p["labels"] for p in predictions],
                                     [self._row_labels(r, None, None) for r in rows], labels)
        return classification_report([p["label"] for p in predictions],
                                      [str(r["label"]) for r in rows], labels)

    def report(self, predictions: Sequence[dict], rows: Sequence[dict],
               metrics: dict[str, Any]) -> list[Any]:
        """Precision, recall and F1 per label; for single-label models the confusion matrix."""
        from nlpforge import ReportSection

        labels = list(self.labels or [])
        per = metrics.get("per_label", {})
        scores = {k: [per.get(label, {}).get(k, 0.0) for label in labels]
                  for k in ("precision", "recall", "f1")}
        sections = [ReportSection("Scores per label",
                            draw=lambda p: p.bars(labels, scores, "precision, recall and F1"),
                            table=[{"label": label, **per.get(label, {})} for label in labels])]
        if not self.settings["multi_label"]:
            index = {label: i for i, label in enumerate(labels)}
            matrix = [[0] * len(labels) for _ in labels]
            for prediction, row in zip(predictions, rows):
                matrix[index[str(row["label"])]][index[prediction["label"]]] += 1
            sections.insert(0, ReportSection(
                "Confusion matrix", note="rows: the true label; columns: the predicted one",
                draw=lambda p: p.confusion(labels, matrix, "confusion matrix")))
        return sections


@nlpforge.hookimpl
def register_tasks(register):
    register(TextClassification)
