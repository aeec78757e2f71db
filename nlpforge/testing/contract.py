"""The plugin contract check: one call proves a task plugin works end to end.

``check_task`` takes a task (class or id), a few training rows and requests, and runs them
through what a user does: the real trainer for a few steps, the real exporter (which validates
the ONNX graph against PyTorch), the torch-free ``Predictor`` in a fresh process where torch
and transformers cannot be imported, and PyTorch on the same requests; predictions and raw
model outputs of both must agree. Any stage that fails raises an ``AssertionError`` naming the
stage and what went wrong, so a plugin's test reads as one line.

Torch is imported inside the function only: this module is imported by the pytest plugin.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from nlpforge.errors import NlpforgeError
from nlpforge.families import family as family_spec
from nlpforge.runtime.batching import batch_groups
from nlpforge.tasks import ENCODER_INPUTS, Task


class ContractError(AssertionError):
    """A task plugin failed one stage of the contract check."""


@dataclass
class ContractReport:
    """What the check did: the dirs it made, the figures it measured, the predictions."""

    task: str
    family: str
    run_dir: Path
    export_dir: Path
    train: dict[str, Any]
    validation: dict[str, Any]
    predictions: list[dict]
    torch_predictions: list[dict] | None
    max_abs_diff: dict[str, float]
    torch_free: bool
    seconds: dict[str, float] = field(default_factory=dict)


# -- stages ----------------------------------------------------------------------------------

@contextlib.contextmanager
def _stage(task_id: str, name: str, seconds: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    except ContractError:
        raise
    except (NlpforgeError, AssertionError) as exc:
        raise ContractError(f"task '{task_id}': {name} failed: {exc}") from exc
    except Exception as exc:
        raise ContractError(f"task '{task_id}': {name} failed: {type(exc).__name__}: {exc}"
                            f"{_origin(exc)}") from exc
    finally:
        seconds[name] = round(time.perf_counter() - start, 3)


def _origin(exc: BaseException) -> str:
    """Where the error was raised (the innermost frame), so a plugin author finds it."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (raised at {last.filename}:{last.lineno} in {last.name})"


# -- comparing predictions -------------------------------------------------------------------

def compare_predictions(actual: Any, expected: Any, atol: float = 1e-3, rtol: float = 1e-3,
                        where: str = "") -> list[str]:
    """Differences between two JSON-like predictions: numbers within ``atol + rtol*|b|``,
    everything else equal. Returns one line per difference (empty when they agree)."""
    here = where or "prediction"
    if isinstance(expected, bool) or isinstance(actual, bool):
        return [] if actual == expected else [f"{here}: {actual!r} != {expected!r}"]
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        if math.isnan(expected) and math.isnan(actual):
            return []
        if abs(actual - expected) <= atol + rtol * abs(expected):
            return []
        return [f"{here}: {actual!r} != {expected!r} (diff {abs(actual - expected):.3g})"]
    if isinstance(expected, dict) and isinstance(actual, dict):
        if set(actual) != set(expected):
            return [f"{here}: keys {sorted(actual)} != {sorted(expected)}"]
        out: list[str] = []
        for key in expected:
            out += compare_predictions(actual[key], expected[key], atol, rtol, f"{here}.{key}")
        return out
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        if len(actual) != len(expected):
            return [f"{here}: {len(actual)} items != {len(expected)}"]
        out = []
        for i, (a, b) in enumerate(zip(actual, expected)):
            out += compare_predictions(a, b, atol, rtol, f"{here}[{i}]")
        return out
    return [] if actual == expected else [f"{here}: {actual!r:.80} != {expected!r:.80}"]


# -- the torch-free prediction, in a process where torch cannot be imported ------------------

