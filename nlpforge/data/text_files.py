"""JSON Lines, JSON, CSV and TSV read from a byte stream, remembering the line each row came
from.

Files are read as a stream of bounded lines: a data file can be as large as its rows, but
no single line can take more than ``MAX_LINE_BYTES``, and nothing but a regular file is read.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from nlpforge.errors import DataError

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}


#: The most bytes one line (one row of JSON Lines, CSV or TSV) may take; a longer line is an
#: error naming file and line, found without reading the rest of it. JSON arrays are read
#: whole. ``read_dataset(..., max_line_bytes=N)`` changes it for one file.
MAX_LINE_BYTES = 64 << 20


def iter_rows(stream: BinaryIO, fmt: str, name: str, max_line_bytes: int = MAX_LINE_BYTES
              ) -> Iterator[tuple[int, dict | DataError]]:
    """(line, row) of a JSON Lines, JSON or CSV/TSV stream; a row that cannot be read (invalid
    JSON, not an object, the wrong number of columns) comes as a DataError in its place, so a
    caller may skip it; what makes the rest unreadable (invalid UTF-8, a line too long, a
    quote that never ends) is raised."""
    if fmt == "json":
        return _json(stream, name, max_line_bytes)
    if fmt == "jsonl":
        return _jsonl(read_lines(stream, name, max_line_bytes), name)
    lines = read_lines(stream, name, max_line_bytes, keep_ends=True, skip_blank=False)
    return _csv(lines, name, "," if fmt == "csv" else "\t", max_line_bytes)


def read_lines(stream: BinaryIO, name: str, max_line_bytes: int = MAX_LINE_BYTES, *,
               keep_ends: bool = False, skip_blank: bool = True) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of a binary stream (a file, or standard input as
    ``"stdin"``), decoded as UTF-8 (a BOM first is dropped); errors name ``name:line``.

    A line over ``max_line_bytes`` is an error as soon as that many bytes are read.
    ``keep_ends`` keeps each line's ``\\n`` or ``\\r\\n``; ``skip_blank`` leaves out lines
    of whitespace only.
    """
    number = 0
    while True:
        raw = stream.readline(max_line_bytes + 1)
        if not raw:
            return
        number += 1
        body = raw[:-1] if raw.endswith(b"\n") else raw
        if len(body) > max_line_bytes:
            raise DataError(f"a line longer than {max_line_bytes} bytes, the most one row may "
                            f"take; split it into shorter rows", name, number)
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"invalid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as "
                            f"UTF-8", name, number)
        del raw, body  # a long line is held once while it is parsed
        if not keep_ends:
            text = text[:-2] if text.endswith("\r\n") else text.rstrip("\n")
        if skip_blank and not text.strip():
            continue
        yield number, text


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (links followed); a FIFO, a device,
    a socket or a directory is refused, naming what it is, without reading from it (and a
    FIFO without waiting for a writer)."""
    name = str(path)
    try:
        _check_regular(path, os.stat(path).st_mode)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise DataError("no such file", name)
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", name)
    try:
        _check_regular(path, os.fstat(fd).st_mode)  # the file it turned out to be
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_regular(path: Path, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    link = f" (a link to {os.path.realpath(path)})" if path.is_symlink() else ""
    if stat.S_ISDIR(mode):
        raise DataError(f"is a directory{link}, not a data file", str(path))
    kind = ("a character device" if stat.S_ISCHR(mode) else
            "a block device" if stat.S_ISBLK(mode) else
            "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a special file")
    raise DataError(f"is {kind}{link}, not a regular file; save the data to a file",
                    str(path))


def _jsonl(lines: Iterator[tuple[int, str]], path: str
           ) -> Iterator[tuple[int, dict | DataError]]:
    for number, line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, DataError(f"not valid JSON: {exc.msg} (column {exc.colno})", path,
                                    number)
            continue
        yield number, row if isinstance(row, dict) else \
            DataError("expected a JSON object per line", path, number)


def _json(stream: BinaryIO, path: str, max_line_bytes: int
          ) -> Iterator[tuple[int, dict | DataError]]:
    """A JSON array of objects (read whole: it is one document, lines do not bound it), or
    JSON Lines under a .json name."""
    is_array, stream = _starts_array(stream)
    if not is_array:
        yield from _jsonl(read_lines(stream, path, max_line_bytes), path)
        return
    raw = stream.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"invalid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8",
                        path, line)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON: {exc.msg}", path, exc.lineno)
    # Find each top-level object's line by decoding item by item.
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    line, counted = 1, 0
    for item in items:
        while text[pos] in " \t\r\n,":
            pos += 1
        line += text.count("\n", counted, pos)
        counted = pos
        _, pos = decoder.raw_decode(text, pos)
        yield line, item if isinstance(item, dict) else \
            DataError("expected an array of JSON objects", path, line)


def _starts_array(stream: BinaryIO) -> tuple[bool, BinaryIO]:
    """Whether the first character after a BOM and whitespace is ``[``, and a stream that
    reads from the start again (the stream need not seek: it may be decompressed)."""
    head = b""
    while True:
        chunk = stream.read(1 << 16)
        head += chunk
        stripped = head.lstrip(b" \t\r\n\xef\xbb\xbf")
        if stripped or not chunk:
            break
    return stripped[:1] == b"[", io.BufferedReader(_Replay(head, stream))  # type: ignore


class _Replay(io.RawIOBase):
    """``head`` (bytes already read from ``stream``), then the rest of ``stream``."""

    def __init__(self, head: bytes, stream: BinaryIO):
        self.head, self.stream = head, stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _csv(lines: Iterator[tuple[int, str]], path: str, delimiter: str,
         max_field: int) -> Iterator[tuple[int, dict | DataError]]:
    """Rows of CSV (or TSV), each with the line it starts on. Quotes are strict: a quoted
    field that never ends, or text after a closing quote, is an error naming the line the
    row starts on (a stray quote would otherwise swallow the rest of the file)."""
    previous = csv.field_size_limit(max_field)
    try:
        yield from _csv_rows((text for _, text in lines), path, delimiter)
    finally:
        csv.field_size_limit(previous)


def _csv_rows(lines: Iterator[str], path: str, delimiter: str
              ) -> Iterator[tuple[int, dict | DataError]]:
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise _csv_error(exc, path, 1)
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
            raise _csv_error(exc, path, start)
        if cells and any(c.strip() for c in cells):
            if len(cells) != len(header):
                yield start, DataError(f"{len(cells)} columns, the header has {len(header)}",
                                       path, start)
            else:
                yield start, {name: _cell(value) for name, value in zip(header, cells)}
        start = reader.line_num + 1


def _csv_error(exc: csv.Error, path: str, line: int) -> DataError:
    """A DataError for the row starting on ``line``, saying what to do about quotes."""
    message = str(exc)
    fix = "quote whole fields, and double the quotes inside them (\"\")"
    if "unexpected end of data" in message:
        return DataError(f"a quoted field starts in the row on this line and never ends (a "
                         f"stray '\"'?); {fix}", path, line)
    if "expected after" in message:
        return DataError(f"text after the closing quote of a field ({message}; a stray "
                         f"'\"'?); {fix}", path, line)
    if "field larger than field limit" in message:
        return DataError(f"a field longer than {csv.field_size_limit()} characters, the most "
                         f"one row may take", path, line)
    return DataError(f"bad CSV: {message}", path, line)


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
