"""Question + context → overlapping windows of model features, and training targets.

A context longer than the model's input is cut into windows of ``max_length`` tokens that
overlap by ``stride`` tokens, the question repeated in every window (as Hugging Face's
``run_qa.py`` does), so an answer cut by one window's edge is whole in the next. Next to the
model's token features, ``encode`` returns what span search needs and the model does not
take: the row each window came from, which tokens belong to the context, and each token's
character offsets in the context.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from nlpforge import ENCODER_INPUTS, DataError, Tokenizer, UsageError

CONTEXT = 1  # Encoding.sequence_ids of context tokens (the question is sequence 0)


def split_windows(tokenizer: Tokenizer, questions: Sequence[str], contexts: Sequence[str],
                  stride: int) -> tuple[list[Any], list[int]]:
    """The windows of each (question, context) pair and the pair each window came from.

    Checked first, because ``tokenizers`` panics (and prints a Rust backtrace) when a
    question leaves no more room for the context than the stride.
    """
    max_length = tokenizer.max_length
    if not 0 <= stride < max_length // 2:
        raise UsageError(f"task option doc_stride={stride} needs windows of more than "
                         f"{2 * stride} tokens, but --max-length is {max_length}; set "
                         f"doc_stride below {max_length // 2} (e.g. {max_length // 3})")
    special = tokenizer.num_special_tokens(pair=True)
    lengths = [len(e.ids) for e in tokenizer.encode(list(questions), add_special_tokens=False)]
    longest = max_length - special - stride - 1
    for question, length in zip(questions, lengths):
        if length > longest:
            size = f"at least {length}" if length >= max_length else str(length)  # truncated
            raise DataError(f"question {question[:60]!r} is too long: {size} tokens, and "
                            f"windows of {max_length} tokens with doc_stride={stride} hold "
                            f"questions of at most {longest}; shorten it or raise --max-length",
                            field="question")
    return tokenizer.encode_windows(list(questions), list(contexts), stride=stride)


def window_features(tokenizer: Tokenizer, windows: Sequence[Any],
                    owners: Sequence[int]) -> dict[str, np.ndarray]:
    """Padded token features plus ``window_row``, ``context_mask``, ``offsets``, ``cls_index``.

    ``context_mask`` marks the tokens an answer may start or end on: context tokens that cover
    at least one character. ``cls_index`` is each window's first token, the target and the
    score of "no answer in this window".
    """
    features = tokenizer.pad(windows, ENCODER_INPUTS)
    count, length = features["input_ids"].shape
    context = np.zeros((count, length), dtype=bool)
    offsets = np.zeros((count, length, 2), dtype=np.int64)
    cls_index = np.zeros(count, dtype=np.int64)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    for i, window in enumerate(windows):
        n = len(window.ids)
        first = length - n if left else 0
        spans = np.asarray(window.offsets, dtype=np.int64).reshape(n, 2)
        context[i, first:first + n] = (np.array([s == CONTEXT for s in window.sequence_ids])
                                       & (spans[:, 1] > spans[:, 0]))
        offsets[i, first:first + n] = spans
        cls_index[i] = first
    features.update(window_row=np.asarray(owners, dtype=np.int64), context_mask=context,
                    offsets=offsets, cls_index=cls_index)
    return features


def answer_positions(features: dict[str, np.ndarray],
                     spans: Sequence[tuple[int, int] | None]) -> tuple[np.ndarray, np.ndarray]:
    """Start and end token of each window's answer; ``cls_index`` where it has none.

    ``spans[r]`` is row r's answer as characters ``(start, end)`` in its context, or None for
    a row without an answer. A window holds the answer only when its context tokens cover
    the whole span; the answer tokens are the last token starting at or before the span's
    start and the first token ending at or after its end (Hugging Face's run_qa rule).
    """
    cls_index = features["cls_index"]
    starts, ends = cls_index.copy(), cls_index.copy()
    for w, row in enumerate(features["window_row"]):
        span = spans[row]
        tokens = np.flatnonzero(features["context_mask"][w])
        if span is None or not len(tokens):
            continue
        begin, finish = features["offsets"][w, tokens, 0], features["offsets"][w, tokens, 1]
        if begin[0] > span[0] or finish[-1] < span[1]:
            continue
        starts[w] = tokens[np.flatnonzero(begin <= span[0])[-1]]
        ends[w] = tokens[np.flatnonzero(finish >= span[1])[0]]
    return starts, ends