_TORCH_FREE_SCRIPT = r"""
import importlib, importlib.abc, json, sys

class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"'import {name}' during torch-free prediction: encode, "
                              "postprocess and the plugin's module must not need torch")

sys.meta_path.insert(0, BlockTorch())
spec = json.loads(sys.stdin.read())
import nlpforge
from nlpforge.testing.registry import temporary_plugins
plugins = []
for ref in spec["local"]:
    module, _, qualname = ref.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split(".") if qualname else []:
        obj = getattr(obj, part)
    plugins.append(obj)
with temporary_plugins(*plugins):
    predictor = nlpforge.load(spec["export"], device="cpu", threads=1)
    print(json.dumps(predictor.predict(spec["requests"])))
"""


def predict_without_torch(export_dir: str | os.PathLike, requests: Sequence[dict],
                          local: Sequence[str] = (), timeout: float = 300) -> list[dict]:
    """Predict ``requests`` with the export in a fresh Python process where importing torch or
    transformers fails; ``local`` lists "module:Class" task classes to register there."""
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONWARNINGS": "ignore"}
    spec = json.dumps({"export": str(export_dir), "requests": list(requests),
                       "local": list(local)})
    result = subprocess.run([sys.executable, "-c", _TORCH_FREE_SCRIPT], input=spec,
                            capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise AssertionError("the torch-free runtime could not predict: "
                             + (lines[-1] if lines else f"exit code {result.returncode}"))
    return json.loads(result.stdout.strip().splitlines()[-1])


def _importable(task: type[Task]) -> str | None:
    """"module:qualname" when a fresh process can import the class, else None."""
    if "<locals>" in task.__qualname__ or task.__module__ == "__main__":
        return None
    return f"{task.__module__}:{task.__qualname__}"


# -- resolving the task ----------------------------------------------------------------------

def _resolve(task: type[Task] | str) -> tuple[type[Task], bool]:
    """The task class, and whether it must be registered for the check."""
    from nlpforge.errors import PluginError
    from nlpforge.plugins import get_plugin_manager

    if isinstance(task, str):
        try:
            return get_plugin_manager().get_task(task), False
        except PluginError as exc:
            raise ContractError(f"task '{task}': not installed: {exc}") from exc
    if not (isinstance(task, type) and issubclass(task, Task)):
        raise ContractError(f"check_task() takes a Task subclass or a task id, got {task!r}")
    try:
        task.check_class()
    except NlpforgeError as exc:
        raise ContractError(f"task class {task.__qualname__}: {exc}") from exc
    installed = get_plugin_manager().tasks.get(task.id)
    return task, installed is None or installed.task is not task


def _default_requests(task: Task, rows: Sequence[dict]) -> list[dict]:
    """The request fields of the first rows, plus the task's own example request."""
    names = [f.name for f in task.request_fields]
    requests = [{n: row[n] for n in names if n in row} for row in rows[:3]]
    return requests + [task.example_request()]


# -- the check -------------------------------------------------------------------------------

def check_task(task: type[Task] | str, rows: Sequence[dict],
               requests: Sequence[dict] | None = None, *, base: str | os.PathLike | None = None,
               workdir: str | os.PathLike | None = None, options: dict[str, Any] | None = None,
               labels: Sequence[str] | None = None, steps: int = 4, batch_size: int = 8,
               lr: float = 1e-3, atol: float = 1e-4, prediction_atol: float = 1e-3,
               batch_atol: float = 1e-5, torch_free: bool = True,
               export_options: dict[str, Any] | None = None,
               train_options: dict[str, Any] | None = None) -> ContractReport:
    """Train ``task`` on ``rows`` for ``steps`` steps, export it, predict ``requests`` with
    ONNX Runtime (in a torch-free process) and with PyTorch, and compare.

    ``base`` is the base model dir (default: the family's tiny model, built in ``workdir``);
    ``options``/``labels`` go to the task; ``atol`` bounds raw output differences (and the
    exporter's validation), ``prediction_atol`` the numbers in predictions, ``batch_atol``
    those of a request predicted alone against the same request among all of them (a
    prediction must not depend on the rows batched with it). ``torch_free=False``
    predicts in this process instead (for a task class a fresh process cannot import).
    Raises ``ContractError`` (an AssertionError) naming the failing stage.
    """
    cls, register = _resolve(task)
    family = cls.family.value
    seconds: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        root = Path(workdir) if workdir is not None else \
            Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nlpforge-contract-")))
        root.mkdir(parents=True, exist_ok=True)
        if register:
            from nlpforge.testing.registry import temporary_plugins

            stack.enter_context(temporary_plugins(cls))
        with _stage(cls.id, "task options", seconds):
            instance = cls(labels=labels, **(options or {}))
        with _stage(cls.id, "data check", seconds):
            if not rows:
                raise AssertionError("no training rows given")
            for i, row in enumerate(rows):
                instance.check_row(row, "rows", i + 1, training=True)
            requests = list(requests) if requests is not None \
                else _default_requests(instance, rows)
            for i, request in enumerate(requests):
                instance.check_row(request, "requests", i + 1, training=False)
        if base is None:
            with _stage(cls.id, "tiny base model", seconds):
                from nlpforge.testing.tiny import family_default, make_tiny_model

                name = family_default(family)
                base = make_tiny_model(name, root / f"tiny-{name}")
        run_dir, export_dir = root / "run", root / "export"
        with _stage(cls.id, "training", seconds):
            summary = _train(cls, base, rows, run_dir, options, labels, steps, batch_size, lr,
                             train_options or {})
        with _stage(cls.id, "export", seconds):
            from nlpforge.export.onnx import export_run

            manifest = export_run(str(run_dir), str(export_dir), atol=atol,
                                  **_with_quality_data(export_options or {}, rows, root))
            validation = manifest.get("validation") or {}
            if validation and not validation.get("passed", False):
                raise AssertionError(f"the export's validation did not pass: {validation}")
        local = [] if not register else [_importable(cls)]
        checked_torch_free = torch_free and None not in local
        with _stage(cls.id, "torch-free prediction", seconds):
            if checked_torch_free:
                predictions = predict_without_torch(export_dir, requests, local)
            else:
                import nlpforge

                predictions = nlpforge.load(str(export_dir), device="cpu").predict(requests)
            if len(predictions) != len(requests):
                raise AssertionError(f"{len(requests)} requests gave {len(predictions)} "
                                     f"predictions")
            json.dumps(predictions)  # JSON-ready, as the CLI and the server need
        with _stage(cls.id, "batch independence", seconds):
            import nlpforge

            check_batch_independence(nlpforge.load(str(export_dir), device="cpu"), requests,
                                     batch_atol)
        with _stage(cls.id, "PyTorch vs ONNX", seconds):
            compare_with_torch = family_spec(cls.family).load("contract_check")
            torch_predictions, diffs = compare_with_torch(
                run_dir, export_dir, requests, predictions, atol, prediction_atol)
        return ContractReport(cls.id, family, run_dir, export_dir, summary, validation,
                              predictions, torch_predictions, diffs, checked_torch_free, seconds)


def _train(cls: type[Task], base: Any, rows: Sequence[dict], run_dir: Path,
           options: dict | None, labels: Sequence[str] | None, steps: int, batch_size: int,
           lr: float, extra: dict[str, Any]) -> dict[str, Any]:
    """The real trainer on ``rows`` (in memory, as a data file would give them back; also the
    validation rows unless ``extra`` names files) for ``steps`` steps."""
    from nlpforge.training.loop import TrainConfig, train

    rows = [json.loads(json.dumps(row, ensure_ascii=False)) for row in rows]
    settings = dict(model=str(base), output=str(run_dir), max_steps=steps,
                    batch_size=batch_size, lr=lr, warmup_ratio=0.0,
                    task_options=dict(options or {}),
                    labels=list(labels) if labels is not None else None, progress=False,
                    tensorboard=False, overwrite=True, seed=0)
    settings.update(extra)
    summary = train(TrainConfig(**settings), task=cls,
                    train_rows=None if settings.get("train") else rows,
                    validation_rows=None if settings.get("validation") else rows)
    metrics = (summary.get("best") or {}).get("metrics") or {}
    if summary.get("steps") != settings["max_steps"]:
        raise AssertionError(f"trained {summary.get('steps')} steps, expected {steps}")
    if not metrics:
        raise AssertionError("the trainer reported no validation metrics")
    for name, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value) and name != "loss":
            raise AssertionError(f"metric '{name}' is {value}")
    return summary


