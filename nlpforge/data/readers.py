"""Readers that turn a data file into rows, remembering the line each row came from."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from nlpforge.errors import DataError

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}


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
                 format: str | None = None) -> Dataset:
    """Read a data file; with ``task``, check every row against it (file:line errors)."""
    text = _read_text(Path(path))
    fmt = format or FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise DataError(f"unknown file type '{Path(path).suffix}'; use .jsonl, .json, .csv or "
                        f".tsv", str(path))
    reader = {"jsonl": _jsonl, "json": _json, "csv": _csv, "tsv": _tsv}[fmt]
    data = Dataset(str(path))
    for line, row in reader(text, str(path)):
        if task is not None:
            task.check_row(row, str(path), line, training=training)
        data.rows.append(row)
        data.lines.append(line)
    if not data.rows:
        raise DataError("empty file: no rows", str(path))
    return data


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("no such file", str(path))
    except IsADirectoryError:
        raise DataError("is a directory, not a data file", str(path))
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", str(path))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"invalid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8",
                        str(path), line)


def _jsonl(text: str, path: str) -> Iterator[tuple[int, dict]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON: {exc.msg} (column {exc.colno})", path, number)
        if not isinstance(row, dict):
            raise DataError("expected a JSON object per line", path, number)
        yield number, row


def _json(text: str, path: str) -> Iterator[tuple[int, dict]]:
    """A JSON array of objects, or JSON Lines under a .json name."""
    if not text.lstrip().startswith("["):
        yield from _jsonl(text, path)
        return
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON: {exc.msg}", path, exc.lineno)
    # Find each top-level object's line by decoding item by item.
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    for item in items:
        while text[pos] in " \t\r\n,":
            pos += 1
        line = text.count("\n", 0, pos) + 1
        _, pos = decoder.raw_decode(text, pos)
        if not isinstance(item, dict):
            raise DataError("expected an array of JSON objects", path, line)
        yield line, item


def _csv(text: str, path: str, delimiter: str = ",") -> Iterator[tuple[int, dict]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise DataError(f"bad CSV: {exc}", path, 1)
    header = [name.strip() for name in header]
    if not any(header):
        raise DataError("the first line must name the columns", path, 1)
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"bad CSV: {exc}", path, start)
        if cells and any(c.strip() for c in cells):
            if len(cells) != len(header):
                raise DataError(f"{len(cells)} columns, the header has {len(header)}", path, start)
            yield start, {name: _cell(value) for name, value in zip(header, cells)}
        start = reader.line_num + 1


def _tsv(text: str, path: str) -> Iterator[tuple[int, dict]]:
    return _csv(text, path, delimiter="\t")


def _cell(value: str) -> Any:
    """A CSV cell holding a JSON list (``["a", "b"]``) becomes a list; others stay strings."""
    stripped = value.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            parsed = json.loads(stripped)
        except json.JSONDecodeError:
            return value
        if isinstance(parsed, list):
            return parsed
    return value
