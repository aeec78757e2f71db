"""GeneratorModel: a generative export (decoder-only or encoder-decoder) served by its
``Generator``, and the generated pieces handed from the model thread to the event loop.

Text predictions (``/v1/…/predict``, v2 ``infer`` with BYTES inputs) go through the dynamic
batcher and return ``generated_text``; the generate routes (``v2_generate.py``) stream
``generated_pieces``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any, AsyncIterator

from nlpforge.errors import NlpforgeError
from nlpforge.runtime.generation.generator import Generator
from nlpforge.serving.batcher import Job
from nlpforge.serving.served import ServedModel

_END = object()


async def generated_pieces(model: ServedModel, text: str,
                           parameters: dict[str, Any]) -> AsyncIterator[str]:
    """The generator's pieces, produced on the model thread and handed to the event loop."""
    assert model.batcher is not None and model.generator is not None
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def produce() -> None:
        try:
            for piece in model.generator.generate_stream(text, parameters):
                if stop.is_set() or model.batcher.aborted:  # client gone, or shutdown's deadline
                    break
                loop.call_soon_threadsafe(queue.put_nowait, piece)
        except Exception as exc:
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    running = asyncio.ensure_future(model.batcher.run_on_model_thread(produce))
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        del running  # it ends on its own once the generator sees ``stop``


class GeneratorModel(ServedModel):
    """A generative export served by its ``Generator`` (no single ONNX session to expose)."""

    def __init__(self, name: str, generator: Generator):
        super().__init__(name, generator, generator.tokenizer.max_length)
        self.generator = generator
        self.prediction_outputs = {"generated_text": "BYTES"}
        generator.generate([self.example], max_new_tokens=2)  # checks the model end to end

    @classmethod
    def load(cls, name: str, path: str | Path, device: str = "auto", threads: int | None = None,
             variant: str | None = None) -> "GeneratorModel":
        return cls(name, Generator.load(path, device=device, threads=threads, variant=variant))

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "versions": [self.version], "platform": "onnxruntime_onnx",
                "inputs": [{"name": n, "datatype": "BYTES", "shape": [-1]}
                           for n in self.text_fields],
                "outputs": [{"name": "generated_text", "datatype": "BYTES", "shape": [-1]}],
                "parameters": {"task": self.task.id, "max_tokens": self.limit,
                               "generation": json.dumps(self.generator.config.to_dict())}}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "generation": self.generator.config.to_dict()}

    def run_batch(self, jobs: list[Job]) -> list[Any]:
        """Generate for the rows of every job in one pass (the Generator batches them)."""
        rows = [row for job in jobs for row in job.payload.rows]
        try:
            predictions = self.generator.predict(rows, checked=True)
        except Exception as exc:
            if len(jobs) == 1 or not isinstance(exc, NlpforgeError):
                return [exc] * len(jobs)
            # A prompt refused only when encoded (empty, or too long for the model's
            # positions) fails its own request, not the others batched with it.
            return [self.run_batch([job])[0] for job in jobs]
        results, start = [], 0
        for job in jobs:
            results.append((predictions[start:start + job.size], {}))
            start += job.size
        return results

    def warm_up(self) -> None:
        self.generator.generate([self.example] * min(self.max_batch_size, 8), max_new_tokens=4)
