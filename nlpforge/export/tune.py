"""nlpforge tune: measure an export's candidate variants on this machine and keep the fastest
that passes its checks.

Which graph and session settings run fastest depends on the CPU far more than on the model: on
an AVX-512/AMX Xeon the int8 kernels run an order of magnitude faster than fp32 ones and
ONNX Runtime's ``SkipLayerNormalization`` fusion can cost more than it saves around them; on an
AVX2-only EPYC the balance is different again. So nothing here is a constant tuned on one CPU:

1. **Shapes**: the rows of ``data`` (or the run's validation file, or synthetic texts of typical
   lengths), tokenized and batched the way the runtime batches them (sorted by length, batches
   of ``batch_size``), plus one row of median length for batch-1 latency.
2. **Candidates**: the fp32 graph and the export's variants, each with ONNX Runtime's default
   session settings and with fusions switched off (``SkipLayerNormFusion``, ``AttentionFusion``,
   the GELU fusions) or a lower optimization level; dynamic int8 per channel and per tensor
   (``reduce_range`` where the CPU lacks VNNI dot products); static int8 (QDQ, calibrated on
   the rows), with and without the attention's activation-by-activation products quantized.
3. **Checks**: a lossless candidate (same weights, other fusions) must give the fp32 graph's
   outputs within the export's ``atol``; a lossy one must lose at most ``max_metric_drop``
   points of the task's primary metric on labelled rows, or without labelled rows keep every
   row's outputs at a cosine of at least ``min_cosine`` to fp32's (``force`` keeps a lossy
   candidate that fails, recorded as forced).
4. **Measurement**: every candidate's session stays open and the candidates run in turns,
   ``rounds`` times (the median counts), so a busy spell of the machine does not land on one.
   Then the winner's thread count and spinning are measured the same way.
5. **Record**: the winner becomes the ``tuned`` variant (its file, or an existing variant's
   file, with its session settings), and the manifest's ``tuning`` holds the CPU fingerprint,
   every candidate's timings and checks, and the choice. ``nlpforge.load`` runs ``tuned`` only
   on a CPU with the same fingerprint; elsewhere the export's default. The default itself
   becomes the fastest lossless variant measured here, so it is never slower than fp32 on the
   machine that measured it.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from nlpforge.errors import UsageError
from nlpforge.export import files
from nlpforge.export.logs import quiet
from nlpforge.manifest import Manifest, read_manifest, task_from_manifest, write_manifest
from nlpforge.runtime.host import cpu_fingerprint
from nlpforge.runtime.tokenizer import Tokenizer

TUNED_FILE = "model.tuned.onnx"
#: Session settings tried on every graph: name → ONNX Runtime session settings.
SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "no-skip-layernorm-fusion": {"disabled_optimizers": ["SkipLayerNormFusion"]},
}
#: Tried on the fp32 graph only (the fusions ONNX Runtime applies when it loads a graph).
FP32_SETTINGS: dict[str, dict[str, Any]] = {
    "no-attention-fusion": {"disabled_optimizers": ["AttentionFusion"]},
    "no-gelu-fusion": {"disabled_optimizers": ["GeluFusion", "BiasGeluFusion",
                                               "FastGeluFusion"]},
    "extended": {"graph_optimization_level": "extended"},
}


@dataclass
class Candidate:
    """A graph file with session settings; ``lossy`` when its weights differ from fp32's."""

    name: str
    path: Path
    settings: dict[str, Any]
    lossy: bool
    made: dict[str, Any] | None = None  # how a new file was made (quantization record)
    check: dict[str, Any] = field(default_factory=dict)
    rates: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    session: Any = None

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.path.name, "settings": self.settings,
                               "lossy": self.lossy, "check": self.check}
        if self.rates:
            out["rows_per_second"] = round(statistics.median(self.rates), 2)
            out["batch1_ms"] = round(statistics.median(self.latency_ms), 3)
        return out


@dataclass
class Workload:
    """What is measured: feature batches as the runtime makes them, one median-length row."""

    batches: list[dict[str, np.ndarray]]
    single: dict[str, np.ndarray]
    rows: int
    lengths: dict[str, int]
    source: str


