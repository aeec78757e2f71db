"""A batch run: rows streamed from a source in chunks, predicted, written chunk by chunk.

Memory is bounded by the chunk, not the input. Each output row carries the input's id
(``id_field``, by default ``id`` when the first row has one) or its row number (``row``, from
0, in the whole input, so shards merge) and the prediction. After every chunk the output is
synced and the run's record (``batch.state``) rewritten, so ``resume`` continues after the
last committed chunk with no row missing or twice, even after ``kill -9``. ``shard=(i, n)``
takes the rows whose number is ``i`` modulo ``n``: n processes or machines split an input
without talking to each other. A bad row fails the run (naming file, line and field), is
skipped and counted, or is written as an ``error`` row (``on_error``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from nlpforge.batch.state import (mismatch, model_identity, read_state, remove_output,
                                  state_path, write_state)
from nlpforge.data.sinks import open_sink
from nlpforge.data.sources import Record, Source
from nlpforge.errors import DataError, UsageError

ON_ERROR = ("fail", "skip", "record")
#: Rows per chunk by default: the predictor sorts rows by length within blocks of this many.
CHUNK_SIZE = 8192

Predict = Callable[[list[dict]], list[dict]]
Check = Callable[[dict, str, int], None]


@dataclass
class BatchResult:
    """What a run did, in total over all its sessions (a resumed run adds to the first)."""

    output: str
    read: int = 0
    written: int = 0
    skipped: int = 0
    errors: int = 0
    seconds: float = 0.0
    resumed_at: int = 0
    complete: bool = False
    messages: list[str] = field(default_factory=list)

    def summary(self) -> str:
        rate = (self.read - self.resumed_at) / self.seconds if self.seconds else 0.0
        parts = [f"{self.written} rows in {self.output}"]
        if self.resumed_at:
            parts.append(f"resumed after row {self.resumed_at}")
        if self.skipped:
            parts.append(f"{self.skipped} bad rows skipped")
        if self.errors:
            parts.append(f"{self.errors} bad rows written as errors")
        return "; ".join(parts) + f" ({self.seconds:.1f} s, {rate:.0f} rows/s)"


@dataclass
class BatchJob:
    """``BatchJob(source, "out.parquet", "parquet", predict, check).run()``.

    ``predict`` maps checked rows to predictions (one dict each, in order); ``check`` raises
    DataError for a row that is no valid request (``check(row, file, line)``); ``model``
    names the model dir (a resumed run must use the same one)."""

    source: Source
    output: str
    format: str
    predict: Predict
    check: Check
    model: str
    chunk_size: int = CHUNK_SIZE
    shard: tuple[int, int] = (0, 1)
    on_error: str = "fail"
    id_field: str | None = None
    resume: bool = False
    overwrite: bool = False
    progress: bool = False
    #: Output rows carry the id (or row number); off: predictions only (predict's stdout).
    with_ids: bool = True
    stream: TextIO = field(default_factory=lambda: sys.stderr)

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise UsageError(f"--chunk-size must be at least 1, got {self.chunk_size}")
        index, count = self.shard
        if count < 1 or not 0 <= index < count:
            raise UsageError(f"--shard {index}/{count}: expected I/N with 0 <= I < N")
        if self.on_error not in ON_ERROR:
            raise UsageError(f"--on-error {self.on_error}: use one of {', '.join(ON_ERROR)}")
        if self.resume and self.overwrite:
            raise UsageError("--resume continues the output, --overwrite replaces it: "
                             "choose one")

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> BatchResult:
        started = time.monotonic()
        state = self._start()
        result = BatchResult(self.output, state["read"], state["written"], state["skipped"],
                             state["errors"], resumed_at=state["read"])
        if state.get("complete"):
            result.complete = True
            result.messages.append(f"{self.output} is already complete ({state['written']} "
                                   f"rows); nothing to do")
            return result
        sink = open_sink(self.output, self.format, state.get("position"))
        record_path = state_path(self.output, self.format) if sink.resumable else None
        if record_path is not None:
            state["position"] = sink.position()
            write_state(record_path, state)  # a run killed before its first chunk resumes too
        bar = _Progress(self._shard_total(), state["read"], self.progress, self.stream)
        id_key = state.get("id_key")
        try:
            for chunk in self._chunks(state["read"]):
                if id_key is None:
                    id_key = self._id_key(chunk)
                    state["id_key"] = id_key
                rows, counts = self._predict_chunk(chunk, id_key)
                sink.write(rows)
                state["read"] += len(chunk)
                state["written"] += len(rows)
                state["skipped"] += counts["skipped"]
                state["errors"] += counts["errors"]
                state["position"] = sink.position()
                if record_path is not None:
                    write_state(record_path, state)
                bar.update(len(chunk))
            sink.finish()
            state["complete"] = True
            state["position"] = sink.position()
            if record_path is not None:
                write_state(record_path, state)
        finally:
            bar.close()
            result.read, result.written = state["read"], state["written"]
            result.skipped, result.errors = state["skipped"], state["errors"]
            result.seconds = time.monotonic() - started
        result.complete = True
        return result

    def _start(self) -> dict[str, Any]:
        """The state to continue from: a fresh one, or the recorded one when resuming (after
        checking it belongs to this input, model and settings)."""
        fresh = {"input": self.source.fingerprint(), "model": model_identity(self.model),
                 "shard": list(self.shard), "format": self.format, "id_field": self.id_field,
                 "on_error": self.on_error, "chunk_size": self.chunk_size, "read": 0,
                 "written": 0, "skipped": 0, "errors": 0, "position": None,
                 "complete": False}
        if self.output == "-":
            if self.resume:
                raise UsageError("--resume needs an --output file or directory (standard "
                                 "output cannot be continued)")
            return fresh
        record = state_path(self.output, self.format)
        exists = Path(self.output).exists()
        state = read_state(record) if exists or record.exists() else None
        if self.resume and state is not None:
            why = mismatch(state, fresh)
            if why:
                raise UsageError(f"--resume: cannot continue {self.output}: {why}; start again "
                                 f"with --overwrite, or write to another --output")
            # The rows a chunk holds decide which rows share a batch, and a quantized model's
            # outputs depend on a batch's other rows: the run continues as it began.
            self.chunk_size = int(state.get("chunk_size") or self.chunk_size)
            return state
        if exists or record.exists():
            if not self.overwrite:
                hint = "--resume to continue it, " if state is not None else ""
                raise UsageError(f"--output {self.output} already exists; pass {hint}"
                                 f"--overwrite to replace it")
            remove_output(self.output, self.format)
        try:
            Path(self.output).absolute().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--output {self.output}: {exc.strerror or exc}")
        return fresh

    def _shard_total(self) -> int | None:
        total = self.source.total
        if total is None:
            return None
        index, count = self.shard
        return len(range(index, total, count))

    def _chunks(self, done: int) -> Iterator[list[Record]]:
        """This shard's records after the first ``done``, ``chunk_size`` at a time."""
        index, count = self.shard
        chunk: list[Record] = []
        seen = 0
        for record in self.source.records():
            if record.index % count != index:
                continue
            seen += 1
            if seen <= done:
                continue
            chunk.append(record)
            if len(chunk) == self.chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _id_key(self, chunk: list[Record]) -> str:
        if not self.with_ids:
            return "row"
        if self.id_field is not None:
            return self.id_field
        first = next((r.row for r in chunk if r.row is not None), None)
        return "id" if first is not None and "id" in first else "row"

    def _predict_chunk(self, chunk: list[Record], id_key: str
                       ) -> tuple[list[dict], dict[str, int]]:
        """The chunk's output rows, in input order, and how many rows were skipped or
        written as errors."""
        good: list[tuple[int, dict]] = []
        out: list[dict | None] = [None] * len(chunk)
        counts = {"skipped": 0, "errors": 0}
        for i, record in enumerate(chunk):
            error = record.error
            row = record.row
            if error is None and row is not None:
                try:
                    self.check(row, record.file, record.line)
                    if id_key != "row" and row.get(id_key) is None:
                        raise DataError(f"no '{id_key}' (the id column; --id-field names "
                                        f"another)", record.file, record.line)
                except DataError as exc:
                    error = exc
            if error is None:
                good.append((i, row))  # type: ignore[arg-type]
            elif self.on_error == "fail":
                raise error
            elif self.on_error == "skip":
                counts["skipped"] += 1
            else:
                counts["errors"] += 1
                out[i] = self._output(record, id_key, {"error": str(error)})
        if good:
            predictions = self.predict([row for _, row in good])
            for (i, _), prediction in zip(good, predictions):
                if self.on_error == "record":
                    prediction = {**prediction, "error": prediction.get("error")}
                out[i] = self._output(chunk[i], id_key, prediction)
        return [row for row in out if row is not None], counts

    def _output(self, record: Record, id_key: str, body: dict) -> dict:
        """``body`` after the record's id (its row number, or its id column; None for a row
        that could not be read), or ``body`` alone without ids."""
        if not self.with_ids:
            return body
        ident = record.index if id_key == "row" else \
            None if record.row is None else record.row.get(id_key)
        return {id_key: ident, **body}


class _Progress:
    """``12,288/1,000,000 rows  1,520 rows/s  ETA 10m50s`` on stderr, redrawn at most twice a
    second; nothing when disabled."""

    def __init__(self, total: int | None, done: int, enabled: bool, stream: TextIO):
        self.total, self.done, self.enabled, self.stream = total, done, enabled, stream
        self.start, self.first, self.shown = time.monotonic(), done, 0.0

    def update(self, rows: int) -> None:
        self.done += rows
        now = time.monotonic()
        if self.enabled and now - self.shown >= 0.5:
            self.shown = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = (self.done - self.first) / max(now - self.start, 1e-9)
        line = f"{self.done:,}" + (f"/{self.total:,}" if self.total else "") + \
            f" rows  {rate:,.0f} rows/s"
        if self.total and rate > 0:
            left = max(self.total - self.done, 0) / rate
            line += f"  ETA {int(left // 60)}m{int(left % 60):02d}s"
        self.stream.write("\r" + line + " " * 4)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.done > self.first:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
