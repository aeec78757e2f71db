"""fill-mask: masked-language modelling, the encoder's pretraining objective.

Train: continued pretraining on raw text (``{"text": ...}`` rows) to adapt an encoder to a
domain, with dynamic masking (15 % of the tokens, 80/10/10). Evaluate: perplexity and
masked-token accuracy on rows masked the same way in every run. Predict: the top-k fillers of
each mask token of a request (``{"text": "Paris is the [MASK] of France."}``).

Built into nlpforge, found through the ``nlpforge`` entry-point group like any plugin. This
module imports no torch; the head is built inside ``build_model``.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

import nlpforge
from nlpforge import (ENCODER_INPUTS, IGNORE_INDEX, DataError, Field, ModelFamily, Option,
                      Signature, Task, UsageError, encoder_signature)
from nlpforge_fill_mask.masking import (Recipe, Vocabulary, corrupt, eligible, evaluation_masks,
                                        training_choice, vocabulary)
from nlpforge_fill_mask.scoring import fillers, masked_scores

NLPFORGE_PLUGIN_API = 1
TEXT_MODES = ("blocks", "split", "truncate")
#: Shown in errors and used by the export's smoke test when the tokenizer is not known yet.
DEFAULT_MASK = "[MASK]"


class FillMask(Task):
    """Masked-LM: continued pretraining, perplexity, and top-k fillers for mask tokens."""

    id = "fill-mask"
    version = 1
    description = "Masked-LM: adapt an encoder to raw text; top-k fillers for mask tokens"
    family = ModelFamily.ENCODER
    splits_rows = True  # long texts become several windows
    train_fields = (Field("text", str, description="raw text (a paragraph, a document…)"),)
    request_fields = (
        Field("text", str, description="text with one or more of the tokenizer's mask tokens"),
        Field("top_k", int, required=False, description="fillers per mask (default: top_k option)"),
    )
    options = (
        Option("mlm_probability", 0.15, "share of the tokens chosen for the loss"),
        Option("mask_replace_prob", 0.8, "share of the chosen tokens replaced by the mask token"),
        Option("random_replace_prob", 0.1, "share of the chosen tokens replaced by a random "
                                           "token (the rest stay unchanged)"),
        Option("top_k", 5, "fillers returned per mask token"),
        Option("text_mode", "blocks", "training rows: blocks packs the texts of a batch into "
                                      "blocks of --max-length tokens (Hugging Face run_mlm); "
                                      "split: each text alone, cut into blocks; truncate: each "
                                      "text alone, its first --max-length tokens"),
    )
    primary_metric = "perplexity"
    checkpoint_heads = ("ForMaskedLM",)
    greater_is_better = False

    def __init__(self, labels: Sequence[str] | None = None, **options: Any):
        super().__init__(labels, **options)
        s = self.settings
        if not 0 < s["mlm_probability"] < 1:
            raise UsageError(f"task option mlm_probability must be in (0, 1), "
                             f"got {s['mlm_probability']}")
        shares = (s["mask_replace_prob"], s["random_replace_prob"])
        if min(shares) < 0 or sum(shares) > 1:
            raise UsageError("task options mask_replace_prob and random_replace_prob must not be "
                             f"negative and add up to at most 1, got {shares[0]} and {shares[1]}")
        if s["top_k"] < 1:
            raise UsageError(f"task option top_k must be at least 1, got {s['top_k']}")
        if s["text_mode"] not in TEXT_MODES:
            raise UsageError(f"task option text_mode must be one of {', '.join(TEXT_MODES)}, "
                             f"got {s['text_mode']!r}")
        self.recipe = Recipe(s["mlm_probability"], s["mask_replace_prob"],
                             s["random_replace_prob"])
        #: The tokenizer's mask token: learnt from the tokenizer, saved in the manifest, so
        #: requests can be checked before any tokenizer is at hand.
        self.mask_token: str | None = None
        self._vocab: Vocabulary | None = None

    # -- saved state ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {**super().state(), "mask_token": self.mask_token}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FillMask:
        task = cls(labels=state.get("labels"), **state.get("options", {}))
        task.mask_token = state.get("mask_token")
        return task

    # -- data -------------------------------------------------------------------------------

    def check_row(self, row: dict, path: str | None = None, line: int | None = None,
                  training: bool = True) -> None:
        super().check_row(row, path, line, training)
        text = row["text"]
        if training:
            if not text.strip():
                raise DataError("empty text: nothing to learn from; drop the row", path, line,
                                "text")
            return
        mask = self.mask_token or DEFAULT_MASK
        if mask not in text:
            raise DataError(f"no mask token: write {mask} where a word should be filled in, "
                            f"e.g. \"Paris is the {mask} of France.\"", path, line, "text")
        if row.get("top_k") is not None and row["top_k"] < 1:
            raise DataError(f"must be at least 1, got {row['top_k']}", path, line, "top_k")

    def _vocabulary(self, tokenizer: Any) -> Vocabulary:
        """Mask token and special ids of ``tokenizer`` (computed once per tokenizer)."""
        if self._vocab is None or self._vocab.tokenizer is not tokenizer:
            self._vocab = vocabulary(tokenizer)
            self.mask_token = self._vocab.mask_token
        return self._vocab

    def _windows(self, texts: Sequence[str], tokenizer: Any,
                 vocab: Vocabulary) -> tuple[list[Any], np.ndarray, np.ndarray]:
        """Token windows of ``max_length``, the row of each, and which rows are requests.

        Each row is tokenized alone (evaluation rows too in ``blocks`` mode: their score must
        not depend on their neighbours in a batch) and a long one cut into windows; with
        ``text_mode=truncate`` only its first window is kept. Requests (texts with a mask
        token) always keep every window, so every mask is filled.
        """
        windows, owners = tokenizer.encode_windows(list(texts), stride=0)
        owners = np.array(owners, dtype=np.int64)
        request = np.zeros(len(texts), dtype=bool)
        for window, owner in zip(windows, owners):
            if vocab.mask_id in window.ids:
                request[owner] = True
        if self.settings["text_mode"] == "truncate":
            first = np.r_[True, owners[1:] != owners[:-1]]
            keep = first | request[owners]
            windows = [w for w, k in zip(windows, keep) if k]
            owners = owners[keep]
        return windows, owners, request

    # -- preprocessing (torch-free) ---------------------------------------------------------

    def encode(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        """Requests as they are; evaluation rows (no mask token) masked deterministically.

        Besides the model's features: ``window_row`` (the row of each window), ``target_ids``
        (the original id of each masked evaluation token, ``IGNORE_INDEX`` elsewhere) and
        ``is_request``.
        """
        vocab = self._vocabulary(tokenizer)
        texts = [row["text"] for row in rows]
        windows, owners, request = self._windows(texts, tokenizer, vocab)
        features = tokenizer.pad(windows, ENCODER_INPUTS)
        is_request = request[owners]
        allowed = eligible(features, vocab) & ~is_request[:, None]
        ids, targets = evaluation_masks(texts, owners, features["input_ids"], allowed, vocab,
                                        self.recipe)
        features["input_ids"] = ids
        features.update(window_row=owners, target_ids=targets,
                        is_request=is_request.astype(np.int64))
        return features

    def training_batch(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        """Dynamic masking: a fresh choice of tokens every time a row is seen."""
        vocab = self._vocabulary(tokenizer)
        windows, _, _ = self._windows([row["text"] for row in rows], tokenizer, vocab)
        if self.settings["text_mode"] == "blocks":
            features = pack_blocks(windows, tokenizer.max_length, tokenizer.pad_id)
        else:
            features = tokenizer.pad(windows, ENCODER_INPUTS)
        allowed = eligible(features, vocab)
        if not allowed.any():
            starts = ", ".join(repr(row["text"][:30]) for row in rows[:3])
            raise DataError(f"a training batch has no token to mask (its texts tokenize to "
                            f"special tokens only): {starts}")
        chosen = training_choice(allowed, self.recipe.probability)
        ids, labels = corrupt(features["input_ids"], chosen, vocab, self.recipe, np.random)
        return {**features, "input_ids": ids, "labels": labels}

    def compute_loss(self, model: Any, batch: dict[str, Any]) -> Any:
        """Cross-entropy over the masked tokens, with vocabulary logits for those tokens only.

        The output projection (hidden → vocabulary) costs about as much as the whole encoder
        of a small model; a hook on it keeps the masked rows (15 %) of its input, which makes
        a MiniLM training step about 2x faster. Loss and gradients equal the head's own.
        """
        import torch

        labels = batch["labels"]
        chosen = labels != IGNORE_INDEX
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        inner = getattr(model, "module", model)  # DistributedDataParallel keeps it here
        projection = inner.get_output_embeddings()
        if projection is None:  # a head without a separate projection: let it do the work
            return model(**batch).loss
        handle = projection.register_forward_pre_hook(
            lambda module, args: (args[0][chosen], *args[1:]))
        try:
            logits = model(**inputs).logits
        finally:
            handle.remove()
        return torch.nn.functional.cross_entropy(logits.float(), labels[chosen])

    def loss_units(self, batch: dict[str, Any]) -> int:
        """The masked tokens: the loss is their mean."""
        return int((batch["labels"] != IGNORE_INDEX).sum())

    # -- head -------------------------------------------------------------------------------

    def build_model(self, base: str, **kwargs: Any) -> Any:
        """A masked-LM head on ``base``. A checkpoint saved without one (a plain encoder, a
        sentence-transformers model) gets a new head: its transform layer and output bias
        start at random; the output projection is tied to the word embeddings."""
        from transformers import AutoModelForMaskedLM

        return AutoModelForMaskedLM.from_pretrained(base, **kwargs)

    def load_model(self, path: str, **kwargs: Any) -> Any:
        from transformers import AutoModelForMaskedLM

        return AutoModelForMaskedLM.from_pretrained(path, **kwargs)

    def export_signature(self, model_inputs: Sequence[str]) -> Signature:
        """Token features in, ``logits`` (batch × tokens × vocabulary) out."""
        return encoder_signature(model_inputs, per_token=True)

    # -- outputs (torch-free) ---------------------------------------------------------------

    def postprocess(self, outputs: dict[str, np.ndarray], rows: Sequence[dict]) -> list[dict]:
        """Requests → ``{"masks": [[filler, …] per mask token]}``; evaluation rows → the
        negative log-likelihood and top-1 hits of their masked tokens."""
        vocab = self._vocab
        if vocab is None:
            raise RuntimeError("fill-mask: postprocess() runs after encode()")
        logits, ids = outputs["logits"], outputs["input_ids"]
        owners, attention = outputs["window_row"], outputs["attention_mask"]
        scores = masked_scores(logits, outputs["target_ids"])
        scored_rows = owners[scores["window"]]
        results = []
        for r, row in enumerate(rows):
            windows = np.flatnonzero(owners == r)
            if outputs["is_request"][windows].any():
                top_k = row.get("top_k") or self.settings["top_k"]
                masks = [fillers(logits[w], ids[w], attention[w], int(p), vocab, top_k)
                         for w in windows
                         for p in np.flatnonzero((ids[w] == vocab.mask_id) & (attention[w] > 0))]
                results.append({"masks": masks})
                continue
            mine = scored_rows == r
            predicted, target = scores["predicted"][mine], scores["target"][mine]
            results.append({"masked_tokens": int(mine.sum()),
                            "nll": float(scores["nll"][mine].sum()),
                            "correct": int((predicted == target).sum()),
                            "predicted_ids": predicted.tolist(), "target_ids": target.tolist()})
        return results

    def metrics(self, predictions: Sequence[dict], rows: Sequence[dict]) -> dict[str, Any]:
        """Perplexity (exp of the mean NLL per masked token) and masked-token accuracy."""
        scored = [p for p in predictions if "masked_tokens" in p]
        count = sum(p["masked_tokens"] for p in scored)
        if not count:
            raise UsageError(f"no token to score in {len(rows)} evaluation rows: evaluation "
                             f"needs raw text without the mask token {self.mask_token or ''}"
                             .rstrip())
        nll = sum(p["nll"] for p in scored) / count
        return {"perplexity": math.exp(nll) if nll < 700 else float("inf"),
                "masked_accuracy": sum(p["correct"] for p in scored) / count,
                "loss": nll, "masked_tokens": count, "rows": len(scored)}

    def example_request(self) -> dict[str, Any]:
        mask = self.mask_token or DEFAULT_MASK
        return {"text": f"the movie was {mask} and the acting was wonderful."}


def pack_blocks(windows: Sequence[Any], length: int, pad_id: int) -> dict[str, np.ndarray]:
    """The tokens of all windows, special tokens included, end to end, cut into blocks of
    ``length`` (the last one padded): no compute is spent on padding, and short texts get
    context, as in Hugging Face's ``run_mlm`` (``group_texts``)."""
    ids = np.array([i for w in windows for i in w.ids], dtype=np.int64)
    width = min(length, ids.size)
    count = -(-ids.size // width) if width else 0
    input_ids = np.full(count * width, pad_id, dtype=np.int64)
    input_ids[:ids.size] = ids
    attention = np.zeros(count * width, dtype=np.int64)
    attention[:ids.size] = 1
    return {"input_ids": input_ids.reshape(count, width),
            "attention_mask": attention.reshape(count, width),
            "token_type_ids": np.zeros((count, width), dtype=np.int64)}


@nlpforge.hookimpl
def register_tasks(register):
    register(FillMask)
