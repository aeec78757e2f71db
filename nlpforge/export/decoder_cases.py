"""Shapes a decoder export is validated on: batch sizes, prompt and cache lengths, left padding.

A non-empty cache is the real one PyTorch computed for a (left-padded) prefix, so the graph
is checked on what generation feeds it, not on random tensors. A model with a sliding
attention window no longer than ``WINDOW_CASE_LIMIT`` gets one more case whose cache is
longer than the window, so the window mask is checked where it hides keys.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from nlpforge.export.validate import Features

#: label, batch, cached tokens, new tokens, left padding
SPECS = (
    ("batch 1, prompt of 4, empty cache", 1, 0, 4, False),
    ("batch 3, left-padded prompt of 9, empty cache", 3, 0, 9, True),
    ("batch 1, 1 new token, cache of 6", 1, 6, 1, False),
    ("batch 3, 1 new token, left-padded cache of 7", 3, 7, 1, True),
    ("batch 3, 3 new tokens, left-padded cache of 5", 3, 5, 3, True),
    ("batch 1, prompt of 1, empty cache", 1, 0, 1, False),
)
#: the longest window validated past its end (a longer one costs a longer validation case)
WINDOW_CASE_LIMIT = 64


def position_ids(attention_mask: np.ndarray) -> np.ndarray:
    """Positions as transformers' ``generate()`` computes them: count of real tokens so far
    (cumsum − 1); padding gets 1, a value the mask hides anyway."""
    positions = np.cumsum(attention_mask, axis=-1) - 1
    return np.where(attention_mask == 0, 1, positions).astype(np.int64)


def empty_cache(batch: int, num_layers: int, kv_heads: int, head_dim: int,
                value_head_dim: int | None = None) -> list[np.ndarray]:
    """Keys and values of length 0, layer by layer; values may have their own head size."""
    return [np.zeros((batch, kv_heads, 0, dim), dtype=np.float32)
            for _ in range(num_layers) for dim in (head_dim, value_head_dim or head_dim)]


def decoder_cases(run: Callable[[Features], dict[str, np.ndarray]], past_names: list[str],
                  present_names: list[str], sizes: dict[str, int],
                  seed: int = 1234) -> list[tuple[str, Features]]:
    """Validation features; ``run`` (the PyTorch model) fills the caches of prefixes."""
    rng = np.random.default_rng(seed)
    vocab = sizes["vocab_size"]
    positions = sizes.get("positions", True)
    specs = list(SPECS)
    window = sizes.get("sliding_window")
    if window and window <= WINDOW_CASE_LIMIT:
        specs.append((f"batch 2, 2 new tokens, left-padded cache of {window + 1} "
                      f"(past the sliding window of {window})", 2, window + 1, 2, True))
    cases = []
    for label, batch, cached, new, padded in specs:
        total = cached + new
        mask = np.ones((batch, total), dtype=np.int64)
        if padded:  # rows after the first start later (left padding); the prefix (or the
            # prompt) keeps at least one real token per row
            for row in range(1, batch):
                mask[row, :int(rng.integers(1, cached or new))] = 0
        ids = rng.integers(min(5, vocab - 1), vocab, size=(batch, total), dtype=np.int64)
        ids[mask == 0] = sizes.get("pad_token_id", 0)
        past = empty_cache(batch, sizes["num_layers"], sizes["kv_heads"], sizes["head_dim"],
                           sizes.get("value_head_dim"))
        if cached:
            prefix = {"input_ids": ids[:, :cached], "attention_mask": mask[:, :cached],
                      **({"position_ids": position_ids(mask[:, :cached])} if positions else {}),
                      **dict(zip(past_names, past))}
            out = run(prefix)
            past = [out[name] for name in present_names]
        features: dict[str, Any] = {
            "input_ids": ids[:, cached:], "attention_mask": mask,
            **({"position_ids": position_ids(mask)[:, cached:]} if positions else {}),
            **dict(zip(past_names, past))}
        cases.append((label, features))
    return cases
