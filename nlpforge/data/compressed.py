"""Compressed data files: ``.gz``, ``.zst``, ``.bz2`` and ``.xz`` after a format's suffix
(``reviews.jsonl.zst``), read as a stream and written as one compressed frame per chunk (a
file of concatenated frames is one valid compressed file, so a chunk appended after a crash
cut the last one short only needs the torn frame cut off)."""

from __future__ import annotations

import bz2
import gzip
import lzma
from pathlib import Path
from typing import BinaryIO, Callable

from nlpforge.errors import DataError, UsageError

CODECS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2", ".xz": "xz"}


def split_suffix(path: str | Path) -> tuple[str, str | None]:
    """(format suffix, codec): ``a.jsonl.zst`` → (``.jsonl``, ``zstd``); ``a.csv`` → (``.csv``,
    None)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in CODECS:
        return (suffixes[-2] if len(suffixes) > 1 else ""), CODECS[suffixes[-1]]
    return (suffixes[-1] if suffixes else ""), None


def reader(stream: BinaryIO, codec: str | None, name: str) -> BinaryIO:
    """``stream`` decompressed as it is read (itself without a codec)."""
    if codec is None:
        return stream
    if codec == "gzip":
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    if codec == "bz2":
        return bz2.BZ2File(stream, "rb")  # type: ignore[return-value]
    if codec == "xz":
        return lzma.LZMAFile(stream, "rb")  # type: ignore[return-value]
    import io

    zstandard = _zstandard(name)
    decompressed = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
    return io.BufferedReader(decompressed)  # type: ignore[arg-type]


def compressor(codec: str | None, name: str) -> Callable[[bytes], bytes]:
    """A function that turns a chunk's bytes into one complete compressed frame."""
    if codec is None:
        return lambda data: data
    if codec == "gzip":
        return lambda data: gzip.compress(data, compresslevel=6, mtime=0)
    if codec == "bz2":
        return bz2.compress
    if codec == "xz":
        return lzma.compress
    zstd = _zstandard(name).ZstdCompressor(level=3)
    return zstd.compress


def decode_errors() -> tuple[type[BaseException], ...]:
    """What a corrupt compressed stream raises while it is read."""
    errors: list[type[BaseException]] = [OSError, EOFError, lzma.LZMAError]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


def _zstandard(name: str):
    try:
        import zstandard
    except ImportError:
        raise UsageError(f"{name}: zstd files need the 'zstandard' package: "
                         f"pip install 'nlpforge[batch]'")
    return zstandard


def corrupt(name: str, exc: BaseException, line: int | None = None) -> DataError:
    return DataError(f"the compressed data is corrupt or cut short ({exc})", name, line)
