"""Words → model windows, and word tags → sub-token labels. Torch-free.

Every input is split into windows of at most ``max_length`` tokens that overlap by
``stride`` tokens (``Tokenizer.encode_windows``), in training and at run time alike, so no word
is ever cut off. Besides the model's inputs, ``encode`` returns three arrays the decoder needs:
``window_row`` (which input each window came from), ``word_ids`` (the word of each token, -1
for special tokens and padding) and ``token_spans`` (each token's character span in the
input's text).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nlpforge import ENCODER_INPUTS, IGNORE_INDEX
from nlpforge_token_classification.tags import continuation_tag
from nlpforge_token_classification.words import Words

#: The former name of ``nlpforge.IGNORE_INDEX`` (tests/test_token_classification.py imports it).
IGNORE = IGNORE_INDEX


def window_stride(stride: int, max_length: int) -> int:
    """The stride actually used: at most just under half a window (the tokenizer's limit)."""
    return max(0, min(int(stride), max_length // 2 - 1))


def _columns(tokenizer: Any, length: int, n: int) -> slice:
    """Where ``tokenizer.pad`` puts a row of ``n`` tokens in a batch of ``length`` columns."""
    if getattr(tokenizer, "padding_side", "right") == "left":
        return slice(length - n, length)
    return slice(0, n)


def encode_words(inputs: Sequence[Words], tokenizer: Any, stride: int) -> tuple[dict[str, np.ndarray], list]:
    """Windows of every input as padded model features plus the decoder's arrays.

    Also returns the windows themselves (``tokenizers.Encoding``), for label alignment.
    """
    windows, owners = tokenizer.encode_windows(
        [w.words for w in inputs], stride=window_stride(stride, tokenizer.max_length),
        is_pretokenized=True)
    batch = tokenizer.pad(windows, ENCODER_INPUTS)
    length = batch["input_ids"].shape[1]
    word_ids = np.full((len(windows), length), -1, dtype=np.int64)
    spans = np.zeros((len(windows), length, 2), dtype=np.int64)
    for k, (window, owner) in enumerate(zip(windows, owners)):
        cols = _columns(tokenizer, length, len(window.ids))
        word_spans = inputs[owner].spans
        ids = [-1 if w is None else w for w in window.word_ids]
        word_ids[k, cols] = ids
        spans[k, cols] = [(0, 0) if w < 0 else (word_spans[w][0] + a, word_spans[w][0] + b)
                          for w, (a, b) in zip(ids, window.offsets)]
    batch["window_row"] = np.asarray(owners, dtype=np.int64)
    batch["word_ids"] = word_ids
    batch["token_spans"] = spans
    return batch, windows


def align_labels(features: dict[str, np.ndarray], tags: Sequence[Sequence[str]],
                 index: dict[str, int], label_all_tokens: bool) -> np.ndarray:
    """Sub-token labels of each window: the word's tag on its first sub-token, ``IGNORE_INDEX``
    elsewhere; with ``label_all_tokens``, later sub-tokens get ``continuation_tag``.

    A word's first sub-token is the one that starts earliest in the word, so a word split
    between two windows is labelled (as a word) only where its start is.
    """
    word_ids, spans, owners = features["word_ids"], features["token_spans"], features["window_row"]
    first_start: dict[tuple[int, int], int] = {}
    for k, p in zip(*np.nonzero(word_ids >= 0)):
        key = (int(owners[k]), int(word_ids[k, p]))
        start = int(spans[k, p, 0])
        if start < first_start.get(key, start + 1):
            first_start[key] = start
    labels = np.full(word_ids.shape, IGNORE_INDEX, dtype=np.int64)
    for k, p in zip(*np.nonzero(word_ids >= 0)):
        row, word = int(owners[k]), int(word_ids[k, p])
        tag = tags[row][word]
        if int(spans[k, p, 0]) == first_start[(row, word)]:
            labels[k, p] = index[tag]
        elif label_all_tokens:
            labels[k, p] = index[continuation_tag(tag)]
    return labels
