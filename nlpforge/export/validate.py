"""Validation of an exported graph against PyTorch on shapes the trace never saw.

An output passes a case when it is within ``atol`` of the float32 PyTorch reference. When it
is not and the caller gives a float64 run of the same PyTorch model (``exact``), float32
rounding is measured rather than guessed: the output still passes when it is no further from
the float64 result than ``ROUNDING_MARGIN`` times float32's own distance from it — the larger
of float32 PyTorch's and (given ``nudged``) a second float32 run's with every weight one unit in
the last place off, since one float32 run can land close to float64 by luck (how close depends
on the CPU's kernels: the same export met float32 PyTorch 5.6e-6 from float64 on one CPU and
9.8e-5 on another, for its own 2.5e-4 on both). How
far rounding reaches depends on the model, not only on its outputs' size: a model whose
residual stream is much larger than its normalised outputs, or whose attention is sharp, loses
more digits in float32 than a fixed tolerance (absolute, or relative to the outputs) allows,
while a wrong graph (a weight off, a mask ignored) is off by far more than float32 PyTorch is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from nlpforge.errors import ExportError

Features = dict[str, np.ndarray]
Runner = Callable[[Features], dict[str, np.ndarray]]

#: An export may be this many times further from float64 PyTorch than float32 PyTorch is
#: (two float32 computations that sum in different orders are about equally far from it).
ROUNDING_MARGIN = 4.0


def encoder_features(names: Sequence[str], batch: int, length: int, vocab_size: int,
                     padded: bool, seed: int, pair: bool = False,
                     end_id: int | None = None) -> Features:
    """Random token ids; with ``padded``, rows after the first get shorter real lengths. With
    ``end_id``, each row's last real token is ``end_id`` and no other is (the contract of
    heads that pool at the end-of-sequence token, e.g. BART's classification head)."""
    rng = np.random.default_rng(seed)
    low = min(5, vocab_size - 1)
    ids = rng.integers(low, vocab_size, size=(batch, length), dtype=np.int64)
    mask = np.ones((batch, length), dtype=np.int64)
    types = np.zeros((batch, length), dtype=np.int64)
    if end_id is not None:
        ids[ids == end_id] = low if end_id != low else low + 1
    for row in range(batch):
        real = length
        if padded and row > 0 and length > 2:
            real = int(rng.integers(2, length))
        mask[row, real:] = 0
        ids[row, real:] = 0
        if end_id is not None:
            ids[row, real - 1] = end_id
        if pair and real > 2:
            types[row, real // 2:real] = 1
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {name: out[name] for name in names}


def encoder_cases(names: Sequence[str], vocab_size: int, max_length: int,
                  end_id: int | None = None) -> list[tuple[str, Features]]:
    """The shapes validated for an encoder: batch 1 and 4, short and long, with/without padding
    (``end_id``: see ``encoder_features``)."""
    long = max(4, min(max_length, 128))
    specs = [
        ("batch 1, 3 tokens", 1, 3, False, False),
        ("batch 1, %d tokens" % long, 1, long, False, False),
        ("batch 4, 50 tokens, padded" , 4, min(50, long), True, False),
        ("batch 3, %d tokens, padded, pairs" % long, 3, long, True, True),
        ("batch 4, 7 tokens, padded", 4, 7, True, False),
    ]
    return [(label, encoder_features(names, b, n, vocab_size, pad, seed, pair, end_id))
            for seed, (label, b, n, pad, pair) in enumerate(specs)]


def _each_output(cases: list[tuple[str, Features]], reference: Runner, candidate: Runner,
                 shapes: list[dict]) -> Iterator[tuple[str, Features, str, np.ndarray,
                                                      np.ndarray, float]]:
    """(case, features, output, reference value, candidate value, max abs diff) of every
    output of every case; appends each case's input shapes to ``shapes``."""
    for label, features in cases:
        expected, actual = reference(features), candidate(features)
        shapes.append({"case": label, **{k: list(v.shape) for k, v in features.items()}})
        for name, want in expected.items():
            yield label, features, name, want, actual[name], _max_diff(actual[name], want)


def differences(cases: list[tuple[str, Features]], reference: Runner,
                candidate: Runner) -> tuple[dict[str, float], list[dict], list[tuple[str, str, float]]]:
    """Max abs difference per output, the shapes tried, and (output, case, diff) of every case.

    A shape mismatch is reported with an infinite difference.
    """
    worst: dict[str, float] = {}
    shapes: list[dict] = []
    per_case = []
    for label, _, name, _, _, diff in _each_output(cases, reference, candidate, shapes):
        worst[name] = max(worst.get(name, 0.0), diff)
        per_case.append((name, label, diff))
    return worst, shapes, per_case


def _max_diff(got: np.ndarray, want: np.ndarray) -> float:
    """Max abs difference; infinite when the shapes differ."""
    if got.shape != want.shape:
        return float("inf")
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) \
        if want.size else 0.0


def compare(cases: list[tuple[str, Features]], reference: Runner, candidate: Runner,
            atol: float, exact: Runner | None = None,
            nudged: Runner | None = None) -> dict[str, Any]:
    """Max abs difference per output over all cases; ExportError when one exceeds ``atol``
    and (given ``exact``, float64 PyTorch) is also further from ``exact`` than
    ``ROUNDING_MARGIN`` times the float32 ``reference`` — or the ``nudged`` float32 run, the
    larger — is. The report's ``rounding`` holds, per output that needed it, the largest
    distance from float64 of the float32 reference, the nudged run and the candidate."""
    worst: dict[str, float] = {}
    shapes: list[dict] = []
    failures = []
    rounding: dict[str, dict[str, float]] = {}
    for label, features, name, want, got, diff in _each_output(cases, reference, candidate,
                                                                shapes):
        worst[name] = max(worst.get(name, 0.0), diff)
        if diff <= atol:
            continue
        if diff == float("inf"):
            failures.append(f"{name} on '{label}': shape differs")
            continue
        message = f"{name} on '{label}': max abs diff {diff:.3g} > {atol:g}"
        if exact is None:
            failures.append(message)
            continue
        truth = exact(features)[name]
        distances = {"float32_pytorch": _max_diff(want, truth), "export": _max_diff(got, truth)}
        if nudged is not None:
            distances["float32_nudged"] = _max_diff(nudged(features)[name], truth)
        seen = rounding.setdefault(name, dict.fromkeys(distances, 0.0))
        for key, value in distances.items():
            seen[key] = max(seen[key], value)
        own = distances.pop("export")
        float32 = max(distances.values())
        if own > max(atol, ROUNDING_MARGIN * float32):
            failures.append(f"{message}, and {own:.3g} from float64 PyTorch, more than "
                            f"{ROUNDING_MARGIN:g} x float32's own {float32:.3g}")
    report = {"atol": atol, "max_abs_diff": worst, "cases": shapes, "passed": not failures}
    if exact is not None:
        report["rounding"] = {k: {n: round(v, 8) for n, v in d.items()}
                              for k, d in rounding.items()}
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
