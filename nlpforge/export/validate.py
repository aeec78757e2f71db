"""Validation of an exported graph against PyTorch on shapes the trace never saw."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from nlpforge.errors import ExportError

Features = dict[str, np.ndarray]


def encoder_features(names: Sequence[str], batch: int, length: int, vocab_size: int,
                     padded: bool, seed: int, pair: bool = False) -> Features:
    """Random token ids; with ``padded``, rows after the first get shorter real lengths."""
    rng = np.random.default_rng(seed)
    low = min(5, vocab_size - 1)
    ids = rng.integers(low, vocab_size, size=(batch, length), dtype=np.int64)
    mask = np.ones((batch, length), dtype=np.int64)
    types = np.zeros((batch, length), dtype=np.int64)
    for row in range(batch):
        real = length
        if padded and row > 0 and length > 2:
            real = int(rng.integers(2, length))
        mask[row, real:] = 0
        ids[row, real:] = 0
        if pair and real > 2:
            types[row, real // 2:real] = 1
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {name: out[name] for name in names}


def encoder_cases(names: Sequence[str], vocab_size: int, max_length: int) -> list[tuple[str, Features]]:
    """The shapes validated for an encoder: batch 1 and 4, short and long, with/without padding."""
    long = max(4, min(max_length, 128))
    specs = [
        ("batch 1, 3 tokens", 1, 3, False, False),
        ("batch 1, %d tokens" % long, 1, long, False, False),
        ("batch 4, 50 tokens, padded" , 4, min(50, long), True, False),
        ("batch 3, %d tokens, padded, pairs" % long, 3, long, True, True),
        ("batch 4, 7 tokens, padded", 4, 7, True, False),
    ]
    return [(label, encoder_features(names, b, n, vocab_size, pad, seed, pair))
            for seed, (label, b, n, pad, pair) in enumerate(specs)]


def compare(cases: list[tuple[str, Features]], reference: Callable[[Features], dict[str, np.ndarray]],
            candidate: Callable[[Features], dict[str, np.ndarray]], atol: float) -> dict[str, Any]:
    """Max abs difference per output over all cases; ExportError when one exceeds ``atol``."""
    worst: dict[str, float] = {}
    shapes = []
    failures = []
    for label, features in cases:
        expected, actual = reference(features), candidate(features)
        shapes.append({"case": label, **{k: list(v.shape) for k, v in features.items()}})
        for name, want in expected.items():
            got = actual[name]
            if got.shape != want.shape:
                failures.append(f"{name} on '{label}': shape {got.shape} != {want.shape}")
                continue
            diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) \
                if want.size else 0.0
            worst[name] = max(worst.get(name, 0.0), diff)
            if not diff <= atol:
                failures.append(f"{name} on '{label}': max abs diff {diff:.3g} > {atol:g}")
    report = {"atol": atol, "max_abs_diff": worst, "cases": shapes, "passed": not failures}
    if failures:
        raise ExportError("the exported model differs from PyTorch: " + "; ".join(failures))
    return report
