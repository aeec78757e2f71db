"""PredictorModel: an export's ``Predictor`` served behind a DynamicBatcher.

Two kinds of request reach it:
- text (v2 BYTES inputs named after the task's request fields, or the /v1 route): rows go
  through ``predict_rows`` — the task's own tokenization and postprocessing — and come back as
  predictions plus the model's per-row outputs (``logits``);
- token tensors (v2 INT64 ``input_ids``/``attention_mask``/``token_type_ids``): they go to
  ``Predictor.run`` as they are and the model's raw outputs come back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from nlpforge.errors import NlpforgeError
from nlpforge.json_files import read_json_object
from nlpforge.runtime.batching import batch_order, predict_rows
from nlpforge.runtime.predictor import Predictor
from nlpforge.runtime.tokenizer import LengthProbe
from nlpforge.serving.batcher import Job
from nlpforge.serving.errors import BadRequest, InputTooLong
from nlpforge.serving.protocol import Tensor
from nlpforge.serving.served import RowsJob, ServedModel, datatype_of_value

_ORT_TYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
              "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(bool)": "BOOL"}


class PredictorModel(ServedModel):
    """An encoder export (one ONNX graph): text and token-tensor requests."""

    concurrent_runs = True  # an ONNX Runtime session runs calls from several threads

    def __init__(self, name: str, predictor: Predictor):
        super().__init__(name, predictor, predictor.tokenizer.max_length)
        self.predictor = predictor
        self.tensor_inputs = list(predictor.input_names)
        config = read_json_object(predictor.directory / "config.json")
        self.vocab_size = int(config.get("vocab_size")
                              or predictor.tokenizer.vocab_size)
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
        prediction = predictor.predict([self.example])[0]  # checks the model end to end
        self.prediction_outputs = {key: datatype_of_value(value)
                                   for key, value in prediction.items()}
        # Encodes a bounded prefix of each row, one window of windowed tasks (_too_long).
        self._probe = LengthProbe.from_dir(predictor.directory, max_length=self.limit + 1,
                                           pad_id=predictor.tokenizer.pad_id)

    @classmethod
    def load(cls, name: str, path: str | Path, device: str = "auto", threads: int | None = None,
             variant: str | None = None) -> "PredictorModel":
        return cls(name, Predictor.load(path, device=device, threads=threads, variant=variant))

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

    async def infer_tensors(self, tensors: list[Tensor],
                            timeout: float) -> dict[str, Tensor]:
        features, length = self._features_from_tensors(tensors)
        size, step = len(features["input_ids"]), self.max_batch_size
        self.check_count(size, "field 'inputs'")
        chunks = [({n: a[i:i + step] for n, a in features.items()}, min(step, size - i), length)
                  for i in range(0, size, step)]
        results = await self._submit(("tensors",), chunks, timeout)
        return {n: Tensor.from_array(n, np.concatenate([r[n] for r in results]))
                for n in results[0]}

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
                error = self._too_long(payload.rows, payload.where, payload.first)
                if error is not None:
                    results[j] = error
                    continue
            owners.extend((j, i) for i in range(len(payload.rows)))
            rows.extend(payload.rows)
        if not rows:
            return results
        order = batch_order(self.task, rows)  # the order predict_rows runs them in
        runs: list[dict[str, np.ndarray]] = []

        def run(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            outputs = self.predictor.run(features)
            runs.append(outputs)
            return outputs

        try:
            predictions = predict_rows(self.task, self.predictor.tokenizer, run,
                                       [rows[k] for k in order], self.max_batch_size,
                                       sort_by_length=False)
        except NlpforgeError:
            if len(jobs) == 1:
                raise
            # A row the task refuses only when encoding it (a QA question too long for its
            # windows) fails its own request, not the others batched with it.
            return [self._run_alone(job) for job in jobs]
        # A task that splits rows into windows has no raw output per row.
        outputs = [] if self.task.splits_rows else self.row_outputs
        raw = {n: np.concatenate([r[n] for r in runs]) for n in outputs}
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

    def _run_alone(self, job: Job) -> Any:
        try:
            return self._run_rows([job])[0]
        except NlpforgeError as exc:
            return exc

    def _too_long(self, rows: list[dict], where: str, first: int = 0) -> Exception | None:
        """An InputTooLong naming the first row over the token limit, or None.

        Rows are encoded to one token over the limit, from a bounded prefix of each text and
        one window per row (``LengthProbe``): a long row costs what a short one does.
        """
        features = self.task.encode(rows, self._probe)
        if "attention_mask" in features:
            lengths = features["attention_mask"].sum(axis=1)
        else:
            lengths = (features["input_ids"] != self._probe.pad_id).sum(axis=1)
        over = np.flatnonzero(lengths > self.limit)
        if over.size == 0:
            return None
        return InputTooLong(f"field '{where}[{first + over[0]}]': longer than model "
                            f"'{self.name}' takes "
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
