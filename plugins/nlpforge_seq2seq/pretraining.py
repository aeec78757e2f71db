"""span-corruption: T5's pretraining objective, for continued pretraining on in-domain text.

Each training text gets fresh random spans (``numpy.random``: the trainer checkpoints its
state, so a resumed run draws the same spans). Evaluation rows are corrupted with a generator
seeded by the text itself, so every evaluation scores the same corruption and leaves the
training stream untouched. A request that already holds sentinels (``<extra_id_0>`` …) is
taken as it is: the model generates the missing spans.
"""

from __future__ import annotations

import zlib
from typing import Any, Sequence

import numpy as np

from nlpforge import IGNORE_INDEX, Field, Option, Task, Tokenizer, UsageError

from nlpforge_seq2seq import text_scores as m
from nlpforge_seq2seq.encoding import INPUTS, pad_labels
from nlpforge_seq2seq.span_corruption import SENTINEL, corrupt
from nlpforge_seq2seq.tasks import Text2TextGeneration


class SpanCorruption(Text2TextGeneration):
    """Random spans → sentinels; the model learns to restore them."""

    id = "span-corruption"
    description = "T5 span-corruption pretraining on plain text (needs sentinel tokens)"
    train_fields = (Field("text", str, description="a plain text"),)
    request_fields = (Field("text", str, description="a text with <extra_id_N> sentinels "
                                                     "where spans are missing"),)
    options = (
        Option("noise_density", 0.15, "share of tokens replaced (T5: 0.15)"),
        Option("mean_noise_span_length", 3.0, "mean length of a replaced span (T5: 3)"),
        Option("max_target_length", 128, "generation length limit for predictions"),
    )
    source_names = ("text",)
    target_names = ()

    def __init__(self, labels: Sequence[str] | None = None, **options: Any):
        super().__init__(labels, **options)
        density, span = self.settings["noise_density"], self.settings["mean_noise_span_length"]
        if not 0 < density < 1:
            raise UsageError(f"task option noise_density must be in (0, 1), got {density}")
        if span < 1:
            raise UsageError(f"task option mean_noise_span_length must be at least 1, got {span}")

    def check_row(self, row: dict, path: str | None = None, line: int | None = None,
                  training: bool = True) -> None:
        Task.check_row(self, row, path, line, training)  # the declared 'text' field only

    def _sources(self) -> tuple[str, ...]:
        return self.source_names

    def prefix(self) -> str:
        return ""

    def resolve_prefix(self, model_type: str | None) -> None:
        pass

    def target_text(self, row: dict) -> str | None:
        return None

    def build_model(self, base: str, **kwargs: Any) -> Any:
        """Refuses, before training starts, a local base model whose tokenizer has no
        sentinels (a hub model is checked at the first batch)."""
        from pathlib import Path

        from nlpforge_seq2seq.span_corruption import sentinel_ids

        if (Path(base) / "tokenizer.json").is_file():
            sentinel_ids(Tokenizer.from_dir(base, 8, 0), 1)
        return super().build_model(base, **kwargs)

    # -- preprocessing ----------------------------------------------------------------------

    def _corrupted(self, rows: Sequence[dict], tokenizer: Any,
                   rng_of: Any) -> dict[str, np.ndarray]:
        sources, targets = [], []
        for row, encoding in zip(rows, tokenizer.encode([r["text"] for r in rows])):
            content = [t for t, special in zip(encoding.ids, encoding.special_tokens_mask)
                       if not special]
            ends = [t for t, special in zip(encoding.ids, encoding.special_tokens_mask)
                    if special]
            eos = ends[-1] if ends else None
            source, target = corrupt(content, eos, tokenizer, self.settings["noise_density"],
                                     self.settings["mean_noise_span_length"], rng_of(row))
            sources.append(source)
            targets.append(target)
        ids = pad_labels(sources)
        mask = (ids != IGNORE_INDEX).astype(np.int64)
        ids[mask == 0] = tokenizer.pad_id
        return {"input_ids": ids, "attention_mask": mask, "labels": pad_labels(targets)}

    def training_batch(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        """Fresh random spans from the global ``numpy.random`` (checkpointed by the trainer)."""
        return self._corrupted(rows, tokenizer, lambda row: np.random)

    def batch_key(self, row: dict) -> bool:
        """Texts with sentinels (requests) and plain texts (corrupted here) are encoded apart:
        ``encode`` takes a batch as it is as soon as one of its texts has a sentinel."""
        return SENTINEL.format(0) in row["text"]

    def encode(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        """Requests with sentinels as they are; plain texts (evaluation rows) corrupted the
        same way every time (a generator seeded by the text), with labels. A batch is one
        or the other (``batch_key``)."""
        self._tokenizer = tokenizer
        if any(SENTINEL.format(0) in r["text"] for r in rows):
            return tokenizer.pad(tokenizer.encode([r["text"] for r in rows]), INPUTS)
        return self._corrupted(rows, tokenizer, lambda row: np.random.RandomState(
            zlib.crc32(row["text"].encode("utf-8"))))

    def metrics(self, predictions: Sequence[dict], rows: Sequence[dict]) -> dict[str, Any]:
        """Teacher-forced: loss/perplexity. Generated (an export): how often the generated
        spans equal the removed ones, and their chrF (sentinels are not compared: generated
        text is decoded without special tokens)."""
        result: dict[str, Any] = {}
        if predictions and all("nll" in p for p in predictions):
            result.update(m.perplexity(predictions))
        tokenizer = getattr(self, "_tokenizer", None)
        if predictions and tokenizer is not None and \
                all("generated_text" in p for p in predictions):
            labels = self.encode(rows, tokenizer)["labels"]
            expected = [tokenizer.decode([int(t) for t in row if t >= 0]) for row in labels]
            generated = [p["generated_text"] for p in predictions]
            result["exact_match"] = m.exact_match(generated, expected)
            result["chrf"] = m.bleu_chrf(generated, expected)["chrf"]
        return result

    def example_request(self) -> dict[str, Any]:
        return {"text": "nlpforge <extra_id_0> check"}
