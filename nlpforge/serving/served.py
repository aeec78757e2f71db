"""ServedModel: what the routes need of one served export dir, and the one place that picks
the adapter for an export (from its model family).

Two adapters implement it: ``PredictorModel`` (``predicting.py``: an export's ``Predictor``,
text and token-tensor requests) and ``GeneratorModel`` (``generating.py``: a generative
export's ``Generator``, text requests and streamed generation). Both go through the model's
``DynamicBatcher`` (``attach``); the batcher calls ``run_batch`` on the model thread.
"""

from __future__ import annotations

import abc
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from nlpforge.errors import UsageError
from nlpforge.runtime.batching import row_size
from nlpforge.serving.batcher import Chunk, DynamicBatcher, Job
from nlpforge.serving.errors import BadRequest, NotFound, PayloadTooLarge
from nlpforge.serving.protocol import DATATYPES, InferRequest, Tensor

#: Model names: what a URL path segment can carry safely; never used to build a file path.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
VERSION = "1"
#: Task settings that shape a prediction, listed with each model in ``GET /v1/models``.
PREDICTION_SETTINGS = ("multi_label", "threshold", "top_k", "aggregation", "allow_no_answer",
                       "pooling", "normalize")


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
    """Payload of one chunk of a text request: checked rows, whether to truncate, the field
    they came from and the position of the first row there."""

    rows: list[dict]
    truncate: bool
    where: str
    first: int = 0


