"""sentence-similarity: how alike two sentences are, with a custom siamese head.

A third-party nlpforge plugin that uses only the public plugin API. The head is its own
``nn.Module`` (``head.py``: one encoder for both sentences, its own pooling, cosine similarity),
not an ``AutoModelFor…`` class, so the task overrides ``build_model``, ``load_model``,
``compute_loss``, ``forward`` and ``export_signature``. This module imports no torch: encoding,
postprocessing and metrics run in the torch-free runtime.

Rows: ``{"text_a": ..., "text_b": ..., "score": 0..max_score}``; requests: ``text_a``,
``text_b``; predictions: ``{"score": ..., "similarity": cosine}``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

import nlpforge
from nlpforge import (ENCODER_INPUTS, DataError, Field, ModelFamily, Option, Signature, Task,
                      UsageError, encoder_signature)

NLPFORGE_PLUGIN_API = 1
LOSSES = ("cosine_mse", "cosent")
POOLINGS = ("mean", "cls", "max")


class SentenceSimilarity(Task):
    """Semantic textual similarity (STS), duplicate questions, paraphrase scores."""

    id = "sentence-similarity"
    version = 1
    description = "Score how similar two sentences are (siamese encoder, cosine similarity)"
    family = ModelFamily.ENCODER
    train_fields = (
        Field("text_a", str, description="the first sentence"),
        Field("text_b", str, description="the second sentence"),
        Field("score", (int, float), description="gold similarity, min_score..max_score"),
    )
    request_fields = (
        Field("text_a", str, description="the first sentence"),
        Field("text_b", str, description="the second sentence"),
    )
    options = (
        Option("min_score", 0.0, "the lowest gold score (STS-B: 0)"),
        Option("max_score", 1.0, "the highest gold score (STS-B: 5)"),
        Option("pooling", "mean", "token states → sentence vector: mean, cls or max"),
        Option("projection_dim", 0, "a linear projection after pooling (0: none)"),
        Option("loss", "cosine_mse", "cosine_mse (regress the cosine) or cosent (ranking)"),
        Option("cosent_scale", 20.0, "cosent: the temperature of the ranking loss"),
        Option("include_embeddings", False, "add both sentence vectors to each prediction"),
    )
    primary_metric = "spearman"
    greater_is_better = True

    def __init__(self, labels: Sequence[str] | None = None, **options: Any):
        super().__init__(labels, **options)
        s = self.settings
        if s["pooling"] not in POOLINGS:
            raise UsageError(f"task option 'pooling': expected one of {', '.join(POOLINGS)}, "
                             f"got {s['pooling']!r}")
        if s["loss"] not in LOSSES:
            raise UsageError(f"task option 'loss': expected one of {', '.join(LOSSES)}, "
                             f"got {s['loss']!r}")
        if not s["max_score"] > s["min_score"]:
            raise UsageError(f"task options: max_score ({s['max_score']}) must be greater "
                             f"than min_score ({s['min_score']})")
        if s["projection_dim"] < 0:
            raise UsageError("task option 'projection_dim' must be 0 (none) or positive")

    # -- data -------------------------------------------------------------------------------

    def check_row(self, row: dict, path: str | None = None, line: int | None = None,
                  training: bool = True) -> None:
        super().check_row(row, path, line, training)
        if training:
            low, high = self.settings["min_score"], self.settings["max_score"]
            if not low <= row["score"] <= high:
                raise DataError(f"score {row['score']} is outside {low}..{high} (set the task "
                                f"options min_score/max_score to your scale)", path, line,
                                "score")

    # -- preprocessing: both sentences of every row in one batch, first sentences first -----

    def encode(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        texts = [r["text_a"] for r in rows] + [r["text_b"] for r in rows]
        return tokenizer.pad(tokenizer.encode(texts), ENCODER_INPUTS)

    def targets(self, rows: Sequence[dict]) -> dict[str, np.ndarray]:
        low, high = self.settings["min_score"], self.settings["max_score"]
        scores = np.array([float(r["score"]) for r in rows], dtype=np.float32)
        return {"labels": (scores - low) / (high - low)}

    # -- head (torch, imported here only) ---------------------------------------------------

    def build_model(self, base: Any, **kwargs: Any) -> Any:
        from nlpforge_sentence_similarity import head

        return head.build(base, self.settings["pooling"], self.settings["projection_dim"],
                          **kwargs)

    def load_model(self, path: str) -> Any:
        from nlpforge_sentence_similarity import head

        return head.load(path, self.settings["pooling"], self.settings["projection_dim"])

    def compute_loss(self, model: Any, batch: dict[str, Any]) -> Any:
        from nlpforge_sentence_similarity import head

        features = {k: v for k, v in batch.items() if k in ENCODER_INPUTS}
        return head.pair_loss(model(**features), batch["labels"], self.settings["loss"],
                              self.settings["cosent_scale"])

    def forward(self, model: Any, features: dict[str, Any]) -> dict[str, Any]:
        return {"embeddings": model(**features)}

    def export_signature(self, model_inputs: Sequence[str]) -> Signature:
        return encoder_signature(model_inputs, outputs=("embeddings",))

    # -- outputs (numpy) --------------------------------------------------------------------

    def postprocess(self, outputs: dict[str, np.ndarray], rows: Sequence[dict]) -> list[dict]:
        n = len(rows)
        vectors = outputs["embeddings"].astype(np.float64)
        a, b = vectors[:n], vectors[n:2 * n]
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosine = (a * b).sum(axis=1) / np.maximum(norms, 1e-12)
        low, high = self.settings["min_score"], self.settings["max_score"]
        out = []
        for i, c in enumerate(cosine):
            prediction = {"score": float(low + np.clip(c, 0.0, 1.0) * (high - low)),
                          "similarity": float(c)}
            if self.settings["include_embeddings"]:
                prediction["embedding_a"] = a[i].astype(np.float32).tolist()
                prediction["embedding_b"] = b[i].astype(np.float32).tolist()
            out.append(prediction)
        return out

    def metrics(self, predictions: Sequence[dict], rows: Sequence[dict]) -> dict[str, Any]:
        cosine = np.array([p["similarity"] for p in predictions], dtype=np.float64)
        gold = np.array([float(r["score"]) for r in rows], dtype=np.float64)
        scores = np.array([p["score"] for p in predictions], dtype=np.float64)
        return {"spearman": correlation(ranks(cosine), ranks(gold)),
                "pearson": correlation(cosine, gold),
                "mse": float(np.mean((scores - gold) ** 2)) if len(gold) else 0.0}

    def example_request(self) -> dict[str, Any]:
        return {"text_a": "a man is playing a guitar", "text_b": "someone plays music"}


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties sharing their average rank (what Spearman's rho needs)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + ends - 1) / 2.0)[inverse]


def correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r; 0 where it is undefined (fewer than 2 values, or a constant)."""
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


@nlpforge.hookimpl
def register_tasks(register):
    register(SentenceSimilarity)
