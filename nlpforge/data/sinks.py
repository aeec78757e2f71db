"""Outputs written one chunk at a time, each chunk committed whole: JSON Lines, CSV and TSV
files (also compressed, one frame per chunk), Parquet datasets (a directory of part files, as
Spark and Ray write them) and standard output.

A file output is appended to and flushed to disk per chunk; what it holds up to
``position()`` after a ``write()`` is complete rows only. A run that dies mid-chunk leaves at
most a torn tail past that position, which ``open_sink(..., resume=position)`` cuts off. A
Parquet chunk is written under a hidden name and renamed into place, so a reader of the
directory never sees half a part.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from nlpforge.data.compressed import compressor, split_suffix
from nlpforge.errors import DataError, UsageError

OUTPUT_FORMATS = ("jsonl", "csv", "tsv", "parquet")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
             ".tsv": "tsv", ".parquet": "parquet"}


class Sink:
    """Where predictions go. ``write(rows)`` commits one chunk; ``position()`` is what a
    resumed run needs to continue after the last committed chunk; ``finish()`` ends it."""

    name: str
    #: Whether a killed run can continue where this output's last chunk ended.
    resumable = True

    def write(self, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def position(self) -> dict[str, Any]:
        return {}

    def finish(self) -> None:
        pass


def output_format(spec: str, format: str | None = None) -> str:
    """The format of output ``spec``: ``format`` when given, else its suffix's (jsonl for
    standard output)."""
    if format is not None:
        if format not in OUTPUT_FORMATS:
            raise UsageError(f"unknown output format '{format}'; use one of "
                             f"{', '.join(OUTPUT_FORMATS)}")
        return format
    if spec == "-":
        return "jsonl"
    suffix, _ = split_suffix(spec)
    if suffix not in _SUFFIXES:
        raise UsageError(f"--output {spec}: unknown file type; use .jsonl, .csv, .tsv (also "
                         f".gz, .zst, .bz2 or .xz compressed) or .parquet (a directory of "
                         f"part files)")
    return _SUFFIXES[suffix]


def open_sink(spec: str, format: str, resume: dict[str, Any] | None = None,
              columns: list[str] | None = None) -> Sink:
    """The output ``spec`` in ``format``; ``resume``: the ``position()`` of the last committed
    chunk of an earlier run into it (what lies past it is cut off). ``columns`` fixes the
    columns of a CSV/TSV file (a resumed one keeps its header)."""
    if spec == "-":
        return StdoutSink()
    if format == "parquet":
        return ParquetSink(Path(spec), resume)
    _, codec = split_suffix(spec)
    return FileSink(Path(spec), format, codec, resume, columns)


class StdoutSink(Sink):
    """JSON Lines on standard output, flushed per chunk."""

    name = "stdout"
    resumable = False

    def write(self, rows: list[dict[str, Any]]) -> None:
        out = sys.stdout
        out.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        out.flush()


class FileSink(Sink):
    """A JSON Lines, CSV or TSV file, appended to one chunk (one compressed frame) at a time
    and synced to disk before ``write()`` returns."""

    def __init__(self, path: Path, format: str, codec: str | None,
                 resume: dict[str, Any] | None, columns: list[str] | None):
        self.name, self.format = str(path), format
        self.compress = compressor(codec, self.name)
        self.columns = (resume or {}).get("columns") or columns
        self.offset = int((resume or {}).get("offset", 0))
        try:
            self.file = open(path, "r+b" if resume else "wb")
            if resume:
                if os.fstat(self.file.fileno()).st_size < self.offset:
                    raise DataError(f"holds fewer bytes than the {self.offset} its last run "
                                    f"committed; it was changed since: start again with "
                                    f"--overwrite", self.name)
                self.file.truncate(self.offset)
            self.file.seek(self.offset)
        except OSError as exc:
            raise DataError(f"cannot write: {exc.strerror or exc}", self.name)

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        data = self.compress(self._encode(rows).encode("utf-8"))
        try:
            self.file.write(data)
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as exc:
            raise DataError(f"cannot write: {exc.strerror or exc}", self.name)
        self.offset += len(data)

    def _encode(self, rows: list[dict[str, Any]]) -> str:
        if self.format == "jsonl":
            return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        text = io.StringIO()
        writer = csv.writer(text, delimiter="," if self.format == "csv" else "\t",
                            lineterminator="\n")
        if self.columns is None or self.offset == 0:
            if self.columns is None:
                self.columns = list(dict.fromkeys(k for row in rows for k in row))
            writer.writerow(self.columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in self.columns])
        return text.getvalue()

    def position(self) -> dict[str, Any]:
        return {"offset": self.offset, "columns": self.columns}

    def finish(self) -> None:
        self.file.close()


def _cell(value: Any) -> Any:
    """A CSV cell: nested values (per-label scores, entity lists) as JSON, None as empty."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


class ParquetSink(Sink):
    """A Parquet dataset: ``part-000000.parquet``, ``part-000001.parquet``, … one per chunk,
    each renamed into place when whole. Nested outputs are Parquet structs and lists. Every
    part has the same schema: a column first seen empty (all null, an empty list) takes its
    type from a later chunk, and ``finish()`` rewrites the parts written before."""

    def __init__(self, path: Path, resume: dict[str, Any] | None):
        import pyarrow as pa

        self.name, self.path = str(path), path
        self.parts = int((resume or {}).get("parts", 0))
        self.schema = pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(resume["schema"]))) \
            if resume and resume.get("schema") else None
        self.stale: list[int] = list((resume or {}).get("stale", []))
        try:
            path.mkdir(parents=True, exist_ok=True)
            for extra in path.glob("part-*.parquet"):  # parts past the last commit
                if int(extra.stem.split("-")[1]) >= self.parts:
                    extra.unlink()
            for tmp in path.glob(".part-*"):
                tmp.unlink()
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot write: {exc}", self.name)

    def write(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not rows:
            return
        try:
            table = pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(f"cannot write these rows as Parquet ({exc}); a column whose "
                            f"values differ in type (ids that are numbers in some rows and "
                            f"text in others?) needs one type", self.name)
        if self.schema is None:
            self.schema = table.schema
        elif table.schema != self.schema:
            merged = pa.unify_schemas([self.schema, table.schema], promote_options="permissive")
            if merged != self.schema:
                self.stale += range(self.parts)
                self.stale = sorted(set(self.stale))
                self.schema = merged
            table = _conform(table, self.schema)
        name = f"part-{self.parts:06d}.parquet"
        tmp = self.path / f".{name}.tmp"
        try:
            pq.write_table(table, tmp)
            _sync(tmp)
            os.replace(tmp, self.path / name)
        except OSError as exc:
            raise DataError(f"cannot write: {exc.strerror or exc}", self.name)
        self.parts += 1

    def position(self) -> dict[str, Any]:
        schema = self.schema.serialize().to_pybytes().hex() if self.schema is not None else None
        return {"parts": self.parts, "schema": schema, "stale": self.stale}

    def finish(self) -> None:
        """Rewrite the parts written before a column's type was known, with the final schema."""
        import pyarrow.parquet as pq

        for number in self.stale:
            name = self.path / f"part-{number:06d}.parquet"
            table = _conform(pq.read_table(name), self.schema)
            tmp = self.path / f".{name.name}.tmp"
            pq.write_table(table, tmp)
            os.replace(tmp, name)
        self.stale = []


def _conform(table: Any, schema: Any) -> Any:
    """``table`` with ``schema``'s columns in its order, missing ones null, types cast."""
    import pyarrow as pa

    columns = []
    for field in schema:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(len(table), field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
