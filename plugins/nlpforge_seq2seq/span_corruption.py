"""T5's span corruption: random spans of a text become sentinels; the target restores them.

The noise mask is T5's ``random_spans_noise_mask`` as Hugging Face's ``run_t5_mlm_flax.py``
writes it in numpy: ``round(length × noise_density)`` noise tokens in
``round(noise tokens / mean_noise_span_length)`` spans, span lengths drawn by random
segmentation, noise and non-noise spans interleaved starting with non-noise. The input keeps
the non-noise tokens with one sentinel (``<extra_id_0>``, ``<extra_id_1>``, …) per noise span;
the target is each sentinel followed by the tokens it replaced; both end with EOS.

Randomness comes from a ``numpy.random.RandomState``-like object (the global ``numpy.random``
during training, whose state the trainer checkpoints, so a resumed run draws the same spans).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from nlpforge import Tokenizer, UsageError

SENTINEL = "<extra_id_{}>"


def random_spans_noise_mask(length: int, noise_density: float, mean_noise_span_length: float,
                            rng: Any = np.random) -> np.ndarray:
    """A boolean mask of ``length`` tokens, True on noise (T5's algorithm)."""
    if length < 2:
        return np.zeros(length, dtype=bool)
    num_noise_tokens = int(np.round(length * noise_density))
    num_noise_tokens = min(max(num_noise_tokens, 1), length - 1)
    num_nonnoise_tokens = length - num_noise_tokens
    num_noise_spans = int(np.round(min(num_noise_tokens, num_nonnoise_tokens)
                                   / mean_noise_span_length))
    num_noise_spans = max(num_noise_spans, 1)

    def segment(num_items: int, num_segments: int) -> np.ndarray:
        first = np.arange(num_items - 1) < (num_segments - 1)
        rng.shuffle(first)
        segment_id = np.cumsum(np.pad(first, [[1, 0]]))
        return np.unique(segment_id, return_counts=True)[1]

    noise_lengths = segment(num_noise_tokens, num_noise_spans)
    nonnoise_lengths = segment(num_nonnoise_tokens, num_noise_spans)
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
    starts = np.cumsum(interleaved)[:-1]
    indicator = np.zeros(length, dtype=np.int8)
    indicator[starts] = 1
    return (np.cumsum(indicator) % 2 == 1)[:length]


def sentinel_ids(tokenizer: Tokenizer, needed: int) -> list[int]:
    """Ids of ``<extra_id_0>`` … ``<extra_id_{needed-1}>``; UsageError when the vocabulary lacks
    them (span corruption needs a T5-style tokenizer)."""
    ids = []
    for i in range(max(needed, 1)):
        token_id = tokenizer.token_to_id(SENTINEL.format(i))
        if token_id is None:
            if i == 0:
                raise UsageError("span-corruption needs a tokenizer with T5's sentinel tokens "
                                 "<extra_id_0>, <extra_id_1>, … (a T5/mT5 tokenizer); this one "
                                 "has none")
            raise UsageError(f"span-corruption: a text needs {needed} sentinels but the "
                             f"tokenizer stops at <extra_id_{i - 1}>; lower --max-length or "
                             f"noise_density")
        ids.append(token_id)
    return ids


def corrupt(tokens: Sequence[int], eos_id: int | None, tokenizer: Tokenizer, noise_density: float,
            mean_noise_span_length: float, rng: Any = np.random) -> tuple[list[int], list[int]]:
    """Content token ids (no special tokens) → (input ids, target ids), both ending with EOS."""
    tokens = np.asarray(tokens, dtype=np.int64)
    mask = random_spans_noise_mask(len(tokens), noise_density, mean_noise_span_length, rng)
    starts = mask & ~np.pad(mask, [[1, 0]])[:-1]
    sentinels = sentinel_ids(tokenizer, int(starts.sum()))
    source: list[int] = []
    target: list[int] = []
    span = -1
    for token, noise, first in zip(tokens.tolist(), mask.tolist(), starts.tolist()):
        if noise:
            if first:
                span += 1
                source.append(sentinels[span])
                target.append(sentinels[span])
            target.append(token)
        else:
            source.append(token)
    end = [eos_id] if eos_id is not None else []
    return source + end, target + end
