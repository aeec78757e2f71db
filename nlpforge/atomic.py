"""Directories that appear whole or not at all: build in a temp dir, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from nlpforge.errors import UsageError


def check_output(output: str | os.PathLike, overwrite: bool, what: str = "output") -> Path:
    """Refuse an existing non-empty output unless ``overwrite``; check the parent is writable."""
    output = Path(output)
    if output.exists():
        if not output.is_dir():
            raise UsageError(f"{what} {output} exists and is not a directory")
        if any(output.iterdir()) and not overwrite:
            raise UsageError(f"{what} {output} already exists; pass --overwrite to replace it")
    parent = output.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {parent}: {exc.strerror or exc}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {output}: cannot write to {parent}")
    return output


@contextlib.contextmanager
def atomic_dir(output: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp dir next to ``output``; on success it replaces ``output`` in one rename."""
    output = check_output(output, overwrite)
    parent = output.absolute().parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a finished dir gets the usual mode
    try:
        yield tmp
        old = None
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=parent))
            os.rename(output, old / "dir")
        os.rename(tmp, output)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
