"""Rows → encoder inputs and decoder labels, with the runtime tokenizer (no torch).

Sources are the task prefix plus the source text, truncated to ``--max-length`` tokens.
Targets use the same tokenizer (T5, BART and Marian share one vocabulary between encoder and
decoder, which is what transformers' ``text_target`` does for them), truncated to
``max_target_length`` keeping their final special token (``</s>``), and padded with −100 so
the loss ignores padding.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from nlpforge import IGNORE_INDEX

INPUTS = ("input_ids", "attention_mask")
#: model_type values of the T5 family: their checkpoints were trained with text prefixes.
T5_TYPES = ("t5", "mt5", "umt5", "longt5", "t5gemma")


def first_present(row: dict, names: Sequence[str]) -> Any:
    """The value of the first of ``names`` the row has (field aliases), or None."""
    for name in names:
        if row.get(name) is not None:
            return row[name]
    return None


def encode_sources(texts: Sequence[str], tokenizer: Any) -> dict[str, np.ndarray]:
    return tokenizer.pad(tokenizer.encode(list(texts)), INPUTS)


def pad_labels(sequences: Sequence[Sequence[int]]) -> np.ndarray:
    """Token id lists → [rows, longest] int64, −100 after each row's end."""
    length = max((len(s) for s in sequences), default=0)
    labels = np.full((len(sequences), length), IGNORE_INDEX, dtype=np.int64)
    for i, ids in enumerate(sequences):
        labels[i, :len(ids)] = ids
    return labels


def target_ids(texts: Sequence[str], tokenizer: Any, max_length: int) -> list[list[int]]:
    """Tokenize targets with special tokens; longer ones are cut to ``max_length`` tokens,
    keeping the last (end-of-sequence) token."""
    out = []
    for encoding in tokenizer.encode(list(texts)):
        ids = list(encoding.ids)
        if len(ids) > max_length:
            ids = ids[:max_length - 1] + ids[-1:]
        out.append(ids)
    return out


def is_t5(model_type: str | None) -> bool:
    return (model_type or "").lower() in T5_TYPES
