"""sentence-embedding: one vector per text, for search, clustering and similarity.

Built into nlpforge, found through the ``nlpforge`` entry-point group like any plugin. The
model is an encoder with its pooling (and L2 normalization) inside ``forward`` (``head.py``),
so the ONNX graph returns sentence vectors; trained on positive pairs with in-batch negatives,
or on scored pairs with CoSENT. Run dirs are also sentence-transformers folders
(``layout.py``), and sentence-transformers checkpoints export as they are. This module
imports no torch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import nlpforge
from nlpforge import (ENCODER_INPUTS, DataError, Field, ModelFamily, Option, Signature, Task,
                      UsageError, encoder_signature)
from nlpforge_sentence_embedding import layout
from nlpforge_sentence_embedding.pair_scores import cosine, pair_retrieval, spearman

NLPFORGE_PLUGIN_API = 1
LOSSES = ("auto", "mnrl", "cosent")


class SentenceEmbedding(Task):
    """Sentence embeddings (sentence-transformers models: all-MiniLM-L6-v2, BGE, E5…).

    Rows ``{"text", "text_pair", "score"?}``: a text and its positive (``score`` absent: in-batch
    negatives, sentence-transformers' MultipleNegativesRankingLoss), or a scored pair (CoSENT).
    A request is ``{"text"}`` or ``{"text", "text_pair"}``; its prediction is
    ``{"embedding": [...]}``, for a pair also ``embedding_pair`` and ``similarity`` (cosine).

    ``encode`` puts the texts of a batch first, then the ``text_pair`` of the rows that have
    one, each text encoded alone (``splits_rows``: a row may become two feature rows).

    ``max_seq_length``: the sentence-transformers ``max_seq_length`` (tokens per text) when
    known, else None. ``from_pretrained_config`` reads it from the checkpoint's
    ``sentence_bert_config.json``: the exporter of checkpoints uses it as the tokenizer's
    ``max_length`` (``tokenizer.max_length`` of the manifest). During training it is the
    tokenizer's max length, which the run dir's ``sentence_bert_config.json`` records.
    """

    id = "sentence-embedding"
    version = 1
    description = "Embed texts as vectors (pooling inside the graph; sentence-transformers models)"
    family = ModelFamily.ENCODER
    splits_rows = True  # a pair is two feature rows
    train_fields = (
        Field("text", str, description="a text"),
        Field("text_pair", str, description="a text that goes with it (a positive pair), or "
                                            "the second text of a scored pair"),
        Field("score", (int, float), required=False,
              description="how similar the two texts are (any scale; trains with CoSENT)"),
    )
    request_fields = (
        Field("text", str, description="the text to embed"),
        Field("text_pair", str, required=False,
              description="a second text: also embedded, with the cosine similarity"),
    )
    options = (
        Option("pooling", "mean", "token states → one vector: mean, cls, last-token or max"),
        Option("normalize", True, "scale each vector to length 1 (L2)"),
        Option("loss", "auto", "mnrl (in-batch negatives), cosent (scored pairs), or auto: "
                               "cosent when the training rows have 'score', else mnrl"),
        Option("scale", 20.0, "the inverse temperature of both losses (cosine × scale)"),
    )
    primary_metric = "pair_accuracy"
    greater_is_better = True

    def __init__(self, labels: Sequence[str] | None = None, **options: Any):
        super().__init__(labels, **options)
        s = self.settings
        if s["pooling"] not in layout.POOLINGS:
            raise UsageError(f"task option 'pooling': expected one of "
                             f"{', '.join(layout.POOLINGS)}, got {s['pooling']!r}")
        if s["loss"] not in LOSSES:
            raise UsageError(f"task option 'loss': expected one of {', '.join(LOSSES)}, "
                             f"got {s['loss']!r}")
        if not s["scale"] > 0:
            raise UsageError(f"task option 'scale': must be positive, got {s['scale']}")
        #: Spearman of cosine vs score picks the best evaluation of scored pairs.
        self.primary_metric = "spearman" if s["loss"] == "cosent" else "pair_accuracy"
        #: Tokens per text, when known (see the class docstring).
        self.max_seq_length: int | None = None

    # -- checkpoints trained elsewhere ------------------------------------------------------

    @classmethod
    def checkpoint_match(cls, config: dict[str, Any], directory: Path) -> int:
        """2 for a sentence-transformers folder (``modules.json`` with a Pooling module), 1 for
        a bare encoder (``architectures[0]`` such as ``BertModel``: exported with mean pooling
        when ``--task sentence-embedding`` names it), else 0."""
        if layout.has_pooling(Path(directory)):
            return 2
        architectures = config.get("architectures") or []
        head = str(architectures[0]) if architectures else ""
        bare = head.endswith("Model") and not head.endswith("LMHeadModel")
        return 1 if bare and not config.get("is_encoder_decoder") else 0

    @classmethod
    def from_pretrained_config(cls, config: dict[str, Any], tokenizer: Any,
                               directory: Path) -> "SentenceEmbedding":
        """Pooling and normalization from ``modules.json`` and ``1_Pooling/config.json``,
        ``max_seq_length`` from ``sentence_bert_config.json``; a folder without
        ``modules.json`` gets the options' defaults (mean pooling, normalized)."""
        found = layout.read_layout(Path(directory))
        if found is None:
            return cls()
        task = cls(pooling=found.pooling, normalize=found.normalize)
        task.max_seq_length = found.max_seq_length
        return task

    # -- data -------------------------------------------------------------------------------

    def check_row(self, row: dict, path: str | None = None, line: int | None = None,
                  training: bool = True) -> None:
        super().check_row(row, path, line, training)
        if not training:
            return
        score = row.get("score")
        if score is not None and not math.isfinite(score):
            raise DataError(f"score must be a finite number, got {score}", path, line, "score")
        if score is None and self.settings["loss"] == "cosent":
            raise DataError("loss=cosent needs a 'score' in every row", path, line, "score")

    def fit(self, rows: Sequence[dict]) -> None:
        """Resolve ``loss=auto`` from the rows: CoSENT when they are scored, else in-batch
        negatives; rows of both kinds are refused."""
        scored = sum(row.get("score") is not None for row in rows)
        if 0 < scored < len(rows):
            raise UsageError(f"{scored} of {len(rows)} training rows have a 'score': give "
                             f"every row a score (CoSENT) or none (positive pairs, in-batch "
                             f"negatives)")
        if self.settings["loss"] == "auto" and rows:
            self.settings["loss"] = "cosent" if scored else "mnrl"
            # Saved with the model; the trainer chose its metric before seeing the rows
            # (pass --metric spearman, or loss=cosent, to pick the best evaluation by it).
            self.primary_metric = "spearman" if scored else "pair_accuracy"
        if self.settings["loss"] == "mnrl" and scored:
            raise UsageError("loss=mnrl treats every pair as a positive and ignores 'score'; "
                             "use loss=cosent (or auto) for scored pairs")

    # -- preprocessing ----------------------------------------------------------------------

    def encode(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        """Every row's text, then the ``text_pair`` of each row that has one; each text is
        encoded on its own (never as a segment pair)."""
        texts = [row["text"] for row in rows]
        texts += [row["text_pair"] for row in rows if row.get("text_pair") is not None]
        return tokenizer.pad(tokenizer.encode(texts), ENCODER_INPUTS)

    def training_batch(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        self.max_seq_length = tokenizer.max_length
        features = self.encode(rows, tokenizer)
        if self.settings["loss"] == "cosent":
            features["labels"] = np.array([float(r["score"]) for r in rows], dtype=np.float32)
        return features

    def loss_units(self, batch: dict[str, Any]) -> int:
        """Rows (pairs): half the feature rows."""
        return int(batch["input_ids"].shape[0]) // 2

    # -- model (torch, imported here only) --------------------------------------------------

    def build_model(self, base: Any, **kwargs: Any) -> Any:
        from nlpforge_sentence_embedding import head

        return head.build(base, self.settings["pooling"], self.settings["normalize"], **kwargs)

    def load_model(self, path: str, **kwargs: Any) -> Any:
        from nlpforge_sentence_embedding import head

        return head.load(path, self.settings["pooling"], self.settings["normalize"], **kwargs)

    def compute_loss(self, model: Any, batch: dict[str, Any]) -> Any:
        from nlpforge_sentence_embedding import head

        # the run dir's sentence_bert_config.json records the length trained with
        head.unwrap(model).max_seq_length = self.max_seq_length
        features = {k: v for k, v in batch.items() if k in ENCODER_INPUTS}
        embeddings = model(**features)
        if self.settings["loss"] == "cosent":
            return head.cosent_loss(embeddings, batch["labels"], self.settings["scale"])
        return head.in_batch_negatives_loss(embeddings, self.settings["scale"])

    def forward(self, model: Any, features: dict[str, Any]) -> dict[str, Any]:
        return {"embeddings": model(**features)}

    def export_signature(self, model_inputs: Sequence[str]) -> Signature:
        return encoder_signature(model_inputs, outputs=("embeddings",))

    # -- outputs (numpy) --------------------------------------------------------------------

    def postprocess(self, outputs: dict[str, np.ndarray], rows: Sequence[dict]) -> list[dict]:
        vectors = outputs["embeddings"]
        n = len(rows)
        out: list[dict] = []
        second = n
        for i, row in enumerate(rows):
            prediction: dict[str, Any] = {"embedding": _floats(vectors[i])}
            if row.get("text_pair") is not None:
                pair = vectors[second]
                second += 1
                prediction["embedding_pair"] = _floats(pair)
                prediction["similarity"] = float(cosine(vectors[i], pair))
            out.append(prediction)
        return out

    def metrics(self, predictions: Sequence[dict], rows: Sequence[dict]) -> dict[str, Any]:
        """``pair_accuracy`` and ``pair_mrr``: each text's own pair among the pairs of all
        rows (``pair_scores.pair_retrieval``); ``spearman`` of the cosine and ``score`` when
        every row has one; ``mean_similarity`` of the pairs."""
        paired = [(p, r) for p, r in zip(predictions, rows) if "embedding_pair" in p]
        report: dict[str, Any] = {"rows": len(rows), "pairs": len(paired)}
        if not paired:
            return report
        texts = np.array([p["embedding"] for p, _ in paired], dtype=np.float64)
        pairs = np.array([p["embedding_pair"] for p, _ in paired], dtype=np.float64)
        similarity = np.array([p["similarity"] for p, _ in paired], dtype=np.float64)
        report.update(pair_retrieval(texts, pairs, [r["text_pair"] for _, r in paired]))
        report["mean_similarity"] = float(similarity.mean())
        scores = [r.get("score") for _, r in paired]
        if all(s is not None for s in scores):
            report["spearman"] = spearman(similarity, np.array(scores, dtype=np.float64))
        return report

    def example_request(self) -> dict[str, Any]:
        return {"text": "a man is playing a guitar", "text_pair": "someone plays music"}


def _floats(vector: np.ndarray) -> list[float]:
    return np.asarray(vector, dtype=np.float32).tolist()


@nlpforge.hookimpl
def register_tasks(register):
    register(SentenceEmbedding)
