"""The interface between the generation loop and a model: one ``Stepper`` per model family.

The search code (greedy, sampling, beam search, logits processors, streaming) knows nothing of
ONNX graphs or caches; a stepper knows nothing of search. Everything is numpy.

- ``start(input_ids, attention_mask)`` takes a batch of prompts (decoder-only: left-padded
  prompt tokens; encoder-decoder: the encoder's input, right- or left-padded) and returns the
  logits of the first generated position (``[batch, vocab]``, float32) and the model state
  (KV caches, attention mask, positions, encoder outputs).
- ``step(state, tokens)`` feeds one new token per row (``[batch]`` int64) and returns the logits
  of the next position and the new state. The cache is kept, never recomputed.
- ``select(state, index)`` keeps/duplicates/reorders batch rows (``index``: ``[new_batch]``
  int64 row numbers): beam search expands each prompt to ``num_beams`` rows after ``start`` and
  reorders the beams after every step.

For a decoder-only model the sequence the logits processors see (repetition penalty, n-gram
blocking) starts with the prompt; for an encoder-decoder it starts with
``decoder_start_token_id``, as in ``transformers``' ``generate()``.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Stepper(Protocol):
    is_encoder_decoder: bool
    decoder_start_token_id: int | None  # encoder-decoder only
    eos_token_ids: list[int]
    pad_token_id: int
    vocab_size: int

    def start(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, Any]:
        ...

    def step(self, state: Any, tokens: np.ndarray) -> tuple[np.ndarray, Any]:
        ...

    def select(self, state: Any, index: np.ndarray) -> Any:
        ...


def row_index(index: np.ndarray, batch_size: int) -> np.ndarray | None:
    """``select``'s argument checked against ``batch_size`` rows as an int64 array; None when
    it keeps every row in place (nothing to do)."""
    from nlpforge.errors import DataError

    index = np.asarray(index, dtype=np.int64)
    if index.ndim != 1 or (index.size and (index.min() < 0 or index.max() >= batch_size)):
        raise DataError(f"select() needs row numbers in [0, {batch_size}), got {index.tolist()}")
    if index.size == batch_size and (index == np.arange(index.size)).all():
        return None
    return index

