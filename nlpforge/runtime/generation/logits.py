"""Logits processors: what changes the next-token scores before a token is chosen.

Each processor works on a whole batch at once (``scores``: ``[rows, vocab]`` float32,
``sequences``: ``[rows, length]`` int64, the tokens so far) without Python loops over rows:
at the model sizes nlpforge targets, a per-row loop would cost more than the model step.

They mirror ``transformers``' processors of the same names, in the same order, so that the
same settings choose the same tokens as ``model.generate()``. Like transformers, the sequence
of a decoder-only model includes its prompt with its left padding: the repetition penalty
skips the padding, n-gram blocking sees pad tokens as tokens (which matters only if the
model generates the pad token).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from nlpforge.runtime.generation.config import GenerationConfig

NEG_INF = np.float32(-np.inf)

#: ``processor(sequences, scores, generated) -> scores``; ``generated``: new tokens so far.
Processor = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def repetition_penalty(penalty: float, padding: np.ndarray | None = None) -> Processor:
    """Make tokens already in the sequence less likely (CTRL's penalty): a positive score is
    divided by ``penalty``, a negative one multiplied. ``padding`` (per row: how many
    left-padding tokens the prompt has) keeps pad tokens out of it, as transformers does."""

    def process(sequences: np.ndarray, scores: np.ndarray, generated: int) -> np.ndarray:
        tokens = sequences
        if padding is not None and padding.any():
            # A padding position stands for the row's first real token, which is penalized
            # anyway: no column outside the vocabulary, no [rows, vocab] mask.
            first = np.take_along_axis(sequences, padding[:, None], axis=1)
            tokens = np.where(np.arange(sequences.shape[1]) < padding[:, None], first, tokens)
        seen = np.take_along_axis(scores, tokens, axis=1)
        seen = np.where(seen < 0, seen * np.float32(penalty), seen / np.float32(penalty))
        np.put_along_axis(scores, tokens, seen.astype(np.float32, copy=False), axis=1)
        return scores

    return process


def no_repeat_ngram(size: int) -> Processor:
    """Forbid any token that would repeat an n-gram of ``size`` tokens already in the row."""

    def process(sequences: np.ndarray, scores: np.ndarray, generated: int) -> np.ndarray:
        length = sequences.shape[1]
        if length < size:  # no complete n-gram yet
            return scores
        if size == 1:  # every token seen is banned
            np.put_along_axis(scores, sequences, NEG_INF, axis=1)
            return scores
        grams = sliding_window_view(sequences, size, axis=1)  # [rows, n_grams, size], a view
        tail = sequences[:, length - size + 1:]  # the last size-1 tokens
        hits = (grams[:, :, :-1] == tail[:, None, :]).all(axis=2)
        rows, where = np.nonzero(hits)
        scores[rows, grams[rows, where, -1]] = NEG_INF
        return scores

    return process


def min_new_tokens(minimum: int, eos_ids: Sequence[int]) -> Processor:
    """Forbid end-of-sequence until ``minimum`` new tokens exist."""
    eos = np.asarray(list(eos_ids), dtype=np.int64)

    def process(sequences: np.ndarray, scores: np.ndarray, generated: int) -> np.ndarray:
        if generated < minimum and eos.size:
            scores[:, eos] = NEG_INF
        return scores

    return process


def forced_bos(token: int) -> Processor:
    """The first token of a one-token sequence (an encoder-decoder's decoder start) is
    ``token`` (as transformers' ForcedBOSTokenLogitsProcessor: sequence length 1)."""

    def process(sequences: np.ndarray, scores: np.ndarray, generated: int) -> np.ndarray:
        if sequences.shape[1] == 1:
            scores[:] = NEG_INF
            scores[:, token] = 0
        return scores

    return process


def forced_eos(tokens: Sequence[int], last: int) -> Processor:
    """The ``last``-th new token (counting from 0) is an end-of-sequence token."""
    ids = np.asarray(list(tokens), dtype=np.int64)

    def process(sequences: np.ndarray, scores: np.ndarray, generated: int) -> np.ndarray:
        if generated == last:
            scores[:] = NEG_INF
            scores[:, ids] = 0
        return scores

    return process


def temperature(value: float) -> Processor:
    def process(sequences: np.ndarray, scores: np.ndarray, generated: int) -> np.ndarray:
        scores /= np.float32(value)
        return scores

    return process


def top_k(k: int, keep: int = 1) -> Processor:
    """Keep the ``k`` best tokens (ties with the k-th included)."""

    def process(sequences: np.ndarray, scores: np.ndarray, generated: int) -> np.ndarray:
        n = min(max(k, keep), scores.shape[1])
        kth = -np.partition(-scores, n - 1, axis=1)[:, n - 1:n]
        scores[scores < kth] = NEG_INF
        return scores

    return process


def top_p(p: float, keep: int = 1) -> Processor:
    """Nucleus sampling: keep the smallest set of best tokens whose probability reaches ``p``."""

    def process(sequences: np.ndarray, scores: np.ndarray, generated: int) -> np.ndarray:
        order = np.argsort(scores, axis=1, kind="stable")  # ascending, as transformers
        ordered = np.take_along_axis(scores, order, axis=1)
        cumulative = np.cumsum(softmax(ordered), axis=1)
        remove = cumulative <= np.float32(1 - p)
        remove[:, -keep:] = False
        np.put_along_axis(scores, order, np.where(remove, NEG_INF, ordered), axis=1)
        return scores

    return process


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """A new float32 array (two temporaries, not three: beam search runs it on
    ``[rows × beams, vocab]`` every step)."""
    out = scores - scores.max(axis=1, keepdims=True)
    total = np.exp(out).sum(axis=1, keepdims=True)
    out -= np.log(total)
    return out


class LogitsProcessor:
    """The processors a config asks for, applied in transformers' order.

    ``padding``: left-padding tokens per row of a decoder-only batch (None otherwise).
    """

    def __init__(self, config: GenerationConfig, eos_ids: Sequence[int],
                 padding: np.ndarray | None = None):
        steps: list[Processor] = []
        if config.repetition_penalty != 1.0:
            steps.append(repetition_penalty(config.repetition_penalty, padding))
        if config.no_repeat_ngram_size > 0:
            steps.append(no_repeat_ngram(config.no_repeat_ngram_size))
        if config.min_new_tokens > 0:
            steps.append(min_new_tokens(config.min_new_tokens, eos_ids))
        if config.forced_bos_token_id is not None:
            steps.append(forced_bos(config.forced_bos_token_id))
        if config.forced_eos_token_id:
            steps.append(forced_eos(config.forced_eos_token_id, config.max_new_tokens - 1))
        if config.do_sample:
            keep = 2 if config.num_beams > 1 else 1
            if config.temperature != 1.0:
                steps.append(temperature(config.temperature))
            if config.top_k:
                steps.append(top_k(config.top_k, keep))
            if config.top_p < 1.0:
                steps.append(top_p(config.top_p, keep))
        self.steps = steps

    def __bool__(self) -> bool:
        return bool(self.steps)

    def __call__(self, sequences: np.ndarray, scores: np.ndarray, generated: int) -> np.ndarray:
        for step in self.steps:
            scores = step(sequences, scores, generated)
        return scores