def _with_quality_data(options: dict[str, Any], rows: Sequence[dict],
                       root: Path) -> dict[str, Any]:
    """Export options; an int8 export without calibration data is checked on ``rows`` (the
    run has no validation file to fall back on: its rows were given in memory)."""
    if options.get("quantize") != "int8" or options.get("calibration_data") is not None:
        return options
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return {**options, "calibration_data": str(data)}


def check_batch_independence(model: Any, requests: Sequence[dict], atol: float = 1e-5) -> None:
    """Each request predicted alone equals its prediction among all ``requests``, in their
    order and reversed (numbers within ``atol`` absolute plus ``atol`` relative, everything
    else equal): a row's prediction must not depend on the rows batched with it.

    ``model`` is a loaded export (``nlpforge.load``). Generative exports are checked with
    greedy search. An encoder task whose ``encode`` gives one feature row per request must
    also give each request the same token features alone and in a batch (padding aside):
    a tiny model's outputs may move too little to show that a neighbour changed them.
    Raises AssertionError naming the requests that differ.
    """
    generates = family_spec(model.task.family).generates

    def predict(rows: Sequence[dict]) -> list[dict]:
        if generates:
            return model.predict(rows, do_sample=False, num_beams=1, num_return_sequences=1,
                                 max_new_tokens=CHECK_NEW_TOKENS)
        return model.predict(rows)

    alone = [predict([request])[0] for request in requests]
    together = {"among all the requests": predict(requests),
                "among all the requests in reverse order": predict(requests[::-1])[::-1]}
    problems = [] if generates else _feature_differences(model.task, model.tokenizer, requests)
    for where, predictions in together.items():
        for i, (single, batched) in enumerate(zip(alone, predictions)):
            problems += [f"request {i + 1} alone vs {where}: {line}"
                         for line in compare_predictions(batched, single, atol, atol)]
    if problems:
        raise AssertionError("a prediction depends on the other requests in its batch "
                             "(make encode treat each row on its own, or declare "
                             "Task.batch_key): " + "; ".join(problems[:5]))


