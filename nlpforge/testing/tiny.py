"""Tiny base models per family, by name: what a plugin's tests train on.

Each builder saves a randomly initialised 2-layer model (hidden size 32) with a tokenizer
trained on the fly into a directory and returns it — nothing is downloaded. The builders of
the generative families live in their own modules; a missing one is reported as
``TinyModelUnavailable`` so tests can skip with the reason. No torch at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nlpforge.lazy import Unavailable, import_object

#: Tiny model name → "module:function(directory) -> Path".
BUILDERS = {
    "bert": "nlpforge.testing.encoders:make_tiny_bert",
    "gpt2": "nlpforge.testing.decoders:make_tiny_gpt2",
    "llama": "nlpforge.testing.decoders:make_tiny_llama",
    "t5": "nlpforge.testing.encoder_decoders:make_tiny_t5",
    "bart": "nlpforge.testing.encoder_decoders:make_tiny_bart",
}


def wordpiece_tokenizer(max_length: int = 64, vocab_size: int = 400,
                        corpus: list[str] | None = None) -> Any:
    """A BERT-style WordPiece runtime ``Tokenizer`` trained in memory with the ``tokenizers``
    library only — no transformers import, so tests of ``encode``/``postprocess`` stay fast."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer

    from nlpforge.runtime.tokenizer import Tokenizer
    from nlpforge.testing.encoders import CORPUS

    backend = Backend(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    trainer = WordPieceTrainer(vocab_size=vocab_size,
                               special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    backend.train_from_iterator((corpus or CORPUS) * 3, trainer)
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return Tokenizer(backend, pad_id=backend.token_to_id("[PAD]"), max_length=max_length)


class TinyModelUnavailable(LookupError):
    """This nlpforge has no builder for the tiny model asked for."""


def family_default(family: str) -> str:
    """The tiny model a task of this ``ModelFamily`` (or its value) trains on in tests."""
    from nlpforge.errors import ManifestError
    from nlpforge.families import family as family_spec

    try:
        return family_spec(family).tiny_model
    except ManifestError as exc:
        raise TinyModelUnavailable(f"no tiny model: {exc}") from None


def make_tiny_model(name: str, directory: str | os.PathLike) -> Path:
    """Build the tiny model ``name`` (bert, gpt2, llama, t5, bart) into ``directory``."""
    if name not in BUILDERS:
        raise TinyModelUnavailable(f"unknown tiny model {name!r} (known: {', '.join(BUILDERS)})")
    try:
        builder = import_object(BUILDERS[name])
    except Unavailable as exc:
        raise TinyModelUnavailable(f"tiny {name}: {exc}") from exc
    return Path(builder(directory))


class TinyModels:
    """Tiny models built once each into ``root`` (the pytest plugin keeps one per session)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._built: dict[str, Path] = {}

    def get(self, name: str) -> Path:
        if name not in self._built:
            self._built[name] = make_tiny_model(name, self.root / name)
        return self._built[name]

    def for_family(self, family: str) -> Path:
        return self.get(family_default(family))
