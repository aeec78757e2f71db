"""A served model: an export dir's Predictor behind a DynamicBatcher, and how requests map to it.

Two kinds of request reach a model:
- text (v2 BYTES inputs named after the task's request fields, or the /v1 route): rows go
  through ``predict_rows`` — the task's own tokenization and postprocessing — and come back as
  predictions plus the model's per-row outputs (``logits``);
- token tensors (v2 INT64 ``input_ids``/``attention_mask``/``token_type_ids``): they go to
  ``Predictor.run`` as they are and the model's raw outputs come back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nlpforge.errors import UsageError
from nlpforge.runtime.batching import predict_rows, row_size
from nlpforge.runtime.predictor import Predictor
from nlpforge.runtime.tokenizer import Tokenizer
from nlpforge.serving.batcher import DynamicBatcher, Job
from nlpforge.serving.errors import BadRequest, InputTooLong, NotFound
from nlpforge.serving.protocol import DATATYPES, InferRequest, OutputTensor, Tensor

#: Model names: what a URL path segment can carry safely; never used to build a file path.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
VERSION = "1"
_ORT_TYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
              "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(bool)": "BOOL"}


def parse_model_arg(arg: str) -> tuple[str, Path]:
    """``NAME=DIR`` or ``DIR`` (the name is then the dir's base name) → (name, dir)."""
    name, sep, path = arg.partition("=")
    if not sep:
        name, path = Path(arg.rstrip("/\\")).name, arg
    if not NAME_PATTERN.fullmatch(name) or name.strip(".") == "":
        raise UsageError(f"{arg}: model name {name!r} must be 1-64 letters, digits, '.', '_' "
                         f"or '-', starting with a letter or digit; give one with NAME=DIR")
    return name, Path(path)


@dataclass
class RowsJob:
    """Payload of a text request: checked rows, whether to truncate, the field they came from."""

    rows: list[dict]
    truncate: bool
    where: str


def _datatype_of_value(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FP32"
    return "BYTES"  # strings; lists and dicts as JSON text


class ServedModel:
    """One export dir served under ``name``; ``attach`` gives it its batcher."""

    version = VERSION

    def __init__(self, name: str, predictor: Predictor, generator: Any = None):
        self.name = name
        self.predictor = predictor
        self.task = predictor.task
        self.generator = generator
        self.batcher: DynamicBatcher | None = None
        self.max_batch_size = 32
        self.limit = predictor.tokenizer.max_length
        self.text_fields = [f.name for f in self.task.request_fields if f.type is str]
        self.tensor_inputs = list(predictor.input_names)
        config = _read_config(predictor.directory)
        self.vocab_size = int(config.get("vocab_size")
                              or predictor.tokenizer.backend.get_vocab_size())
        self.type_vocab_size = int(config.get("type_vocab_size") or 2)
        axes = predictor.manifest.get("io", {}).get("dynamic_axes", {})
        self.sequence_axes = {name: [int(a) for a, n in axes.get(name, {}).items()
                                     if n == "sequence_length"]
                              for name in predictor.output_names}
        self.raw_outputs = {o.name: (_ORT_TYPES.get(o.type, "FP32"),
                                     [d if isinstance(d, int) else -1 for d in o.shape])
                            for o in predictor.session.get_outputs()}
        # Text responses carry the model outputs that have one entry per row (not per token).
        self.row_outputs = [n for n in predictor.output_names if not self.sequence_axes[n]]
        example = self.task.example_request()
        self.example = example
        prediction = predictor.predict([example])[0]  # checks the model end to end
        self.prediction_outputs = {key: _datatype_of_value(value)
                                   for key, value in prediction.items()}
        self._probe = Tokenizer.from_dir(predictor.directory, max_length=self.limit + 1,
                                         pad_id=predictor.tokenizer.pad_id)

    @classmethod
    def load(cls, name: str, path: str | Path, device: str = "auto", threads: int | None = None,
             variant: str | None = None) -> "ServedModel":
        """``variant``: the export's model file to serve (default: its lossless best)."""
        from nlpforge.manifest import read_manifest
        from nlpforge.runtime.generation.generator import is_generative
        from nlpforge.serving.generation import GeneratedModel, find_generator

        if is_generative(read_manifest(path)):
            return GeneratedModel.load(name, path, device=device, threads=threads,
                                       variant=variant)
        predictor = Predictor.load(path, device=device, threads=threads, variant=variant)
        return cls(name, predictor, find_generator(predictor))

    def attach(self, batcher: DynamicBatcher) -> None:
        self.batcher = batcher
        self.max_batch_size = batcher.max_batch_size

    def check_version(self, version: str | None) -> None:
        if version is not None and version != self.version:
            raise NotFound(f"model '{self.name}' has no version {version[:64]!r} "
                           f"(versions: {self.version})")

    # -- metadata ---------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """v2 model metadata: text inputs and token inputs are two alternative ways in."""
        inputs = [{"name": n, "datatype": "BYTES", "shape": [-1]} for n in self.text_fields]
        inputs += [{"name": n, "datatype": "INT64", "shape": [-1, -1]} for n in self.tensor_inputs]
        outputs = [{"name": k, "datatype": t, "shape": [-1]}
                   for k, t in self.prediction_outputs.items()]
        outputs += [{"name": n, "datatype": t, "shape": s} for n, (t, s) in self.raw_outputs.items()
                    if n not in self.prediction_outputs]
        return {"name": self.name, "versions": [self.version], "platform": "onnxruntime_onnx",
                "inputs": inputs, "outputs": outputs,
                "parameters": {"task": self.task.id, "max_tokens": self.limit,
                               "labels": json.dumps(self.task.labels)}}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "task": self.task.id,
                "labels": self.task.labels, "max_tokens": self.limit,
                "inputs": [f.name for f in self.task.request_fields],
                "generates": self.generator is not None}

    # -- requests ---------------------------------------------------------------------------

    async def predict(self, inputs: Sequence[Any], truncate: bool, timeout: float,
                      where: str = "inputs") -> list[dict]:
        """Predictions for plain inputs (strings or request dicts), in order."""
        rows = self.predictor.as_rows(inputs)
        predictions, _ = await self._submit_rows(rows, truncate, timeout, where)
        return predictions

    async def infer(self, request: InferRequest, truncate: bool,
                    timeout: float) -> list[tuple[OutputTensor, bool]]:
        """A v2 infer request → the requested output tensors, each flagged binary or not."""
        text = [t for t in request.inputs if t.datatype == "BYTES"]
        if text and len(text) < len(request.inputs):
            raise BadRequest(f"field 'inputs': send text (BYTES: {', '.join(self.text_fields)}) "
                             f"or token ids (INT64: {', '.join(self.tensor_inputs)}), not both")
        if text:
            rows, where = self._rows_from_tensors(text)
            predictions, raw = await self._submit_rows(rows, truncate, timeout, where)
            available = self._prediction_tensors(predictions)
            available.update({n: OutputTensor.from_array(n, raw[n]) for n in self.row_outputs
                              if n not in available and n in raw})  # none for windows/pairs
        else:
            features, length = self._features_from_tensors(request.inputs)
            size = len(features["input_ids"])
            outputs = await self._submit(("tensors",), features, size, length, timeout)
            available = {n: OutputTensor.from_array(n, a) for n, a in outputs.items()}
        return self._select(available, request)

    async def _submit(self, kind: Any, payload: Any, size: int, length: int,
                      timeout: float) -> Any:
        if size == 0:
            raise BadRequest("field 'inputs': the batch is empty")
        assert self.batcher is not None, "ServedModel.attach() was not called"
        return await self.batcher.submit(kind, payload, size, length, timeout)

    async def _submit_rows(self, rows: list[dict], truncate: bool, timeout: float,
                           where: str) -> Any:
        length = max((row_size(r) for r in rows), default=0)
        return await self._submit(("rows", truncate), RowsJob(rows, truncate, where),
                                  len(rows), length, timeout)

    def _rows_from_tensors(self, tensors: list[Tensor]) -> tuple[list[dict], str]:
        """BYTES inputs → request rows. A single BYTES input of any name is the main text."""
        fields = {}
        for t in tensors:
            name = t.name
            if name not in self.text_fields:
                if len(tensors) > 1 or not self.text_fields:
                    raise BadRequest(f"field '{t.where}.name': model '{self.name}' has no text "
                                     f"input {name[:64]!r} (text inputs: "
                                     f"{', '.join(self.text_fields)})")
                name = self.text_fields[0]
            if len(t.shape) not in (1, 2) or (len(t.shape) == 2 and t.shape[1] != 1):
                raise BadRequest(f"field '{t.where}.shape': text inputs have shape [N] or "
                                 f"[N, 1], got {list(t.shape)}")
            fields[name] = t
        required = [f.name for f in self.task.request_fields if f.required]
        missing = [n for n in required if n not in fields]
        if missing:
            raise BadRequest(f"field 'inputs': missing text input '{missing[0]}'")
        sizes = {t.shape[0] for t in fields.values()}
        if len(sizes) > 1:
            raise BadRequest("field 'inputs': text inputs have different batch sizes "
                             f"({', '.join(f'{n}: {t.shape[0]}' for n, t in fields.items())})")
        main = fields[required[0]] if required else next(iter(fields.values()))
        rows = [{name: t.data[i] for name, t in fields.items()} for i in range(len(main.data))]
        return self.predictor.as_rows(rows), f"{main.where}.data"

    def _features_from_tensors(self, tensors: list[Tensor]) -> tuple[dict[str, np.ndarray], int]:
        """INT64 inputs → checked features for ``Predictor.run``; absent masks are filled in."""
        given = {}
        for t in tensors:
            if t.name not in self.tensor_inputs:
                raise BadRequest(f"field '{t.where}.name': model '{self.name}' has no input "
                                 f"{t.name[:64]!r} (token inputs: {', '.join(self.tensor_inputs)};"
                                 f" text inputs: {', '.join(self.text_fields)})")
            if t.datatype not in ("INT64", "INT32", "INT16", "INT8", "UINT8", "UINT16",
                                  "UINT32", "UINT64"):
                raise BadRequest(f"field '{t.where}.datatype': token inputs are INT64, got "
                                 f"{t.datatype}")
            if len(t.shape) != 2:
                raise BadRequest(f"field '{t.where}.shape': token inputs have shape "
                                 f"[batch, tokens], got {list(t.shape)}")
            given[t.name] = t
        if "input_ids" not in given:
            raise BadRequest("field 'inputs': missing 'input_ids' (INT64, [batch, tokens])")
        ids = given["input_ids"]
        shape = ids.shape
        for t in given.values():
            if t.shape != shape:
                raise BadRequest(f"field '{t.where}.shape': {list(t.shape)} differs from "
                                 f"input_ids' {list(shape)}")
        if shape[1] == 0:
            raise BadRequest(f"field '{ids.where}.shape': rows need at least one token")
        if shape[1] > self.limit:
            raise InputTooLong(f"field '{ids.where}.shape': {shape[1]} tokens, over model "
                               f"'{self.name}''s limit of {self.limit}; truncate on the client")
        bounds = {"input_ids": self.vocab_size, "attention_mask": 2,
                  "token_type_ids": self.type_vocab_size}
        features = {}
        for name in self.tensor_inputs:
            if name in given:
                array = given[name].data.astype(np.int64)
                high = bounds.get(name)
                if array.size and high and (array.min() < 0 or array.max() >= high):
                    raise BadRequest(f"field '{given[name].where}.data': values must lie in "
                                     f"[0, {high - 1}]")
            else:
                fill = 1 if name == "attention_mask" else 0
                array = np.full(shape, fill, dtype=np.int64)
            features[name] = array
        return features, shape[1]

    def _prediction_tensors(self, predictions: list[dict]) -> dict[str, OutputTensor]:
        tensors = {}
        for key, datatype in self.prediction_outputs.items():
            values = [p.get(key) for p in predictions]
            if datatype == "BYTES":
                data: Any = [v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                             for v in values]
            else:
                data = np.asarray(values, dtype=DATATYPES[datatype])
            tensors[key] = OutputTensor(key, datatype, (len(values),), data)
        return tensors

    def _select(self, available: dict[str, OutputTensor],
                request: InferRequest) -> list[tuple[OutputTensor, bool]]:
        if request.outputs is None:
            return [(t, request.binary_outputs) for t in available.values()]
        chosen = []
        for i, (name, binary) in enumerate(request.outputs):
            if name not in available:
                raise BadRequest(f"field 'outputs[{i}].name': model '{self.name}' has no output "
                                 f"{name[:64]!r} for these inputs (outputs: "
                                 f"{', '.join(available)})")
            chosen.append((available[name], binary))
        return chosen

    # -- on the model thread ----------------------------------------------------------------

    def run_batch(self, jobs: list[Job]) -> list[Any]:
        """The batcher's callback: one result (or exception) per job."""
        if jobs[0].kind[0] == "rows":
            return self._run_rows(jobs)
        return self._run_tensors(jobs)

    def _run_rows(self, jobs: list[Job]) -> list[Any]:
        results: list[Any] = [None] * len(jobs)
        owners: list[tuple[int, int]] = []  # (job, row) of each row in ``rows``
        rows: list[dict] = []
        for j, job in enumerate(jobs):
            payload: RowsJob = job.payload
            if not payload.truncate:
                error = self._too_long(payload.rows, payload.where)
                if error is not None:
                    results[j] = error
                    continue
            owners.extend((j, i) for i in range(len(payload.rows)))
            rows.extend(payload.rows)
        if not rows:
            return results
        order = sorted(range(len(rows)), key=lambda k: row_size(rows[k]))
        runs: list[dict[str, np.ndarray]] = []

        def run(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            outputs = self.predictor.run(features)
            runs.append(outputs)
            return outputs

        predictions = predict_rows(self.task, self.predictor.tokenizer, run,
                                   [rows[k] for k in order], self.max_batch_size,
                                   sort_by_length=False)
        raw = {n: np.concatenate([r[n] for r in runs]) for n in self.row_outputs}
        # A task that splits rows into windows has no raw output per row.
        raw = {n: a for n, a in raw.items() if len(a) == len(rows)}
        position = np.empty(len(rows), dtype=np.int64)
        position[order] = np.arange(len(rows))
        start = 0
        for j, job in enumerate(jobs):
            if results[j] is not None:
                continue
            at = position[start:start + job.size]
            results[j] = ([predictions[p] for p in at], {n: a[at] for n, a in raw.items()})
            start += job.size
        return results

    def _too_long(self, rows: list[dict], where: str) -> Exception | None:
        """An InputTooLong naming the first row over the token limit, or None."""
        features = self.task.encode(rows, self._probe)
        if "attention_mask" in features:
            lengths = features["attention_mask"].sum(axis=1)
        else:
            lengths = (features["input_ids"] != self._probe.pad_id).sum(axis=1)
        over = np.flatnonzero(lengths > self.limit)
        if over.size == 0:
            return None
        return InputTooLong(f"field '{where}[{over[0]}]': longer than model '{self.name}' takes "
                            f"({self.limit} tokens); shorten it, or set parameters.truncate=true "
                            f"to cut it to {self.limit} tokens")

    def _run_tensors(self, jobs: list[Job]) -> list[Any]:
        length = max(job.length for job in jobs)
        total = sum(job.size for job in jobs)
        pad = {"input_ids": self.predictor.tokenizer.pad_id}
        batch = {n: np.full((total, length), pad.get(n, 0), dtype=np.int64)
                 for n in self.tensor_inputs}
        start = 0
        for job in jobs:
            for name, array in job.payload.items():
                batch[name][start:start + job.size, :job.length] = array
            start += job.size
        step = self.max_batch_size
        runs = [self.predictor.run({n: a[s:s + step] for n, a in batch.items()})
                for s in range(0, total, step)]
        merged = {n: np.concatenate([r[n] for r in runs]) for n in self.predictor.output_names}
        results, start = [], 0
        for job in jobs:
            out = {}
            for name, array in merged.items():
                index = [slice(start, start + job.size)] + [slice(None)] * (array.ndim - 1)
                for axis in self.sequence_axes[name]:
                    index[axis] = slice(0, job.length)
                out[name] = array[tuple(index)]
            results.append(out)
            start += job.size
        return results

    def warm_up(self) -> None:
        """Run the example request alone, in a full batch and at the token limit.

        Only the last text field is lengthened: tasks may bound the others (a QA question must
        leave room for the context in every window).
        """
        texts = [k for k, v in self.example.items() if isinstance(v, str)]
        long = {k: (v + " ") * self.limit if texts and k == texts[-1] else v
                for k, v in self.example.items()}
        for rows in ([self.example], [self.example] * self.max_batch_size, [long]):
            predict_rows(self.task, self.predictor.tokenizer, self.predictor.run, rows,
                         self.max_batch_size)


def _read_config(directory: Path) -> dict:
    path = Path(directory) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
