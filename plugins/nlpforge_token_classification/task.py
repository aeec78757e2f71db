"""The token-classification task: tag each word of a sentence (named-entity recognition)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nlpforge import (IGNORE_INDEX, DataError, Field, ModelFamily, Option, Task, UsageError,
                      config_labels, encoder_signature)
from nlpforge_token_classification.decode import STRATEGIES, decode_row, merge_windows
from nlpforge_token_classification.features import align_labels, encode_words
from nlpforge_token_classification.entity_scores import entity_report
from nlpforge_token_classification.tags import (
    BIOES,
    IOB2,
    OUTSIDE,
    SCHEMES,
    detect_scheme,
    label_set,
    tag_problem,
)
from nlpforge_token_classification.words import words_of


class TokenClassification(Task):
    """Named entities (or any word tags in IOB2/BIOES) from words or raw text."""

    id = "token-classification"
    version = 1
    description = "Tag words with entity types (NER; IOB2 or BIOES), entities from raw text"
    family = ModelFamily.ENCODER
    splits_rows = True  # long texts become several windows
    train_fields = (
        Field("tokens", list, items=str, description="the words of a sentence"),
        Field("tags", list, items=str, description="one IOB2 or BIOES tag per word"),
    )
    request_fields = (
        Field("text", str, required=False, description="raw text to find entities in"),
        Field("tokens", list, required=False, items=str,
              description="pre-split words instead of text (the answer then has tags per word)"),
        Field("aggregation", str, required=False,
              description="override the aggregation option for this request"),
    )
    options = (
        Option("scheme", "auto", "tag scheme: iob2, bioes or auto (bioes when the training "
                                 "tags use E- or S-)"),
        Option("label_all_tokens", False, "train on every sub-token of a word, not only the "
                                          "first"),
        Option("aggregation", "first", "how sub-token tags become entities: "
                                       + ", ".join(STRATEGIES)),
        Option("stride", 32, "tokens shared by consecutive windows over inputs longer than "
                             "--max-length (at most half a window)"),
    )
    primary_metric = "f1"
    checkpoint_heads = ("ForTokenClassification",)

    @classmethod
    def from_pretrained_config(cls, config: dict[str, Any], tokenizer: Any,
                               directory: Any) -> "TokenClassification":
        """The tags of ``id2label``, their scheme (IOB2 or BIOES) read from the names."""
        labels = config_labels(config)
        if not labels:
            raise UsageError(f"{directory}: config.json has no id2label; the tags are unknown")
        bad = [tag for tag in labels if tag_problem(tag) is not None]
        if bad:
            raise UsageError(f"{directory}: config.json's labels {', '.join(bad[:5])} are not "
                             f"IOB2/BIOES tags (O, B-TYPE, I-TYPE, …); token-classification "
                             f"decodes entities from such tags")
        return cls(labels=labels, scheme=detect_scheme([labels]))
    greater_is_better = True

    def __init__(self, labels: Sequence[str] | None = None, **options: Any):
        super().__init__(labels, **options)
        scheme = str(self.settings["scheme"]).lower()
        if scheme not in ("auto", *SCHEMES):
            raise UsageError(f"task option 'scheme': expected auto, iob2 or bioes, got {scheme!r}")
        self.settings["scheme"] = scheme
        _check_strategy(self.settings["aggregation"], "task option 'aggregation'")
        if self.settings["stride"] < 0:
            raise UsageError(f"task option 'stride': must be 0 or more, got "
                             f"{self.settings['stride']}")

    @property
    def scheme(self) -> str:
        """The tag scheme: the option, or with scheme=auto the one of the labels (IOB2 until
        ``fit`` or ``--labels`` gave some)."""
        if self.settings["scheme"] != "auto":
            return self.settings["scheme"]
        return detect_scheme([self.labels]) if self.labels else IOB2

    # -- data -------------------------------------------------------------------------------

    def check_row(self, row: dict, path: str | None = None, line: int | None = None,
                  training: bool = True) -> None:
        super().check_row(row, path, line, training)
        if not training:
            if (row.get("text") is None) == (row.get("tokens") is None):
                raise DataError("a request needs exactly one of 'text' (a string) and 'tokens' "
                                "(a list of words)", path, line)
            if row.get("aggregation") is not None:
                _check_strategy(row["aggregation"], "field 'aggregation'", path, line)
            return
        tokens, tags = row["tokens"], row["tags"]
        if len(tokens) != len(tags):
            raise DataError(f"{len(tokens)} tokens but {len(tags)} tags (one tag per token)",
                            path, line, "tags")
        if not tokens:
            raise DataError("no tokens (an empty sentence has nothing to learn from)",
                            path, line, "tokens")
        scheme = None if self.settings["scheme"] == "auto" and self.labels is None else self.scheme
        for i, tag in enumerate(tags):
            problem = tag_problem(tag, scheme)
            if problem:
                raise DataError(f"item {i}: {problem}", path, line, "tags")
            if self.labels is not None and tag not in self.labels:
                types = sorted({t[2:] for t in self.labels if t != OUTSIDE})
                raise DataError(f"item {i}: unknown tag {tag!r}: the model knows the types "
                                f"{', '.join(types)} ({self.scheme.upper()})", path, line, "tags")

    def fit(self, rows: Sequence[dict]) -> None:
        if self.labels is not None:  # given with --labels
            self.settings["scheme"] = self.scheme
            return
        tag_lists = [row["tags"] for row in rows]
        if self.settings["scheme"] == "auto":
            self.settings["scheme"] = detect_scheme(tag_lists)
        elif self.scheme == IOB2 and detect_scheme(tag_lists) == BIOES:
            raise UsageError("the training tags use E- or S- (BIOES) but the task option "
                             "scheme is iob2; use scheme=bioes or scheme=auto")
        labels = label_set(tag_lists, self.scheme)
        if len(labels) < 2:
            raise UsageError("the training data has no entity tags (every tag is O)")
        self.labels = labels

    # -- preprocessing ----------------------------------------------------------------------

    def encode(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        features, _ = encode_words([words_of(row) for row in rows], tokenizer,
                                   self.settings["stride"])
        return features

    def training_batch(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        features = self.encode(rows, tokenizer)
        index = {tag: i for i, tag in enumerate(self.labels or [])}
        labels = align_labels(features, [row["tags"] for row in rows], index,
                              self.settings["label_all_tokens"])
        model_features = {k: v for k, v in features.items()
                          if k in ("input_ids", "attention_mask", "token_type_ids")}
        return {**model_features, "labels": labels}

    def loss_units(self, batch: dict[str, Any]) -> int:
        """Labelled sub-tokens: the head's loss is their mean."""
        return int((batch["labels"] != IGNORE_INDEX).sum())

    # -- head -------------------------------------------------------------------------------

    def build_model(self, base: str, **kwargs: Any) -> Any:
        from transformers import AutoModelForTokenClassification

        labels = self.labels or []
        return AutoModelForTokenClassification.from_pretrained(
            base, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)}, **kwargs)

    def load_model(self, path: str, **kwargs: Any) -> Any:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification.from_pretrained(path, **kwargs)

    def export_signature(self, model_inputs: Sequence[str]):
        return encoder_signature(model_inputs, per_token=True)

    # -- outputs ----------------------------------------------------------------------------

    def postprocess(self, outputs: dict[str, np.ndarray], rows: Sequence[dict]) -> list[dict]:
        labels = self.labels or []
        predictions = []
        for row, tokens in zip(rows, merge_windows(outputs, len(rows))):
            strategy = row.get("aggregation") or self.settings["aggregation"]
            prediction = decode_row(tokens, words_of(row), labels, strategy)
            if row.get("tokens") is None:
                del prediction["tags"]
            predictions.append(prediction)
        return predictions

    def metrics(self, predictions: Sequence[dict], rows: Sequence[dict]) -> dict[str, Any]:
        return entity_report([p["tags"] for p in predictions], [r["tags"] for r in rows],
                             self.scheme)

    def report(self, predictions: Sequence[dict], rows: Sequence[dict],
               metrics: dict[str, Any]) -> list[Any]:
        """F1 per entity type, and the most frequent confusions: entities found with the right
        words and the wrong type, missed ones, spurious ones."""
        from nlpforge import ReportSection
        from nlpforge_token_classification.confusions import entity_confusions

        per = metrics.get("per_type", {})
        kinds = list(per)
        scores = {k: [per[kind][k] for kind in kinds] for k in ("precision", "recall", "f1")}
        confusions = entity_confusions([p["tags"] for p in predictions],
                                       [r["tags"] for r in rows], self.scheme)
        return [ReportSection("Scores per entity type",
                        draw=lambda p: p.bars(kinds, scores, "precision, recall and F1"),
                        table=[{"type": kind, **per[kind]} for kind in kinds]),
                ReportSection("Most frequent confusions",
                        note="true → predicted for the same words; '-' is no entity",
                        table=confusions[:15])]

    def example_request(self) -> dict[str, Any]:
        return {"text": "Ada Lovelace met Charles Babbage in London in June 1833."}


def _check_strategy(value: Any, where: str, path: str | None = None,
                    line: int | None = None) -> None:
    if value not in STRATEGIES:
        message = f"{where}: expected one of {', '.join(STRATEGIES)}, got {value!r}"
        if path is None:
            raise UsageError(message)
        raise DataError(message, path, line)
