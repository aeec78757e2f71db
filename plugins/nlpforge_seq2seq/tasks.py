"""The encoder-decoder tasks: text2text-generation and the two it specialises
(summarization, translation). Span corruption lives in ``pretraining.py``.

Rows hold a source text and a target text; field names follow the data people have
(``source``/``target``, ``input``/``output``; ``document``/``summary`` for summarization) and
can be set with the ``source_field``/``target_field`` options.

Training-time evaluation is teacher-forced (one forward pass, no generation): ``postprocess``
turns the decoder's scores of the reference into per-row NLL and ``metrics`` reports loss and
perplexity, the default best-model metric. ``nlpforge evaluate`` on an export generates text
(``evaluate_by = "generate"``) and adds ROUGE / BLEU / chrF.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np

from nlpforge import IGNORE_INDEX, DataError, Field, ModelFamily, Option, Task
from nlpforge.metrics import nll_predictions

from nlpforge_seq2seq import text_scores as m
from nlpforge_seq2seq.encoding import encode_sources, first_present, is_t5, pad_labels, target_ids


class Text2TextGeneration(Task):
    """Any text → text mapping (generative QA, rewriting, …) on an encoder-decoder model."""

    id = "text2text-generation"
    version = 1
    description = "Map an input text to an output text (encoder-decoder: T5, BART, Marian)"
    family = ModelFamily.ENCODER_DECODER
    train_fields = (
        Field("source", str, required=False, description="the input text (alias: input)"),
        Field("target", str, required=False, description="the output text (alias: output)"),
    )
    request_fields = (Field("source", str, required=False,
                            description="the input text (alias: input)"),)
    options = (
        Option("source_field", "", "field holding the input text (default: source or input)"),
        Option("target_field", "", "field holding the output text (default: target or output)"),
        Option("prefix", "auto", "text put before every input; 'auto': the task's T5 prefix "
                                 "for T5-family models, none for others"),
        Option("max_target_length", 128, "targets are cut to this many tokens"),
    )
    primary_metric = "perplexity"
    greater_is_better = False
    evaluate_by = "generate"
    #: Features ``forward`` needs besides the model's inputs (teacher forcing).
    forward_extras: ClassVar[tuple[str, ...]] = ("labels",)
    #: Field names tried in order when the option is not set.
    source_names: ClassVar[tuple[str, ...]] = ("source", "input")
    target_names: ClassVar[tuple[str, ...]] = ("target", "output")
    #: What ``prefix=auto`` means for T5-family models.
    t5_prefix: ClassVar[str] = ""
    checkpoint_heads = ("ForConditionalGeneration", "MTModel", "EncoderDecoderModel")
    #: The key of a T5 config's ``task_specific_params`` whose prefix the task takes.
    config_params: ClassVar[str] = ""

    @classmethod
    def checkpoint_match(cls, config: dict[str, Any], directory: Any) -> int:
        """An encoder-decoder's generation head: text2text-generation picks it, summarization
        and translation take it when named."""
        if not config.get("is_encoder_decoder") or not super().checkpoint_match(config,
                                                                                 directory):
            return 0
        return 2 if cls.id == Text2TextGeneration.id else 1

    @classmethod
    def from_pretrained_config(cls, config: dict[str, Any], tokenizer: Any,
                               directory: Any) -> "Text2TextGeneration":
        """The prefix the checkpoint's ``task_specific_params`` gives this task (T5's
        ``summarize: ``), else ``auto`` (resolved for the model type when it loads)."""
        task = cls()
        params = config.get("task_specific_params") or {}
        chosen = params.get(cls.config_params) if cls.config_params else None
        if isinstance(chosen, dict) and isinstance(chosen.get("prefix"), str):
            task.settings["prefix"] = chosen["prefix"]
        return task

    # -- fields -----------------------------------------------------------------------------

    def _sources(self) -> tuple[str, ...]:
        return (self.settings["source_field"],) if self.settings["source_field"] else \
            self.source_names

    def _targets(self) -> tuple[str, ...]:
        return (self.settings["target_field"],) if self.settings["target_field"] else \
            self.target_names

    def check_row(self, row: dict, path: str | None = None, line: int | None = None,
                  training: bool = True) -> None:
        super().check_row(row, path, line, training)
        wanted = [self._sources()] + ([self._targets()] if training else [])
        for names in wanted:
            value = first_present(row, names)
            if value is None:
                raise DataError(f"missing required field '{names[0]}'"
                                + (f" (or {', '.join(repr(n) for n in names[1:])})"
                                   if len(names) > 1 else "") + " (string)", path, line)
            if not isinstance(value, str):
                name = next(n for n in names if row.get(n) is not None)
                raise DataError(f"expected string, got {type(value).__name__} {value!r:.60}",
                                path, line, name)

    def source_text(self, row: dict) -> str:
        return self.prefix() + first_present(row, self._sources())

    def target_text(self, row: dict) -> str | None:
        return first_present(row, self._targets())

    def prefix(self) -> str:
        """The resolved prefix ('auto' is resolved by ``build_model``; unresolved: none)."""
        prefix = self.settings["prefix"]
        return "" if prefix == "auto" else prefix

    def resolve_prefix(self, model_type: str | None) -> None:
        if self.settings["prefix"] == "auto":
            self.settings["prefix"] = self.t5_prefix if is_t5(model_type) else ""

    # -- preprocessing ----------------------------------------------------------------------

    def encode(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        """Encoder inputs; with ``labels`` when every row has a target (evaluation rows), so a
        teacher-forced forward pass can score them."""
        self._tokenizer = tokenizer  # postprocess decodes run-dir generations with it
        features = encode_sources([self.source_text(r) for r in rows], tokenizer)
        targets = [self.target_text(r) for r in rows]
        if rows and all(t is not None for t in targets):
            features["labels"] = pad_labels(target_ids(targets, tokenizer,
                                                       self.settings["max_target_length"]))
        return features

    def batch_key(self, row: dict) -> bool:
        """Rows with a target are scored (teacher-forced), rows without generate: ``encode``
        adds ``labels`` only when every row of a batch has a target."""
        return self.target_text(row) is not None

    def training_batch(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        return self.encode(rows, tokenizer)

    def targets(self, rows: Sequence[dict]) -> dict[str, np.ndarray]:
        raise NotImplementedError("labels depend on the tokenizer: see training_batch()")

    def loss_units(self, batch: dict[str, Any]) -> int:
        """Target tokens: transformers' seq2seq loss is a mean over them."""
        return int((batch["labels"] != IGNORE_INDEX).sum())

    # -- head -------------------------------------------------------------------------------

    def build_model(self, base: str, **kwargs: Any) -> Any:
        from transformers import AutoModelForSeq2SeqLM

        model = AutoModelForSeq2SeqLM.from_pretrained(base, **kwargs)
        self.resolve_prefix(getattr(model.config, "model_type", None))
        return model

    def load_model(self, path: str, **kwargs: Any) -> Any:
        from transformers import AutoModelForSeq2SeqLM

        model = AutoModelForSeq2SeqLM.from_pretrained(path, **kwargs)
        self.resolve_prefix(getattr(model.config, "model_type", None))
        return model

    def forward(self, model: Any, features: dict[str, Any]) -> dict[str, Any]:
        """With ``labels``: teacher-forced per-token NLL of the labels (``token_nll``, 0 on
        padding; summed in torch rather than shipping [batch, length, vocab] logits to numpy).
        Without: greedy generation (``sequences``), for ``nlpforge predict`` on a run dir."""
        import torch

        inputs = {k: features[k] for k in ("input_ids", "attention_mask") if k in features}
        labels = features.get("labels")
        if labels is None:
            sequences = model.generate(**inputs, do_sample=False, num_beams=1,
                                       max_new_tokens=self.settings["max_target_length"])
            return {"sequences": sequences}
        logits = model(**inputs, labels=labels).logits.float()
        safe = labels.clamp(min=0)
        nll = -torch.log_softmax(logits, dim=-1).gather(-1, safe[..., None])[..., 0]
        return {"token_nll": torch.where(labels == IGNORE_INDEX, torch.zeros_like(nll), nll)}

    # -- outputs ----------------------------------------------------------------------------

    def postprocess(self, outputs: dict[str, np.ndarray], rows: Sequence[dict]) -> list[dict]:
        """Teacher-forced outputs → ``{"nll", "tokens", "perplexity"}`` per row; generated
        sequences → ``{"generated_text"}``."""
        if "sequences" in outputs:
            tokenizer = self._tokenizer
            return [{"generated_text": tokenizer.decode([int(t) for t in seq])}
                    for seq in outputs["sequences"]]
        labels = outputs["labels"]
        if "token_nll" in outputs:
            nll = outputs["token_nll"].astype(np.float64).sum(axis=-1)
            count = (labels != IGNORE_INDEX).sum(axis=-1)
        else:
            nll, count = m.target_nll(outputs["logits"], labels)
        return nll_predictions(nll, count)

    def metrics(self, predictions: Sequence[dict], rows: Sequence[dict]) -> dict[str, Any]:
        """Loss/perplexity for teacher-forced predictions; text metrics for generated ones."""
        result: dict[str, Any] = {}
        if predictions and all("nll" in p for p in predictions):
            result.update(m.perplexity(predictions))
        if predictions and all("generated_text" in p for p in predictions):
            generated = [p["generated_text"] for p in predictions]
            references = [self.target_text(r) or "" for r in rows]
            result.update(self.text_metrics(generated, references))
        return result

    def report(self, predictions: Sequence[dict], rows: Sequence[dict],
               metrics: dict[str, Any]) -> list[Any]:
        """Generated text: the text metrics as bars and the first examples beside their
        references."""
        from nlpforge import ReportSection

        if not predictions or not all("generated_text" in p for p in predictions):
            return []
        names = [k for k in ("rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match")
                 if isinstance(metrics.get(k), (int, float))]
        values = [metrics[k] * (100 if k == "exact_match" else 1) for k in names]
        examples = [{"source": self.source_text(r), "reference": self.target_text(r) or "",
                     "generated": p["generated_text"]} for p, r in zip(predictions[:10], rows)]
        sections = [ReportSection("Examples", note="the first 10 rows", table=examples)]
        if names:
            sections.insert(0, ReportSection(
                "Text metrics", note="all ×100",
                draw=lambda p: p.bars(names, {"score": values}, "generated vs reference",
                                      limit=100)))
        return sections

    def text_metrics(self, generated: list[str], references: list[str]) -> dict[str, Any]:
        return {**m.rouge(generated, references), **m.bleu_chrf(generated, references),
                "exact_match": m.exact_match(generated, references)}

    def example_request(self) -> dict[str, Any]:
        return {self._sources()[0]: "nlpforge export check"}