def _feature_differences(task: Task, tokenizer: Any, requests: Sequence[dict]) -> list[str]:
    """Requests whose token features alone differ from theirs among the requests of their
    batch key (right padding aside); nothing for a task that encodes a request into another
    number of feature rows, or without an attention mask."""
    problems = []
    for group in batch_groups(task, requests):
        batch = task.encode([requests[i] for i in group], tokenizer)
        names = [n for n in ENCODER_INPUTS if n in batch]
        if "attention_mask" not in batch or any(len(batch[n]) != len(group) for n in names):
            return []
        for k, i in enumerate(group):
            own = task.encode([requests[i]], tokenizer)
            width = own["attention_mask"].shape[1]
            differ = [n for n in names if n in own and not np.array_equal(
                batch[n][k, :width], own[n][0])]
            if differ or batch["attention_mask"][k, width:].any():
                problems.append(f"request {i + 1}: its {', '.join(differ or ['attention_mask'])}"
                                f" alone differ from theirs among all the requests")
    return problems


def compare_outputs(run_dir: Path, export_dir: Path, requests: list[dict],
                    predictions: list[dict], atol: float,
                    prediction_atol: float) -> tuple[list[dict], dict[str, float]]:
    """The encoder family's check: the ONNX predictions equal PyTorch's on the run dir
    (numbers within ``prediction_atol``), and every raw output is within ``atol``. Returns
    PyTorch's predictions and the max abs difference of every raw output."""
    import numpy as np

    import nlpforge
    from nlpforge.runtime.batching import predict_rows
    from nlpforge.training.loading import load_run, torch_runner

    manifest, task, model, tokenizer = load_run(run_dir)
    inputs = list(manifest.get("model_inputs") or [])
    expected = predict_rows(task, tokenizer, torch_runner(task, model, inputs), requests)
    problems = compare_predictions(predictions, expected, prediction_atol, prediction_atol)
    if problems:
        raise AssertionError("ONNX and PyTorch predictions differ: " + "; ".join(problems[:5]))
    predictor = nlpforge.load(str(export_dir), device="cpu")
    features = predictor.task.encode(requests, predictor.tokenizer)
    onnx_out = predictor.run(features)
    torch_out = torch_runner(task, model, inputs)(features)
    diffs = {}
    for name, value in onnx_out.items():
        if name not in torch_out:
            raise AssertionError(f"the ONNX model has an output '{name}' that Task.forward "
                                 f"does not return (it returns {', '.join(torch_out)})")
        want = torch_out[name]
        if value.shape != want.shape:
            raise AssertionError(f"output '{name}': ONNX shape {value.shape} != PyTorch "
                                 f"{want.shape}")
        diff = float(np.max(np.abs(value.astype(np.float64) - want))) if want.size else 0.0
        diffs[name] = diff
        if not diff <= atol:
            raise AssertionError(f"output '{name}' differs from PyTorch by {diff:.3g} "
                                 f"(> {atol:g}) on the requests")
    return expected, diffs


