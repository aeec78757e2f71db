"""text-regression: a number from a text. Uses only nlpforge's public plugin API."""

from __future__ import annotations

import json
from typing import Any, Sequence

import click
import numpy as np

import nlpforge
from nlpforge import ENCODER_INPUTS, Field, ModelFamily, Task

NLPFORGE_PLUGIN_API = 1


class TextRegression(Task):
    id = "text-regression"
    description = "Predict a number from a text (ratings, scores)"
    family = ModelFamily.ENCODER
    train_fields = (Field("text", str), Field("score", (int, float)))
    request_fields = (Field("text", str),)
    primary_metric = "mse"
    greater_is_better = False

    def encode(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        return tokenizer.pad(tokenizer.encode([r["text"] for r in rows]), ENCODER_INPUTS)

    def targets(self, rows: Sequence[dict]) -> dict[str, np.ndarray]:
        return {"labels": np.array([float(r["score"]) for r in rows], dtype=np.float32)}

    def build_model(self, base: str, **kwargs: Any) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=1, problem_type="regression", **kwargs)

    def load_model(self, path: str) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(path)

    def postprocess(self, outputs: dict[str, np.ndarray], rows: Sequence[dict]) -> list[dict]:
        return [{"score": float(v)} for v in outputs["logits"][:, 0]]

    def metrics(self, predictions: Sequence[dict], rows: Sequence[dict]) -> dict[str, Any]:
        pred = np.array([p["score"] for p in predictions], dtype=np.float64)
        ref = np.array([float(r["score"]) for r in rows], dtype=np.float64)
        err = pred - ref
        pearson = float(np.corrcoef(pred, ref)[0, 1]) if len(ref) > 1 and pred.std() > 0 \
            and ref.std() > 0 else 0.0
        return {"mse": float(np.mean(err**2)), "mae": float(np.mean(np.abs(err))),
                "pearson": pearson}


@nlpforge.hookimpl
def register_tasks(register):
    register(TextRegression)


@nlpforge.hookimpl
def register_commands(cli):
    @cli.command(name="text-regression-stats")
    @click.argument("data")
    def stats(data: str) -> None:
        """Count, mean, min and max of the scores in a data file."""
        rows = nlpforge.read_dataset(data, TextRegression()).rows
        scores = np.array([float(r["score"]) for r in rows])
        click.echo(json.dumps({"rows": len(rows), "mean": float(scores.mean()),
                               "min": float(scores.min()), "max": float(scores.max())}))
