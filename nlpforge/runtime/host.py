"""The machine a model runs on, as far as speed decisions go: the CPU's model name and the
instruction-set flags that change which kernels are fastest. No torch.

``nlpforge tune`` records this fingerprint with the variant it measured fastest; ``nlpforge.load``
uses that choice only on a CPU with the same fingerprint (a choice measured on an AVX-512/AMX
Xeon says nothing about an AVX2-only EPYC, where int8 and fused kernels balance differently).
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

#: Flags that decide which ONNX Runtime / PyTorch kernels run (int8 dot products, bf16, AMX).
FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
         "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "bf16", "i8mm")


@lru_cache(maxsize=1)
def cpu_fingerprint() -> dict[str, Any]:
    """``{"model": …, "flags": [...], "cpus": n, "machine": "x86_64"}`` of this machine."""
    model, flags = platform.processor() or "unknown CPU", set()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "CPU part") and model in ("unknown CPU", "",
                                                                         platform.machine()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    return {"model": model, "flags": [f for f in FLAGS if f in flags],
            "cpus": os.cpu_count() or 1, "machine": platform.machine()}


def same_cpu(recorded: dict[str, Any] | None, current: dict[str, Any] | None = None) -> bool:
    """Whether a recorded fingerprint is this machine's CPU (model, flags and core count)."""
    if not isinstance(recorded, dict):
        return False
    current = current or cpu_fingerprint()
    return all(recorded.get(k) == current.get(k) for k in ("model", "flags", "cpus", "machine"))


def describe(fingerprint: dict[str, Any]) -> str:
    flags = "/".join(fingerprint.get("flags") or []) or "no listed flags"
    return f"{fingerprint.get('model', '?')}, {fingerprint.get('cpus', '?')} CPUs, {flags}"
