"""The embedding model: a Hugging Face ``AutoModel`` encoder, pooling of its token states
(mean, first token, last token or max) and optional L2 normalization, all inside ``forward``,
so the exported ONNX graph returns sentence vectors. And the training losses.

Imports torch: loaded only by ``build_model``/``load_model``/``compute_loss`` (training,
evaluation of run dirs, export), never by the runtime.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from nlpforge import ModelDirError
from nlpforge_sentence_embedding import layout

POOLINGS = tuple(layout.POOLINGS)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[batch, tokens, dim] token states → [batch, dim], as sentence-transformers' Pooling:
    ``mean`` of the attended tokens, ``cls`` the first attended token, ``last-token`` the
    last attended one, ``max`` the element-wise maximum over attended tokens."""
    mask = attention_mask.to(hidden.dtype)
    if pooling == "mean":
        summed = (hidden * mask.unsqueeze(-1)).sum(1)
        return summed / mask.sum(1, keepdim=True).clamp(min=1e-9)
    if pooling == "max":
        return hidden.masked_fill(mask.unsqueeze(-1) == 0, torch.finfo(hidden.dtype).min).amax(1)
    if pooling == "cls":
        index = mask.argmax(1)  # the first attended position (right or left padding)
    elif pooling == "last-token":
        positions = torch.arange(hidden.shape[1], device=hidden.device, dtype=hidden.dtype)
        index = (mask * positions).argmax(1)  # the last attended position
    else:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    gather = index.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
    return hidden.gather(1, gather).squeeze(1)


class SentenceEmbedder(torch.nn.Module):
    """Token features in (a batch of texts), one vector per text out.

    No ``config`` attribute on purpose: the exporter's run-dir check treats the module as a
    custom head whose task loads and checks its own weights.
    """

    def __init__(self, encoder: torch.nn.Module, pooling: str = "mean",
                 normalize: bool = True):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.encoder = encoder
        self.pooling = pooling
        self.normalize = normalize
        #: The tokenizer's max length the model was trained with; written to
        #: sentence_bert_config.json by ``save_pretrained`` when known.
        self.max_seq_length: int | None = None

    @property
    def base_model(self) -> torch.nn.Module:
        """What ``--freeze-base`` freezes: the encoder (nothing else has weights)."""
        return self.encoder

    @property
    def dimension(self) -> int:
        return int(self.encoder.config.hidden_size)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              **extra: Any) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              **extra).last_hidden_state
        pooled = pool(hidden, attention_mask, self.pooling)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=-1, eps=1e-12)
        return pooled

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids, attention_mask)

    def save_pretrained(self, directory: str | Path, **kwargs: Any) -> None:
        """A Hugging Face folder of the encoder (``config.json``, ``model.safetensors``: what
        ``AutoModel.from_pretrained`` and the exporter read) plus sentence-transformers'
        ``modules.json``, ``1_Pooling/config.json`` and ``sentence_bert_config.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(directory, **kwargs)
        layout.write_layout(directory, self.pooling, self.normalize, self.dimension,
                            self.max_seq_length)


class SentenceEmbedderWithTypes(SentenceEmbedder):
    """For encoders that take segment ids (BERT): the same, with ``token_type_ids``."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.embed(input_ids, attention_mask, **extra)


def wrap(encoder: torch.nn.Module, pooling: str, normalize: bool) -> SentenceEmbedder:
    """The embedder for ``encoder``; its forward takes ``token_type_ids`` when the encoder's
    does (the trainer and exporter feed the features forward names)."""
    takes_types = "token_type_ids" in inspect.signature(encoder.forward).parameters
    cls = SentenceEmbedderWithTypes if takes_types else SentenceEmbedder
    return cls(encoder, pooling, normalize)


def build(base: str | torch.nn.Module, pooling: str, normalize: bool,
          **kwargs: Any) -> SentenceEmbedder:
    """A new embedder on a base checkpoint (path or hub id) or an encoder module."""
    from transformers import AutoModel

    encoder = base if isinstance(base, torch.nn.Module) else AutoModel.from_pretrained(base, **kwargs)
    return wrap(encoder, pooling, normalize)


def load(path: str | Path, pooling: str, normalize: bool, **kwargs: Any) -> SentenceEmbedder:
    """A trained embedder (an nlpforge run dir) or a sentence-transformers checkpoint; refuses a
    folder whose sentence-transformers files pool or normalize otherwise than asked.
    ``kwargs`` go to ``AutoModel.from_pretrained`` (``trust_remote_code``)."""
    from transformers import AutoModel

    path = Path(path)
    saved = layout.read_layout(path) if (path / layout.MODULES).is_file() else None
    if saved is not None and (saved.pooling, saved.normalize) != (pooling, normalize):
        raise ModelDirError(f"{path / layout.MODULES}: the model pools with {saved.pooling} "
                            f"(normalize={saved.normalize}) but the task's options ask for "
                            f"{pooling} (normalize={normalize})")
    return wrap(AutoModel.from_pretrained(path, **kwargs), pooling, normalize).eval()


def unwrap(model: Any) -> Any:
    """The embedder inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def in_batch_negatives_loss(embeddings: torch.Tensor, scale: float) -> torch.Tensor:
    """MultipleNegativesRankingLoss: the first half of the batch are the texts, the second
    their positives; each text's positive must out-score every other row's positive by
    cross-entropy over ``scale`` × cosine similarities."""
    n = embeddings.shape[0] // 2
    a = torch.nn.functional.normalize(embeddings[:n].float(), dim=-1)
    b = torch.nn.functional.normalize(embeddings[n:2 * n].float(), dim=-1)
    logits = scale * a @ b.T
    return torch.nn.functional.cross_entropy(logits, torch.arange(n, device=logits.device))


def cosent_loss(embeddings: torch.Tensor, scores: torch.Tensor, scale: float) -> torch.Tensor:
    """CoSENT: for every two rows whose gold scores are ordered, the higher-scored pair must
    have the higher cosine (log(1 + Σ exp(scale × (cos_low − cos_high)))); only the order of
    the scores matters."""
    n = scores.shape[0]
    a = torch.nn.functional.normalize(embeddings[:n].float(), dim=-1)
    b = torch.nn.functional.normalize(embeddings[n:2 * n].float(), dim=-1)
    cos = (a * b).sum(-1)
    diff = scale * (cos[None, :] - cos[:, None])  # [i, j]: scale * (cos_j - cos_i)
    wrong = diff[scores[:, None].float() > scores[None, :].float()]  # pairs where y_i > y_j
    return torch.logsumexp(torch.cat([wrong.new_zeros(1), wrong]), dim=0)
