"""``read_dataset``: a whole data file (any input ``nlpforge.data.sources`` reads) as rows,
each with the line it starts on, checked against a task."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterator

from nlpforge.data.sources import open_source
from nlpforge.data.text_files import FORMATS, MAX_LINE_BYTES, read_lines
from nlpforge.errors import DataError

__all__ = ["Dataset", "read_dataset", "FORMATS", "MAX_LINE_BYTES", "read_lines"]


@dataclass
class Dataset:
    """Rows of one file, each with the line it starts on."""

    path: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        return iter(zip(self.lines, self.rows))


def read_dataset(path: str | os.PathLike, task: Any = None, training: bool = True,
                 format: str | None = None, *,
                 max_line_bytes: int = MAX_LINE_BYTES) -> Dataset:
    """Read a data file whole; with ``task``, check every row against it (file:line errors).

    Any input ``nlpforge.data.sources.open_source`` reads: a JSON Lines, JSON, CSV or TSV
    file (also compressed: ``.gz``, ``.zst``, ``.bz2``, ``.xz``), a Parquet file or a
    directory of them, or a Hugging Face ``datasets`` directory (``save_to_disk``). Only
    regular files are read (a FIFO or a link to a device is refused before any read); a line
    over ``max_line_bytes``, invalid UTF-8, invalid JSON and a CSV quote that never ends are
    errors naming the file and line (Parquet and Arrow: the row).
    """
    name = str(path)
    source = open_source(name, format=format, max_line_bytes=max_line_bytes)
    data = Dataset(name)
    for record in source.records():
        if record.error is not None:
            raise record.error
        if task is not None:
            task.check_row(record.row, record.file, record.line, training=training)
        data.rows.append(record.row)
        data.lines.append(record.line)
    if not data.rows:
        raise DataError("empty file: no rows", name)
    return data


