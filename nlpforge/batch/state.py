"""The record of a batch run kept beside its output: which input and model it belongs to, how
far it got (rows read, the output's committed position) and whether it finished. Written
atomically after every chunk, so after any crash it describes only committed chunks."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from nlpforge.errors import UsageError

VERSION = 1


def state_path(output: str, format: str) -> Path:
    """``DST/_nlpforge_batch.json`` in a Parquet directory (readers skip ``_`` files), else
    ``DST.batch.json`` beside the file."""
    return Path(output) / "_nlpforge_batch.json" if format == "parquet" else \
        Path(f"{output}.batch.json")


def model_identity(path: str) -> dict[str, Any]:
    """The model dir and a hash of its manifest (a different model must not continue a run)."""
    manifest = Path(path) / "nlpforge.json"
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None
    return {"path": str(Path(path).resolve()), "manifest_sha256": digest}


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: the record of the earlier run cannot be read ({exc}); "
                         f"start again with --overwrite")
    if not isinstance(state, dict) or state.get("nlpforge_batch") != VERSION:
        raise UsageError(f"{path}: not a batch run record this version of nlpforge writes; "
                         f"start again with --overwrite")
    return state


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Replace the record in one rename, synced to disk."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump({"nlpforge_batch": VERSION, **state}, file, indent=1)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def mismatch(state: dict[str, Any], expected: dict[str, Any]) -> str | None:
    """Why a run recorded as ``state`` cannot continue as ``expected`` (None: it can)."""
    if state.get("input") != expected["input"]:
        was, now = state.get("input", {}), expected["input"]
        strip = [{k: v for k, v in f.items() if k != "modified_ns"} for f in now["files"]]
        if was.get("input") == now["input"] and strip == [
                {k: v for k, v in f.items() if k != "modified_ns"} for f in was.get("files", [])]:
            return f"its input {now['input']} was modified after the run began"
        return (f"it belongs to input {was.get('input')} ({_files(was)}), this run reads "
                f"{now['input']} ({_files(now)})")
    if state.get("model") != expected["model"]:
        return (f"it was written by the model {state.get('model', {}).get('path')}, this run "
                f"uses {expected['model']['path']} (or its manifest changed)")
    for key in ("shard", "format", "id_field", "on_error"):
        if state.get(key) != expected[key]:
            return f"its {key.replace('_', '-')} was {state.get(key)}, this run's is {expected[key]}"
    return None


def _files(fingerprint: dict[str, Any]) -> str:
    files = fingerprint.get("files", [])
    total = sum(f.get("bytes", 0) for f in files)
    return f"{len(files)} file(s), {total} bytes" if files else "a stream"


def remove_output(output: str, format: str) -> None:
    """Delete an earlier output and its record (``--overwrite``). A Parquet directory loses
    only what a batch run writes there; one that holds other files is refused."""
    path = Path(output)
    if format == "parquet" and path.is_dir():
        ours = [p for p in path.iterdir() if p.name.startswith(("part-", ".part-"))
                or p.name == "_nlpforge_batch.json"]
        others = [p.name for p in path.iterdir() if p not in ours]
        if others:
            raise UsageError(f"--output {output}: the directory holds files a batch run did "
                             f"not write ({', '.join(sorted(others)[:3])}); choose another "
                             f"output")
        for p in ours:
            p.unlink()
        path.rmdir()
    elif path.is_dir():
        raise UsageError(f"--output {output} is a directory; {format} output is a file")
    elif path.exists() or path.is_symlink():
        path.unlink()
    state_path(output, format).unlink(missing_ok=True)