def tune(directory: str | os.PathLike, data: str | None = None, *, rows: int = 256,
         rounds: int = 3, batch_size: int = 32, threads: int | None = None,
         objective: str = "throughput", max_metric_drop: float = 1.0,
         min_cosine: float = 0.99, force: bool = False,
         log: Callable[[str], Any] = lambda line: None) -> dict[str, Any]:
    """Measure ``directory``'s candidates on this machine; write the ``tuned`` variant and the
    manifest's ``tuning`` record; return that record."""
    if objective not in ("throughput", "latency"):
        raise UsageError(f"--objective must be throughput or latency, got {objective!r}")
    for name, value in (("--rows", rows), ("--rounds", rounds), ("--batch-size", batch_size)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")
    directory = Path(directory)
    manifest = read_manifest(directory, kind="export")
    if manifest["family"] != "encoder":
        raise UsageError(f"{directory}: nlpforge tune measures encoder exports (one graph); "
                         f"this is a {manifest['family']} export")
    start = time.perf_counter()
    task = task_from_manifest(manifest, str(directory))
    tok = manifest["tokenizer"]
    tokenizer = Tokenizer.from_dir(directory, tok["max_length"], tok.get("pad_id"))
    labelled, workload = _workload(manifest, task, tokenizer, data, rows, batch_size)
    log(f"shapes: {workload.rows} rows from {workload.source}, tokens {workload.lengths}")
    threads = threads or os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix=".tune-", dir=directory))
    try:
        candidates = _candidates(directory, manifest, work, workload)
        reference = _outputs(directory / manifest["io"]["model"], {}, workload, threads)
        kept = _check(candidates, reference, workload, task, tokenizer, labelled,
                      float((manifest.get("validation") or {}).get("atol", 1e-4)),
                      max_metric_drop, min_cosine, force, threads, log)
        _measure(kept, workload, threads, rounds, log)
        best = _best(kept, objective)
        for candidate in candidates:
            candidate.session = None
        fp32 = next(c for c in candidates if c.name == "fp32/default")
        settings = _threads(best, fp32, workload, threads, rounds, objective, log)
        return _write(directory, manifest, candidates, best, settings, objective, workload,
                      labelled, time.perf_counter() - start, log)
    finally:
        for candidate in locals().get("candidates", []):
            candidate.session = None
        shutil.rmtree(work, ignore_errors=True)


# -- shapes ------------------------------------------------------------------------------------

