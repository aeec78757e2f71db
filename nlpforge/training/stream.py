"""Training data read as it trains (``--stream``): a file larger than memory is read a buffer
at a time, each buffer shuffled, grouped by length and cut into batches, epoch after epoch.

The order depends only on the seed and the file, so a resumed run redraws its epoch and skips
the batches it trained, as an in-memory run does. Only the buffer's rows are in memory; the
task's ``fit`` gets the rows as an iterable that reads the file again on each pass.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

from nlpforge.data.sources import open_source
from nlpforge.errors import DataError
from nlpforge.training.batches import MEGABATCH, epoch_batches


class StreamedRows:
    """The checked rows of a data file, read anew on each iteration; ``len()`` counts them
    once (a pass over the file)."""

    def __init__(self, path: str, task: Any):
        self.path, self.task = path, task
        self._count: int | None = None
        self.source = open_source(path)  # a bad path or format fails here, before training

    def __iter__(self) -> Iterator[dict]:
        count = 0
        for record in open_source(self.path).records():
            if record.error is not None:
                raise record.error
            self.task.check_row(record.row, record.file, record.line, training=True)
            count += 1
            yield record.row  # type: ignore[misc]
        if count == 0:
            raise DataError("empty file: no rows", self.path)
        self._count = count

    def __len__(self) -> int:
        if self._count is None:
            self._count = self.source.total if self.source.total else sum(1 for _ in self)
        return self._count


def stream_batches(rows: StreamedRows, batch_size: int, generator: torch.Generator,
                   group_by_length: bool, row_size: Any,
                   buffer_rows: int | None = None) -> Iterator[list[dict]]:
    """One epoch's batches of rows: the file read ``buffer_rows`` rows at a time (default
    ``MEGABATCH`` batches), each buffer shuffled and — with ``group_by_length`` — sorted by
    length into batches whose order is shuffled (``epoch_batches`` on the buffer)."""
    size = buffer_rows or MEGABATCH * batch_size
    buffer: list[dict] = []
    for row in rows:
        buffer.append(row)
        if len(buffer) == size:
            yield from _batches(buffer, batch_size, generator, group_by_length, row_size)
            buffer = []
    if buffer:
        yield from _batches(buffer, batch_size, generator, group_by_length, row_size)


def _batches(buffer: list[dict], batch_size: int, generator: torch.Generator,
             group_by_length: bool, row_size: Any) -> Iterator[list[dict]]:
    lengths = [row_size(row) for row in buffer]
    for batch in epoch_batches(lengths, batch_size, generator, group_by_length):
        yield [buffer[i] for i in batch]
