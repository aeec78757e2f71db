"""Inputs of any size, read as a stream of records: JSON Lines, JSON, CSV and TSV files (also
compressed), Parquet files or directories of them, Hugging Face ``datasets`` directories
(``save_to_disk``: Arrow files, read with pyarrow, no ``datasets`` needed) and standard input.

Each record knows its position in the whole input (``index``, from 0, across files), where it
came from (file and line, or file and row for Parquet and Arrow) and holds either the row or
the DataError that made the row unreadable, so a caller can skip or record a bad row and go
on. ``fields`` renames columns to the task's field names (``{"text": "review"}`` reads the
``review`` column as ``text``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from nlpforge.data.compressed import corrupt, decode_errors, reader, split_suffix
from nlpforge.data.text_files import (FORMATS, MAX_LINE_BYTES, iter_rows, open_regular,
                                      read_lines)
from nlpforge.errors import DataError, UsageError

#: Formats ``--input-format`` accepts (``text``: one text per line, as stdin is by default).
INPUT_FORMATS = ("jsonl", "json", "csv", "tsv", "parquet", "arrow", "text")
#: Rows decoded at a time from a Parquet or Arrow file.
ARROW_BATCH = 4096


@dataclass
class Record:
    """One input row (or the error that stands for it)."""

    index: int
    file: str
    line: int
    row: dict[str, Any] | None = None
    error: DataError | None = None


class Source:
    """An input: ``records()`` streams it; ``total`` is its row count when known cheaply;
    ``fingerprint()`` identifies it (paths, sizes, modification times) for resuming."""

    name: str
    total: int | None = None
    files: list[Path]

    def records(self) -> Iterator[Record]:
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        files = []
        for path in self.files:
            info = path.stat()
            files.append({"path": str(path.resolve()), "bytes": info.st_size,
                          "modified_ns": info.st_mtime_ns})
        return {"input": self.name, "files": files}


def open_source(spec: str, format: str | None = None, fields: dict[str, str] | None = None,
                text_field: str = "text", max_line_bytes: int = MAX_LINE_BYTES) -> Source:
    """The input ``spec`` names: a file, a Parquet or ``datasets`` directory, or ``-`` for
    standard input (text lines unless ``format`` says otherwise; ``text_field`` names the
    field a text line fills). ``format`` overrides the one the name implies."""
    if format is not None and format not in INPUT_FORMATS:
        raise UsageError(f"unknown input format '{format}'; use one of "
                         f"{', '.join(INPUT_FORMATS)}")
    if spec == "-":
        return _Renamed(StreamSource(sys.stdin.buffer, "stdin", format or "text", None,
                                     text_field, max_line_bytes), fields)
    path = Path(spec)
    if path.is_dir():
        kind = format or _dir_format(path)
        source: Source = ParquetSource(path) if kind == "parquet" else ArrowSource(path)
        return _Renamed(source, fields)
    suffix, codec = split_suffix(path)
    kind = format or ("parquet" if suffix == ".parquet" else "arrow" if suffix == ".arrow"
                      else "text" if suffix == ".txt" else FORMATS.get(suffix))
    if kind is None:
        raise DataError(f"unknown file type '{''.join(path.suffixes) or path.name}'; use "
                        f".jsonl, .json, .csv, .tsv, .txt (also .gz, .zst, .bz2 or .xz "
                        f"compressed), .parquet, or a Parquet or datasets directory", spec)
    if kind == "parquet":
        return _Renamed(ParquetSource(path), fields)
    if kind == "arrow":
        return _Renamed(ArrowSource(path), fields)
    return _Renamed(FileSource(path, kind, codec, text_field, max_line_bytes), fields)


class StreamSource(Source):
    """Rows of a text stream (standard input): JSON Lines, JSON, CSV, TSV or text lines."""

    def __init__(self, stream: BinaryIO, name: str, kind: str, codec: str | None,
                 text_field: str, max_line_bytes: int):
        self.stream, self.name, self.kind, self.codec = stream, name, kind, codec
        self.text_field, self.max_line_bytes = text_field, max_line_bytes
        self.files = []

    def records(self) -> Iterator[Record]:
        yield from self._records(self.stream)

    def _records(self, stream: BinaryIO) -> Iterator[Record]:
        if self.kind in ("parquet", "arrow"):
            raise UsageError(f"{self.name}: {self.kind} is read from files and directories, "
                             f"not from a stream")
        decoded = reader(stream, self.codec, self.name)
        if self.kind == "text":
            rows: Iterator[tuple[int, Any]] = (
                (line, {self.text_field: text})
                for line, text in read_lines(decoded, self.name, self.max_line_bytes))
        else:
            rows = iter_rows(decoded, self.kind, self.name, self.max_line_bytes)
        index = 0
        line = 0
        try:
            for line, row in rows:
                if isinstance(row, DataError):
                    yield Record(index, self.name, line, error=row)
                else:
                    yield Record(index, self.name, line, row=row)
                index += 1
        except decode_errors() as exc:
            if self.codec is None:
                raise DataError(f"cannot read: {exc}", self.name, line + 1 if line else None)
            raise corrupt(self.name, exc, line + 1 if line else None)


class FileSource(StreamSource):
    """A JSON Lines, JSON, CSV, TSV or text file, plain or compressed."""

    def __init__(self, path: Path, kind: str, codec: str | None, text_field: str,
                 max_line_bytes: int):
        super().__init__(None, str(path), kind, codec, text_field,  # type: ignore[arg-type]
                         max_line_bytes)
        self.files = [path]

    def records(self) -> Iterator[Record]:
        with open_regular(self.files[0]) as stream:
            yield from self._records(stream)


class ParquetSource(Source):
    """A Parquet file, or a directory of them (read in name order, subdirectories too)."""

    def __init__(self, path: Path):
        self.name = str(path)
        pq = _pyarrow(self.name, "parquet")
        if path.is_dir():
            self.files = sorted(p for p in path.rglob("*.parquet") if p.is_file()
                                and not any(part.startswith(("_", "."))
                                            for part in p.relative_to(path).parts))
            if not self.files:
                raise DataError("a directory with no .parquet files", self.name)
        elif path.is_file():
            self.files = [path]
        else:
            raise DataError("no such file", self.name)
        self.total = 0
        for file in self.files:
            try:
                self.total += pq.ParquetFile(file).metadata.num_rows
            except Exception as exc:  # pyarrow raises several kinds for a bad file
                raise DataError(f"not a readable Parquet file ({exc})", str(file))
        self.columns: list[str] | None = None

    def records(self) -> Iterator[Record]:
        pq = _pyarrow(self.name, "parquet")
        index = 0
        for file in self.files:
            try:
                parquet = pq.ParquetFile(file)
                names = parquet.schema_arrow.names
                columns = [c for c in self.columns if c in names] if self.columns else None
                number = 0
                for batch in parquet.iter_batches(batch_size=ARROW_BATCH, columns=columns):
                    for row in batch.to_pylist():
                        number += 1
                        yield Record(index, str(file), number, row=row)
                        index += 1
            except OSError as exc:
                raise DataError(f"cannot read Parquet: {exc}", str(file))


class ArrowSource(Source):
    """A Hugging Face ``datasets`` directory written by ``save_to_disk`` (its ``state.json``
    lists Arrow stream files), or a single ``.arrow`` file."""

    def __init__(self, path: Path):
        self.name = str(path)
        _pyarrow(self.name, "datasets directories")
        if path.is_file():
            self.files = [path]
        else:
            self.files = _arrow_files(path)
        self.total = sum(_arrow_rows(f) for f in self.files)
        self.columns: list[str] | None = None

    def records(self) -> Iterator[Record]:
        index = 0
        for file in self.files:
            number = 0
            for batch in _arrow_batches(file):
                if self.columns:
                    batch = batch.select([c for c in self.columns if c in batch.schema.names])
                for row in batch.to_pylist():
                    number += 1
                    yield Record(index, str(file), number, row=row)
                    index += 1


def _dir_format(path: Path) -> str:
    if (path / "state.json").is_file():
        return "arrow"
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        raise DataError(f"a datasets DatasetDict; give one split's directory "
                        f"({', '.join(str(path / s) for s in splits)})", str(path))
    if _has_parquet(path):
        return "parquet"
    raise DataError("is a directory with no .parquet files and no datasets state.json, not a "
                    "data file", str(path))


def _has_parquet(path: Path) -> bool:
    return any(p.is_file() for p in path.rglob("*.parquet"))


def _arrow_files(path: Path) -> list[Path]:
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        files = [path / entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"not a datasets directory (state.json: {exc})", str(path))
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"the datasets directory lacks {', '.join(missing)}", str(path))
    return files


def _arrow_batches(file: Path) -> Iterator[Any]:
    import pyarrow as pa

    try:
        with pa.memory_map(str(file)) as source:
            try:
                stream = pa.ipc.open_stream(source)
            except pa.ArrowInvalid:
                source.seek(0)
                stream = pa.ipc.open_file(source)
                yield from (stream.get_batch(i) for i in range(stream.num_record_batches))
                return
            yield from stream
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"not a readable Arrow file ({exc})", str(file))


def _arrow_rows(file: Path) -> int:
    return sum(batch.num_rows for batch in _arrow_batches(file))


class _Renamed(Source):
    """A source whose rows have columns renamed to the task's field names."""

    def __init__(self, inner: Source, fields: dict[str, str] | None):
        self.inner, self.fields = inner, dict(fields or {})
        self.name, self.total, self.files = inner.name, inner.total, inner.files

    def needs(self, columns: list[str]) -> None:
        """Read only these columns (named as the task names them) where the format allows."""
        if hasattr(self.inner, "columns"):
            self.inner.columns = [self.fields.get(c, c) for c in columns]

    def records(self) -> Iterator[Record]:
        if not self.fields:
            yield from self.inner.records()
            return
        for record in self.inner.records():
            if record.row is not None:
                row = dict(record.row)
                for field, column in self.fields.items():
                    if column in row:
                        row[field] = row.pop(column)
                record.row = row
            yield record

    def fingerprint(self) -> dict[str, Any]:
        return {**self.inner.fingerprint(), "fields": self.fields}


def _pyarrow(name: str, what: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(f"{name}: {what} need the 'pyarrow' package: "
                         f"pip install 'nlpforge[batch]'")
    return pq


def parse_fields(values: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``--field text=review`` options as {task field: input column}."""
    fields: dict[str, str] = {}
    for value in values:
        name, sep, column = value.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise UsageError(f"--field {value}: expected FIELD=COLUMN, e.g. text=review")
        fields[name.strip()] = column.strip()
    return fields


__all__ = ["Record", "Source", "open_source", "parse_fields", "INPUT_FORMATS"]