class Summarization(Text2TextGeneration):
    """Document → summary; ROUGE-1/2/L on generated summaries."""

    id = "summarization"
    description = "Summarize a document (encoder-decoder: T5, BART, …)"
    train_fields = (
        Field("document", str, required=False, description="the text to summarize "
                                                             "(alias: source)"),
        Field("summary", str, required=False, description="its summary (alias: target)"),
    )
    request_fields = (Field("document", str, required=False,
                            description="the text to summarize (alias: source)"),)
    options = (
        Option("source_field", "", "field holding the document (default: document or source)"),
        Option("target_field", "", "field holding the summary (default: summary or target)"),
        Option("prefix", "auto", "text put before every document; 'auto': 'summarize: ' for "
                                 "T5-family models, none for others"),
        Option("max_target_length", 128, "summaries are cut to this many tokens"),
    )
    source_names = ("document", "source")
    target_names = ("summary", "target")
    t5_prefix = "summarize: "
    config_params = "summarization"
    default_max_length = 512

    def text_metrics(self, generated: list[str], references: list[str]) -> dict[str, Any]:
        return m.rouge(generated, references)


class Translation(Text2TextGeneration):
    """Source language → target language; BLEU and chrF on generated translations."""

    id = "translation"
    description = "Translate a text (encoder-decoder: Marian, T5, mBART, …)"
    options = (
        Option("source_field", "", "field holding the text to translate (default: source)"),
        Option("target_field", "", "field holding the translation (default: target)"),
        Option("source_lang", "English", "source language name, used in the T5 prefix"),
        Option("target_lang", "German", "target language name, used in the T5 prefix"),
        Option("prefix", "auto", "text put before every input; 'auto': 'translate "
                                 "{source_lang} to {target_lang}: ' for T5-family models"),
        Option("max_target_length", 128, "translations are cut to this many tokens"),
    )
    train_fields = (
        Field("source", str, required=False, description="the text to translate"),
        Field("target", str, required=False, description="its translation"),
    )
    request_fields = (Field("source", str, required=False,
                            description="the text to translate"),)
    source_names = ("source",)
    target_names = ("target",)

    @property
    def t5_prefix(self) -> str:  # type: ignore[override]
        return f"translate {self.settings['source_lang']} to {self.settings['target_lang']}: "

    def text_metrics(self, generated: list[str], references: list[str]) -> dict[str, Any]:
        return m.bleu_chrf(generated, references)