#: New tokens each request generates in the generative families' check.
CHECK_NEW_TOKENS = 8


def compare_generation(run_dir: Path, export_dir: Path, requests: list[dict],
                       predictions: list[dict], atol: float,
                       prediction_atol: float) -> tuple[list[dict], dict[str, float]]:
    """The generative families' check: greedy search over the export (the prompts as the
    task builds them) gives the same new tokens as ``transformers``' ``generate()`` on the
    run dir's PyTorch model. Returns the PyTorch texts (as predictions) and, per request,
    nothing to measure: tokens are equal or the check fails."""
    import torch

    import nlpforge
    from nlpforge.training.loading import load_run

    _, _, model, _ = load_run(run_dir)
    model.eval()
    generator = nlpforge.load(str(export_dir), device="cpu")
    settings = {"max_new_tokens": CHECK_NEW_TOKENS, "min_new_tokens": 0, "do_sample": False,
                "num_beams": 1, "num_return_sequences": 1}
    config = generator.config_for(settings)
    rows = generator.as_rows(requests)
    eos = set(generator.stepper.eos_token_ids)
    pad = generator.tokenizer.pad_id
    texts: list[dict] = [{}] * len(rows)
    for group in batch_groups(generator.task, rows):  # rows the task encodes together
        part = [rows[i] for i in group]
        ours = generator.search(part, config, group)
        ids, mask = generator.encode(part, config, group)
        with torch.inference_mode():
            expected = model.generate(input_ids=torch.from_numpy(ids),
                                      attention_mask=torch.from_numpy(mask), **settings).numpy()
        for k, row in enumerate(group):
            want = _until_eos(expected[k, ours.prompt_length:].tolist(), eos, pad)
            got = _until_eos(ours.new_tokens(k).tolist(), eos, pad)
            if got != want:
                raise AssertionError(f"request {row + 1}: the export generated tokens {got}, "
                                     f"transformers' generate() on the run dir {want}")
            texts[row] = {"generated_text": generator.tokenizer.decode(want)}
    return texts, {}


def _until_eos(tokens: list[int], eos: set[int], pad: int) -> list[int]:
    """Tokens up to and including the first end-of-sequence token, without trailing pads."""
    out: list[int] = []
    for token in tokens:
        out.append(token)
        if token in eos:
            return out
    while out and out[-1] == pad:
        out.pop()
    return out
