"""The custom head: a siamese encoder — one transformer encodes both sentences, its own pooling
turns token states into one vector per sentence, an optional linear projection, then L2
normalisation, so the cosine similarity of two sentences is the dot product of their vectors.

Imports torch: loaded only by ``build_model``/``load_model``/``compute_loss`` (training,
evaluation of run dirs, export), never by the runtime.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from nlpforge import ModelDirError

HEAD_CONFIG = "similarity_head.json"
WEIGHTS = "model.safetensors"
POOLINGS = ("mean", "cls", "max")


class SiameseEncoder(torch.nn.Module):
    """Token features in (a batch of sentences), one unit vector per sentence out."""

    def __init__(self, encoder: torch.nn.Module, pooling: str = "mean", projection_dim: int = 0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.encoder = encoder
        self.pooling = pooling
        hidden = encoder.config.hidden_size
        self.projection = torch.nn.Linear(hidden, projection_dim) if projection_dim else None
        self.head_config = {"pooling": pooling, "projection_dim": projection_dim,
                            "hidden_size": hidden}

    @property
    def base_model(self) -> torch.nn.Module:
        """What ``--freeze-base`` freezes: the encoder (the projection keeps training)."""
        return self.encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "mean":
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        elif self.pooling == "max":
            pooled = hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).amax(1)
        else:
            pooled = hidden[:, 0]
        if self.projection is not None:
            pooled = self.projection(pooled)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=-1, eps=1e-12)

    def save_pretrained(self, directory: str | Path, **_: Any) -> None:
        """The run dir layout nlpforge expects: the encoder's config.json, all weights in
        model.safetensors, and the head's settings (checked again when loading)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.config.save_pretrained(directory)
        weights = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(weights, str(directory / WEIGHTS))
        (directory / HEAD_CONFIG).write_text(json.dumps(self.head_config, indent=2) + "\n")


def build(base: str | torch.nn.Module, pooling: str, projection_dim: int,
          **kwargs: Any) -> SiameseEncoder:
    """A new head on a base checkpoint (path or hub id) or an encoder module."""
    from transformers import AutoModel

    encoder = base if isinstance(base, torch.nn.Module) else AutoModel.from_pretrained(base, **kwargs)
    return SiameseEncoder(encoder, pooling, projection_dim)


def load(path: str | Path, pooling: str, projection_dim: int) -> SiameseEncoder:
    """A trained head saved by ``save_pretrained``; refuses weights made with other settings."""
    from transformers import AutoConfig, AutoModel

    path = Path(path)
    saved = path / HEAD_CONFIG
    if saved.is_file():
        head = json.loads(saved.read_text())
        wanted = {"pooling": pooling, "projection_dim": projection_dim}
        if {k: head.get(k) for k in wanted} != wanted:
            raise ModelDirError(f"{saved}: the weights were trained with {head}, but "
                                f"nlpforge.json asks for {wanted}; train again")
    model = build(AutoModel.from_config(AutoConfig.from_pretrained(path)), pooling,
                  projection_dim)
    state = load_file(str(path / WEIGHTS))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        names = ", ".join((missing or unexpected)[:3])
        raise ModelDirError(f"{path / WEIGHTS}: not the weights of a sentence-similarity head "
                            f"({'missing' if missing else 'unexpected'}: {names})")
    return model.eval()


def pair_loss(embeddings: torch.Tensor, labels: torch.Tensor, kind: str,
              scale: float) -> torch.Tensor:
    """The loss of a batch whose first half are the first sentences, second half the second.

    ``cosine_mse``: (cos - target)² as in sentence-transformers' CosineSimilarityLoss;
    ``cosent``: CoSENT, a ranking loss over every pair of pairs (only the order of the gold
    scores matters; usually better Spearman on STS data).
    """
    n = labels.shape[0]
    cos = (embeddings[:n] * embeddings[n:2 * n]).sum(-1).float()
    labels = labels.float()
    if kind == "cosine_mse":
        return torch.nn.functional.mse_loss(cos, labels)
    diff = scale * (cos[None, :] - cos[:, None])  # [i, j]: scale * (cos_j - cos_i)
    wrong = diff[labels[:, None] > labels[None, :]]  # pairs where y_i > y_j
    return torch.logsumexp(torch.cat([wrong.new_zeros(1), wrong]), dim=0)
