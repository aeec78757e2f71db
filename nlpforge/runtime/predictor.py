"""Predictor: an export dir loaded for prediction with ONNX Runtime. No torch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nlpforge.errors import DataError
from nlpforge.manifest import Manifest, read_manifest, task_from_manifest
from nlpforge.runtime.batching import batch_groups, by_length, predict_rows, row_size
from nlpforge.runtime.providers import load_session
from nlpforge.runtime.tokenizer import Tokenizer
from nlpforge.runtime.variants import choose_variant, variant_entry

#: Rows sorted by token count together (and their encodings kept meanwhile) in one block.
SORT_BLOCK = 8192


class Predictor:
    """Predictions from an exported model: ``Predictor.load(dir).predict(["some text"])``."""

    def __init__(self, directory: Path, manifest: Manifest, task: Any,
                 tokenizer: Tokenizer, session: Any, batch_size: int = 32,
                 variant: str = "fp32"):
        self.directory = directory
        self.manifest = manifest
        self.task = task
        self.tokenizer = tokenizer
        self.session = session
        self.batch_size = batch_size
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.variant = variant
        #: Why this variant runs (``choose_variant``): asked for, tuned here, or the default.
        self.variant_reason = "asked for"

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto", threads: int | None = None,
             batch_size: int = 32, variant: str | None = None) -> "Predictor":
        """Load an export dir. ``device``: auto, cpu, cuda or cuda:N; ``threads``: CPU threads;
        ``variant``: fp32, optimized, int8 or fp16 (default: the export's lossless best)."""
        directory = Path(path)
        manifest = read_manifest(directory, kind="export")
        task = task_from_manifest(manifest, str(directory))
        name, why = choose_variant(manifest, variant)
        entry = variant_entry(manifest, name, directory)
        tok = manifest["tokenizer"]
        tokenizer = Tokenizer.from_dir(directory, max_length=tok["max_length"],
                                       pad_id=tok.get("pad_id"))
        session = load_session(directory / entry["file"], device, threads,
                               settings=entry.get("session"))
        predictor = cls(directory, manifest, task, tokenizer, session, batch_size, name)
        predictor.variant_reason = why
        return predictor

    @property
    def labels(self) -> list[str] | None:
        return self.task.labels

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the ONNX model on numpy features; returns its outputs by name."""
        feeds = {name: features[name] for name in self.input_names if name in features}
        values = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, values))

    def as_rows(self, inputs: Sequence[str | dict]) -> list[dict]:
        """Turn plain strings into requests and check every request against the task."""
        first = self.task.request_fields[0].name
        rows = []
        for i, item in enumerate(inputs):
            row = {first: item} if isinstance(item, str) else item
            self.task.check_row(row, f"inputs[{i}]", None, training=False)
            rows.append(row)
        return rows

    def predict(self, inputs: Sequence[str | dict], batch_size: int | None = None,
                checked: bool = False) -> list[dict]:
        """One prediction per input (a string or a request dict), in input order.

        ``checked``: the inputs are rows the caller has validated already, e.g. labelled rows
        for ``nlpforge evaluate``, which need not be valid requests (fill-mask evaluates
        texts without a mask token).
        """
        if isinstance(inputs, (str, dict)):
            raise DataError("predict() takes a list of inputs, not a single one")
        rows = list(inputs) if checked else self.as_rows(inputs)
        batch_size = batch_size or self.batch_size
        if len(rows) <= batch_size:
            return predict_rows(self.task, self.tokenizer, self.run, rows, batch_size)
        out: list[dict] = []
        for start in range(0, len(rows), SORT_BLOCK):
            out += self._sorted_predict(rows[start:start + SORT_BLOCK], batch_size)
        return out

    def _sorted_predict(self, rows: list[dict], batch_size: int) -> list[dict]:
        """Predict ``rows`` in batches of rows with the same number of tokens: they waste no
        compute on padding (sorting by characters leaves far more). Counting the tokens
        encodes the rows (each batch key's rows apart), and the batches reuse those
        encodings."""
        with self.tokenizer.reuse():
            order = []
            for group in batch_groups(self.task, rows):
                counts = self._token_counts([rows[i] for i in group])
                order += [group[k] for k in by_length(counts)]
            results = predict_rows(self.task, self.tokenizer, self.run,
                                   [rows[i] for i in order], batch_size, sort_by_length=False)
        out: list[dict] = [{}] * len(rows)
        for i, result in zip(order, results):
            out[i] = result
        return out

    def _token_counts(self, rows: list[dict], chunk: int = 1024) -> list[int]:
        """Tokens per row: the task's attention mask; where the task's features are not one
        row per row (windows, a sentence pair as two feature rows), the tokens of the row's
        texts (cut at the maximum length); a character count where neither is known."""
        if self.task.splits_rows:
            texts = [" ".join(v for v in row.values() if isinstance(v, str)) for row in rows]
            return [len(e.ids) for e in self.tokenizer.encode(texts)]
        counts: list[int] = []
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            mask = self.task.encode(part, self.tokenizer).get("attention_mask")
            if mask is None or len(mask) != len(part):
                return [row_size(row) for row in rows]
            counts.extend(mask.sum(axis=1).tolist())
        return counts

    def __repr__(self) -> str:
        return (f"Predictor({str(self.directory)!r}, task={self.task.id!r}, "
                f"variant={self.variant!r}, providers={self.providers})")