def _workload(manifest: Manifest, task: Any, tokenizer: Tokenizer, data: str | None,
              rows: int, batch_size: int) -> tuple[list[dict] | None, Workload]:
    """Labelled rows (or None) and the feature batches to measure."""
    from nlpforge.data import read_dataset
    from nlpforge.export.quality import run_validation_file

    path = data or run_validation_file(manifest)
    labelled: list[dict] | None = None
    if path:
        try:
            picked = read_dataset(path, task, training=True).rows
            labelled = picked
        except Exception:
            picked = read_dataset(path, task, training=False).rows  # requests: shapes only
        source = path
    else:
        picked, source = _synthetic(task, tokenizer, rows), "synthetic texts"
    if not picked:
        raise UsageError(f"{source}: no rows to measure")
    step = max(1, len(picked) // rows)
    sample = picked[::step][:rows]
    if labelled is not None:
        labelled = sample
    sizes = [len(tokenizer.encode([_text(task, r)])[0].ids) for r in sample]
    order = sorted(range(len(sample)), key=lambda i: sizes[i])
    batches = [task.encode([sample[i] for i in order[s:s + batch_size]], tokenizer)
               for s in range(0, len(sample), batch_size)]
    single = task.encode([sample[order[len(order) // 2]]], tokenizer)
    lengths = {"min": min(sizes), "median": int(np.median(sizes)), "max": max(sizes)}
    return labelled, Workload(batches, single, len(sample), lengths, str(source))


def _text(task: Any, row: dict) -> str:
    return " ".join(str(row[f.name]) for f in task.request_fields
                    if isinstance(row.get(f.name), str))


def _synthetic(task: Any, tokenizer: Tokenizer, rows: int) -> list[dict]:
    """Requests of typical lengths (8 to 128 words) made of the vocabulary's plain words."""
    vocab = [t for t in tokenizer.backend.get_vocab() if t.isalpha() and len(t) > 2][:5000]
    rng = np.random.default_rng(0)
    example = task.example_request()
    out = []
    for i in range(rows):
        words = int(rng.choice([8, 16, 24, 32, 48, 64, 96, 128]))
        text = " ".join(rng.choice(vocab, words)) if vocab else "nlpforge " * words
        out.append({k: (text if isinstance(v, str) else v) for k, v in example.items()})
    return out


# -- candidates --------------------------------------------------------------------------------

def _candidates(directory: Path, manifest: Manifest, work: Path,
                workload: Workload) -> list[Candidate]:
    fp32 = directory / manifest["io"]["model"]
    out = [Candidate(f"fp32/{name}", fp32, settings, False)
           for name, settings in {**SETTINGS, **FP32_SETTINGS}.items()]
    for name, entry in (manifest.get("variants") or {}).items():
        if name in ("fp32", "tuned", "fp16"):
            continue  # fp16 is for GPUs
        out += [Candidate(f"{name}/{s}", directory / entry["file"], settings,
                          entry.get("precision") != "fp32")
                for s, settings in SETTINGS.items()]
    flags = cpu_fingerprint()["flags"]
    vnni = any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
    made = {"int8-dynamic-per-tensor": lambda p: _dynamic(fp32, p, work, False, False),
            "int8-static": lambda p: _static(fp32, p, work, workload, attention=True),
            "int8-static-no-attention": lambda p: _static(fp32, p, work, workload,
                                                          attention=False)}
    if "int8" not in (manifest.get("variants") or {}):
        made["int8-dynamic"] = lambda p: _dynamic(fp32, p, work, True, False)
    if not vnni:
        made["int8-dynamic-reduce-range"] = lambda p: _dynamic(fp32, p, work, True, True)
    for name, make in made.items():
        path = work / f"{name}.onnx"
        record = make(path)
        out += [Candidate(f"{name}/{s}", path, settings, True, record)
                for s, settings in SETTINGS.items()]
    return out


def _dynamic(source: Path, target: Path, work: Path, per_channel: bool,
             reduce_range: bool) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet(""):
        quantize_dynamic(source, target, op_types_to_quantize=["MatMul", "Gather"],
                         per_channel=per_channel, reduce_range=reduce_range,
                         weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True})
    return {"type": "dynamic-int8", "per_channel": per_channel, "reduce_range": reduce_range}


def _static(source: Path, target: Path, work: Path, workload: Workload,
            attention: bool) -> dict[str, Any]:
    """QDQ int8: weights per channel, activations uint8 with ranges calibrated on the rows."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                          QuantFormat, QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(source), load_external_data=False)
    inputs = [i.name for i in model.graph.input]
    weights = {t.name for t in model.graph.initializer}
    # The attention's products take two activations (scores = Q·Kᵀ, context = P·V).
    exclude = [] if attention else [n.name for n in model.graph.node if n.op_type == "MatMul"
                                    and not any(i in weights for i in n.input)]

    class Rows(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{k: b[k] for k in inputs} for b in workload.batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    prepared = work / "static-input.onnx"
    if not prepared.exists():
        with quiet(""):
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    with quiet(""):
        quantize_static(str(prepared), str(target), Rows(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                        nodes_to_exclude=exclude, calibrate_method=CalibrationMethod.MinMax)
    return {"type": "static-int8 (QDQ)", "per_channel": True, "activations": "uint8",
            "calibration_rows": workload.rows, "attention_quantized": attention}


# -- checks and measurement --------------------------------------------------------------------

def _session(candidate: Candidate, threads: int, extra: dict[str, Any] | None = None) -> Any:
    """A CPU session of the candidate. Its threads do not spin between runs unless the
    candidate's settings say so: while many sessions are open, one's spinning threads would
    take the cores the next one is measured on."""
    from nlpforge.runtime.providers import make_session

    return make_session(str(candidate.path), device="cpu", threads=threads,
                        settings={"spin": False, **candidate.settings, **(extra or {})})


def _outputs(path: Path, settings: dict[str, Any], workload: Workload,
             threads: int) -> list[dict[str, np.ndarray]]:
    candidate = Candidate("reference", path, settings, False)
    session = _session(candidate, threads)
    return [_run(session, batch) for batch in workload.batches]


def _run(session: Any, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    return dict(zip(outputs, session.run(outputs, {n: features[n] for n in names})))


def _row_cosines(expected: np.ndarray, got: np.ndarray) -> np.ndarray:
    """The cosine similarity of each row (first axis) of two outputs, flattened per row."""
    a = expected.reshape(len(expected), -1).astype(np.float64)
    b = got.reshape(len(got), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)


def _check(candidates: list[Candidate], reference: list[dict[str, np.ndarray]],
           workload: Workload, task: Any, tokenizer: Tokenizer, labelled: list[dict] | None,
           atol: float, max_drop: float, min_cosine: float, force: bool, threads: int,
           log: Callable[[str], Any]) -> list[Candidate]:
    """The candidates that pass their check (each has its session open afterwards): lossless
    ones within ``atol`` of fp32; lossy ones by the task metric on labelled rows, else by the
    cosine of each row's outputs to fp32's. ``force`` keeps a lossy one that fails."""
    from nlpforge.export.quality import drop_points
    from nlpforge.runtime.batching import predict_rows

    metric = task.primary_metric
    baseline: dict[str, Any] | None = None
    kept = []
    for candidate in candidates:
        try:
            candidate.session = _session(candidate, threads)
        except Exception as exc:  # a graph this ONNX Runtime cannot load here
            candidate.check = {"passed": False, "why": f"{type(exc).__name__}: {exc}"[:300]}
            continue

        def run(features: dict[str, np.ndarray], session: Any = candidate.session) -> dict:
            return _run(session, features)

        if not candidate.lossy:
            worst = 0.0
            for expected, batch in zip(reference, workload.batches):
                got = run(batch)
                worst = max([worst] + [float(np.max(np.abs(v - got[k])))
                                       for k, v in expected.items() if v.size])
            candidate.check = {"mode": "outputs", "max_abs_diff": round(worst, 8),
                               "atol": atol, "passed": worst <= atol}
        elif labelled is None:
            low = 1.0
            for expected, batch in zip(reference, workload.batches):
                got = run(batch)
                low = min([low] + [_row_cosines(v, got[k]).min() for k, v in expected.items()
                                   if v.size])
            candidate.check = {"mode": "output-cosine", "min_cosine": round(float(low), 6),
                               "bound": min_cosine, "passed": bool(low >= min_cosine)}
        else:
            if baseline is None:
                fp32 = next(c for c in candidates if c.name == "fp32/default")
                baseline = task.metrics(predict_rows(
                    task, tokenizer, lambda f: _run(fp32.session, f), labelled), labelled)
            after = task.metrics(predict_rows(task, tokenizer, run, labelled), labelled)
            drop = drop_points(task, metric, baseline, after)
            candidate.check = {"mode": "task-metric", "metric": metric,
                               "before": round(float(baseline[metric]), 6),
                               "after": round(float(after[metric]), 6), "drop_points": drop,
                               "max_drop_points": max_drop, "passed": drop <= max_drop}
        if force and not candidate.check["passed"]:
            candidate.check.update(passed=True, forced=True)
        if candidate.check["passed"]:
            kept.append(candidate)
        else:
            candidate.session = None
        log(f"check {candidate.name}: {candidate.check}")
    return kept


#: Shortest timed stretch: passes over the rows (and batch-1 runs) repeat until it is reached,
#: so a small model's timings are not a handful of milliseconds of noise.
MIN_SECONDS = 0.25


def _time_pass(session: Any, workload: Workload) -> tuple[float, float]:
    """Rows per second over whole passes, and the median batch-1 latency in ms."""
    rows, start = 0, time.perf_counter()
    while rows == 0 or time.perf_counter() - start < MIN_SECONDS:
        for batch in workload.batches:
            _run(session, batch)
        rows += workload.rows
    rate = rows / (time.perf_counter() - start)
    times: list[float] = []
    begin = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - begin < MIN_SECONDS / 2:
        start = time.perf_counter()
        _run(session, workload.single)
        times.append(time.perf_counter() - start)
    return rate, 1000 * statistics.median(times)


def _measure(candidates: Sequence[Candidate], workload: Workload, threads: int, rounds: int,
             log: Callable[[str], Any], alone: bool = False) -> None:
    """Every candidate once per round, in a rotating order. ``alone``: each turn opens the
    candidate's session and closes it after, so no other session exists while it runs (for
    settings that let threads spin)."""
    if not alone:
        for candidate in candidates:
            _time_pass(candidate.session, workload)  # warm-up
    for turn in range(rounds):
        order = list(candidates)[turn % max(1, len(candidates)):] + \
            list(candidates)[:turn % max(1, len(candidates))]
        for candidate in order:
            if alone:  # a new session allocates per shape: two passes before timing
                candidate.session = _session(candidate, candidate.settings.get("threads",
                                                                               threads))
                _time_pass(candidate.session, workload)
                _time_pass(candidate.session, workload)
            rate, ms = _time_pass(candidate.session, workload)
            if alone:
                candidate.session = None
            candidate.rates.append(rate)
            candidate.latency_ms.append(ms)
    for candidate in candidates:
        log(f"measured {candidate.name}: {statistics.median(candidate.rates):.1f} rows/s, "
            f"batch 1 {statistics.median(candidate.latency_ms):.2f} ms")


def _score(candidate: Candidate, objective: str) -> float:
    if objective == "latency":
        return -statistics.median(candidate.latency_ms)
    return statistics.median(candidate.rates)


def _best(candidates: Sequence[Candidate], objective: str) -> Candidate:
    if not candidates:
        raise UsageError("no candidate passed its check")
    return max(candidates, key=lambda c: _score(c, objective))


def _threads(best: Candidate, fp32: Candidate, workload: Workload, threads: int,
             rounds: int, objective: str, log: Callable[[str], Any]) -> dict[str, Any]:
    """The winner's thread count (1 … ``threads``) and spinning, measured in turns, each
    session alone; beside them fp32 as ``nlpforge.load`` runs it untuned (all threads,
    spinning), which the speed-up is measured against (its timings replace ``fp32``'s)."""
    options = [{"threads": t, "spin": spin} for t in sorted({1, max(1, threads // 2), threads})
               for spin in (True, False)]
    trials = [Candidate(f"{best.name} {o}", best.path, {**best.settings, **o}, best.lossy)
              for o in options]
    reference = Candidate("fp32 untuned", fp32.path, {"threads": threads, "spin": True}, False)
    _measure([*trials, reference], workload, threads, rounds, log, alone=True)
    winner = _best(trials, objective)
    best.rates, best.latency_ms = winner.rates, winner.latency_ms
    fp32.rates, fp32.latency_ms = reference.rates, reference.latency_ms
    return winner.settings


# -- the record --------------------------------------------------------------------------------

def _write(directory: Path, manifest: Manifest, candidates: list[Candidate], best: Candidate,
           settings: dict[str, Any], objective: str, workload: Workload,
           labelled: list[dict] | None, seconds: float, log: Callable[[str], Any]
           ) -> dict[str, Any]:
    variants = dict(manifest.get("variants") or {})
    old = variants.pop("tuned", None)
    if best.path.parent == directory:
        names = files.model_files(best.path)
    else:
        names = files.save(files.load(best.path), directory / TUNED_FILE)
    if old and old["file"] not in names and old["file"] != best.path.name:
        for name in old.get("files") or [old["file"]]:
            if all(name not in (v.get("files") or [v["file"]]) for v in variants.values()):
                (directory / name).unlink(missing_ok=True)
    variants["tuned"] = {"file": names[0], "files": names,
                         "precision": "int8" if best.lossy else "fp32",
                         "session": settings, "candidate": best.name,
                         "validation": "tuning", **({"made": best.made} if best.made else {})}
    fp32 = next(c for c in candidates if c.name == "fp32/default")
    lossless = {name: c for c in candidates if c.rates and not c.lossy and
                (name := c.name.split("/")[0]) in variants and c.name.endswith("/default")}
    default = max(lossless, key=lambda n: _score(lossless[n], objective)) if lossless \
        else manifest.get("default_variant", "fp32")
    record = {
        "cpu": cpu_fingerprint(), "variant": "tuned", "candidate": best.name,
        "settings": settings, "objective": objective,
        "speedup_vs_fp32": round(_score(best, "throughput") / _score(fp32, "throughput"), 3)
        if objective == "throughput" and fp32.rates else
        round(statistics.median(fp32.latency_ms) / statistics.median(best.latency_ms), 3)
        if fp32.latency_ms else 1.0,
        "rows": workload.rows, "data": workload.source, "labelled": labelled is not None,
        "lengths": workload.lengths, "default_variant": default,
        "candidates": {c.name: c.record() for c in candidates},
        "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(seconds, 1),
    }
    manifest = {**manifest, "variants": variants, "default_variant": default,  # type: ignore
                "tuning": record}
    write_manifest(directory, manifest)
    log(f"tuned: {best.name} {settings}, {record['speedup_vs_fp32']}x fp32; default {default}")
    return record
