"""Validation of an exported graph against PyTorch on shapes the trace never saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from nlpforge.errors import ExportError

Features = dict[str, np.ndarray]
Runner = Callable[[Features], dict[str, np.ndarray]]


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


def differences(cases: list[tuple[str, Features]], reference: Runner,
                candidate: Runner) -> tuple[dict[str, float], list[dict], list[tuple[str, str, float]]]:
    """Max abs difference per output, the shapes tried, and (output, case, diff) of every case.

    A shape mismatch is reported with an infinite difference.
    """
    worst: dict[str, float] = {}
    shapes = []
    per_case = []
    for label, features in cases:
        expected, actual = reference(features), candidate(features)
        shapes.append({"case": label, **{k: list(v.shape) for k, v in features.items()}})
        for name, want in expected.items():
            got = actual[name]
            if got.shape != want.shape:
                diff = float("inf")
            else:
                diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) \
                    if want.size else 0.0
            worst[name] = max(worst.get(name, 0.0), diff)
            per_case.append((name, label, diff))
    return worst, shapes, per_case


def compare(cases: list[tuple[str, Features]], reference: Runner, candidate: Runner,
            atol: float) -> dict[str, Any]:
    """Max abs difference per output over all cases; ExportError when one exceeds ``atol``."""
    worst, shapes, per_case = differences(cases, reference, candidate)
    failures = [f"{name} on '{label}': " + ("shape differs" if diff == float("inf")
                                            else f"max abs diff {diff:.3g} > {atol:g}")
                for name, label, diff in per_case if not diff <= atol]
    report = {"atol": atol, "max_abs_diff": worst, "cases": shapes, "passed": not failures}
    if failures:
        raise ExportError("the exported model differs from PyTorch: " + "; ".join(failures))
    return report


def memoized(run: Runner) -> Runner:
    """``run`` computed once per features dict (the PyTorch reference is shared by all checks)."""
    cache: dict[int, tuple[Features, dict[str, np.ndarray]]] = {}

    def cached(features: Features) -> dict[str, np.ndarray]:
        if id(features) not in cache:
            cache[id(features)] = (features, run(features))
        return cache[id(features)][1]

    return cached


def onnx_runner(path: str | Path, outputs: Sequence[str]) -> Runner:
    """Run an ONNX file on the CPU with ONNX Runtime; returns the named outputs as float32."""
    from nlpforge.runtime.providers import make_session

    session = make_session(str(path), device="cpu")
    names = [i.name for i in session.get_inputs()]

    def run(features: Features) -> dict[str, np.ndarray]:
        values = session.run(list(outputs), {n: features[n] for n in names})
        return {n: v.astype(np.float32) for n, v in zip(outputs, values)}

    return run