def datatype_of_value(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FP32"
    return "BYTES"  # strings; lists and dicts as JSON text


class TextGenerator(Protocol):
    """What the generate routes need of a model that writes text."""

    config: Any

    def check_parameters(self, parameters: dict[str, Any] | None) -> None:
        """Raise UsageError for bad generation parameters (before a stream starts)."""

    def generate_stream(self, text_input: str, parameters: dict[str, Any]) -> Iterator[str]:
        """Yield the generated text piece by piece (token by token); runs on the model thread."""


class ServedModel(abc.ABC):
    """One export dir served under ``name``. ``runtime`` checks requests (``as_rows``);
    ``generator`` is the text generator of a generative export (None otherwise)."""

    version = VERSION
    generator: TextGenerator | None = None
    #: The export's model family and the variant served (set by ``load``).
    family: str | None = None
    variant: str | None = None
    #: ``run_batch`` may run on two threads at once (the batcher's express thread).
    concurrent_runs = False

    def __init__(self, name: str, runtime: Any, limit: int):
        self.name = name
        self.runtime = runtime
        self.task = runtime.task
        self.limit = limit
        self.batcher: DynamicBatcher | None = None
        self.max_batch_size = 32
        self.text_fields = [f.name for f in self.task.request_fields if f.type is str]
        #: Token-tensor inputs the model takes in v2 infer requests (INT64), if any.
        self.tensor_inputs: list[str] = []
        self.example = self.task.example_request()
        #: Prediction key → v2 datatype, for BYTES-input infer responses.
        self.prediction_outputs: dict[str, str] = {}

    @staticmethod
    def load(name: str, path: str | Path, device: str = "auto", threads: int | None = None,
             variant: str | None = None) -> "ServedModel":
        """The adapter of the export's model family, loaded. ``variant``: the export's model
        file to serve (default: its lossless best)."""
        from nlpforge.families import family
        from nlpforge.manifest import read_manifest
        from nlpforge.runtime.variants import choose_variant

        manifest = read_manifest(path)
        adapter = family(manifest["family"]).load("served")
        model = adapter.load(name, path, device=device, threads=threads, variant=variant)
        model.family = str(manifest["family"])
        model.variant = choose_variant(manifest, variant)[0]
        return model

    def attach(self, batcher: DynamicBatcher) -> None:
        self.batcher = batcher
        self.max_batch_size = batcher.max_batch_size

    def check_version(self, version: str | None) -> None:
        if version is not None and version != self.version:
            raise NotFound(f"model '{self.name}' has no version {version[:64]!r} "
                           f"(versions: {self.version})")

    # -- what it is -------------------------------------------------------------------------

    @abc.abstractmethod
    def metadata(self) -> dict[str, Any]:
        """The v2 model metadata."""

    def describe(self) -> dict[str, Any]:
        """The model's entry in ``GET /v1/models``: what a client (and the playground) needs
        to build a request and show its answer."""
        settings = getattr(self.task, "settings", None) or {}
        entry = {"name": self.name, "version": self.version, "task": self.task.id,
                 "family": self.family, "variant": self.variant,
                 "labels": self.task.labels, "max_tokens": self.limit,
                 "inputs": [f.name for f in self.task.request_fields],
                 "generates": self.generator is not None, "example": self.example,
                 "settings": {k: settings[k] for k in PREDICTION_SETTINGS if k in settings}}
        mask = getattr(self.task, "mask_token", None)
        if isinstance(mask, str):
            entry["mask_token"] = mask
        return entry

    # -- requests ---------------------------------------------------------------------------

    async def predict(self, inputs: Sequence[Any], truncate: bool, timeout: float,
                      where: str = "inputs") -> list[dict]:
        """Predictions for plain inputs (strings or request dicts), in order."""
        self.check_count(len(inputs), f"field '{where}'")
        rows = self.runtime.as_rows(inputs)
        predictions, _ = await self._submit_rows(rows, truncate, timeout, where)
        return predictions

    async def infer(self, request: InferRequest, truncate: bool,
                    timeout: float) -> list[tuple[Tensor, bool]]:
        """A v2 infer request → the requested output tensors, each flagged binary or not."""
        text = [t for t in request.inputs if t.datatype == "BYTES"]
        if not text:
            return self._select(await self.infer_tensors(request.inputs, timeout), request)
        if len(text) < len(request.inputs):
            raise BadRequest(f"field 'inputs': send text (BYTES: {', '.join(self.text_fields)}) "
                             f"or token ids (INT64: {', '.join(self.tensor_inputs)}), not both")
        self.check_count(text[0].shape[0] if text[0].shape else 0, "field 'inputs'")
        rows, where = self._rows_from_tensors(text)
        predictions, raw = await self._submit_rows(rows, truncate, timeout, where)
        available = self._prediction_tensors(predictions)
        available.update({n: Tensor.from_array(n, a) for n, a in raw.items()
                          if n not in available})
        return self._select(available, request)

    async def infer_tensors(self, tensors: list[Tensor],
                            timeout: float) -> dict[str, Tensor]:
        """Token-tensor inputs → the model's raw outputs. Only models with one graph take them."""
        names = ", ".join(t.name[:64] for t in tensors)
        raise BadRequest(f"field 'inputs': model '{self.name}' takes text (BYTES: "
                         f"{', '.join(self.text_fields)}), not token tensors ({names})")

    def check_count(self, count: int, where: str) -> None:
        """413 for a request of more rows than ``--max-inputs-per-request``."""
        limit = self.batcher.max_inputs if self.batcher is not None else None
        if limit is not None and count > limit:
            raise PayloadTooLarge(f"{where}: {count} inputs in one request; this server takes "
                                  f"at most {limit} (--max-inputs-per-request): send them in "
                                  f"several requests")

    async def _submit(self, kind: Any, chunks: list[Chunk], timeout: float) -> list[Any]:
        """Queue a request's chunks (at most ``max_batch_size`` rows each); their results."""
        if not chunks:
            raise BadRequest("field 'inputs': the batch is empty")
        assert self.batcher is not None, "ServedModel.attach() was not called"
        return await self.batcher.submit_chunks(kind, chunks, timeout)

    async def _submit_rows(self, rows: list[dict], truncate: bool, timeout: float,
                           where: str) -> tuple[list[dict], dict[str, np.ndarray]]:
        """Predictions and per-row raw outputs of ``rows``, queued in chunks."""
        step = self.max_batch_size
        parts = [(i, rows[i:i + step]) for i in range(0, len(rows), step)]
        chunks = [(RowsJob(part, truncate, where, i), len(part), max(map(row_size, part)))
                  for i, part in parts]
        results = await self._submit(("rows", truncate), chunks, timeout)
        predictions = [p for part, _ in results for p in part]
        raw = {n: np.concatenate([outputs[n] for _, outputs in results])
               for n in (results[0][1] if results else {})}
        return predictions, raw

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
        return self.runtime.as_rows(rows), f"{main.where}.data"

    def _prediction_tensors(self, predictions: list[dict]) -> dict[str, Tensor]:
        tensors = {}
        for key, datatype in self.prediction_outputs.items():
            values = [p.get(key) for p in predictions]
            if datatype == "BYTES":
                data: Any = [v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                             for v in values]
            else:
                data = np.asarray(values, dtype=DATATYPES[datatype])
            tensors[key] = Tensor(key, datatype, (len(values),), data)
        return tensors

    def _select(self, available: dict[str, Tensor],
                request: InferRequest) -> list[tuple[Tensor, bool]]:
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

    @abc.abstractmethod
    def run_batch(self, jobs: list[Job]) -> list[Any]:
        """The batcher's callback: one result — (predictions, raw outputs per row) — or
        exception per job."""

    @abc.abstractmethod
    def warm_up(self) -> None:
        """Run typical and worst-case batches once before the server reports ready."""
