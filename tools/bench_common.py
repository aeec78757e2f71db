"""What the benchmark tools in tools/ share: the CPU line every result quotes (model name and
the instruction-set flags that decide which kernels run), whether the CPU computes in bf16,
the command that reproduces a run, and the markdown file ``--markdown FILE`` writes. Import it
from a script in tools/ (``from bench_common import ...``); it is not part of the nlpforge
package. Where the datasets are comes from ``evidence.DATASETS`` (``NLPFORGE_DATASETS``)."""

from __future__ import annotations

import datetime
import os
import shlex
import subprocess
import sys
from pathlib import Path

from evidence import DATASETS, ROOT

__all__ = ["CPU_FLAGS", "DATASETS", "ROOT", "command_line", "cpu_flags", "cpu_line",
           "has_bf16", "write_markdown"]

#: The flags a benchmark reports: which vector, int8 and bf16 kernels this CPU can run.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_flags() -> set[str]:
    """The flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def has_bf16() -> bool:
    """Whether the CPU has bf16 instructions (without them, bf16 compute is emulated and
    many times slower than fp32)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cpu_line() -> str:
    """``MODEL, N CPUs; has: FLAGS; lacks: FLAGS`` for the flags in ``CPU_FLAGS``."""
    name = next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines()
                 if line.startswith("model name")), "unknown CPU")
    flags = cpu_flags()
    has = [f for f in CPU_FLAGS if f in flags]
    lacks = [f for f in CPU_FLAGS if f not in flags]
    return (f"{name}, {os.cpu_count()} CPUs; has: {' '.join(has) or 'none of them'}"
            + (f"; lacks: {' '.join(lacks)}" if lacks else ""))


def command_line() -> str:
    """The command that ran this script, as one would type it from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def _revision() -> str:
    try:
        result = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() or "unknown"


def write_markdown(path: str | Path, title: str, body: str, command: str | None = None,
                   cpu: str | None = None) -> None:
    """Write a results page: the title, the command that reproduces it, the CPU line, the
    date and commit, then ``body`` (the tables)."""
    head = [f"# {title}", "",
            f"Reproduce: `{command or command_line()}`  ",
            f"CPU: {cpu or cpu_line()}  ",
            f"Measured {datetime.date.today().isoformat()} at commit {_revision()}.", ""]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(head) + "\n" + body.rstrip("\n") + "\n", encoding="utf-8")
    print(f"wrote {path}")
