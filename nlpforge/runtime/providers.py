"""Choosing ONNX Runtime execution providers without noise.

onnxruntime-gpu lists the CUDA provider even where no GPU or CUDA library exists, and logs
errors when asked to use it there. nlpforge only asks for CUDA after finding a GPU.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path
from typing import Any

from nlpforge.errors import ModelDirError, UsageError

DEVICES = ("auto", "cpu", "cuda")


@functools.lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """GPUs the CUDA driver sees; 0 when there is no driver (no error is logged)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return 0
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    try:
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
    except AttributeError:
        return 0
    return count.value


@functools.lru_cache(maxsize=1)
def cuda_libraries_ok() -> bool:
    """Whether the cuBLAS and cuDNN libraries the CUDA provider needs can be loaded.

    onnxruntime-gpu asks for them only when a session starts, and logs errors when they are
    missing; checking first keeps ``device="auto"`` quiet on a GPU machine without them.
    """
    import onnxruntime as ort

    major = str(getattr(ort, "cuda_version", "") or "").split(".")[0]
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:  # finds CUDA libraries installed from pip (nvidia-* packages)
        try:
            preload(cuda=True, cudnn=True, msvc=False)
        except Exception:
            pass
    names = [f"libcublasLt.so.{major}" if major else "libcublasLt.so", "libcudnn.so.9"]
    for name in names:
        try:
            ctypes.CDLL(name)
        except OSError:
            return False
    return True


def choose_providers(device: str = "auto") -> list[Any]:
    """Providers for ``device``: CUDA then CPU where a GPU can be used, else CPU."""
    import onnxruntime as ort

    device = (device or "auto").lower()
    if device not in DEVICES and not device.startswith("cuda:"):
        raise UsageError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers() and cuda_device_count() > 0
    if not has_cuda:
        if device != "auto":
            raise UsageError(f"device {device!r} asked for, but no usable CUDA GPU was found "
                             f"(needs onnxruntime-gpu and an NVIDIA driver); use --device cpu")
        return ["CPUExecutionProvider"]
    if device == "auto" and not cuda_libraries_ok():
        return ["CPUExecutionProvider"]
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


#: ``session`` settings of a variant (``nlpforge tune``) → ONNX Runtime's graph levels.
LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def make_session(path: str, device: str = "auto", threads: int | None = None,
                 spin: bool = True, settings: dict[str, Any] | None = None) -> Any:
    """An InferenceSession on the chosen providers, quiet unless something is really wrong.

    ``spin=False``: the intra-op threads sleep as soon as a run ends instead of spinning for
    more work. For a session that runs once between many runs of another one (an encoder
    beside its decoder), spinning threads would take the cores the other session needs.
    ``settings``: a variant's measured session settings (``nlpforge tune``):
    ``graph_optimization_level`` (basic, extended, all), ``disabled_optimizers`` (ONNX
    Runtime's fusion names), ``threads`` (used when ``threads`` is not given), ``spin``."""
    import onnxruntime as ort

    settings = settings or {}
    threads = threads or settings.get("threads")
    spin = spin and settings.get("spin", True)

    providers = choose_providers(device)
    # A CUDA provider that cannot start logs errors, then falls back to the CPU; under "auto"
    # that fallback is expected, so only fatal messages are let through.
    quiet = 4 if device == "auto" else 3
    ort.set_default_logger_severity(quiet)
    options = ort.SessionOptions()
    options.log_severity_level = quiet
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, LEVELS[settings.get("graph_optimization_level", "all")])
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, sess_options=options, providers=providers,
                                   disabled_optimizers=list(settings.get("disabled_optimizers")
                                                            or []))
    if device not in ("auto", "cpu") and "CUDAExecutionProvider" not in session.get_providers():
        raise UsageError(f"device {device!r} asked for, but ONNX Runtime could not start its CUDA "
                         f"provider (check the CUDA and cuDNN libraries); use --device cpu")
    return session


def load_session(path: Path, device: str = "auto", threads: int | None = None,
                 spin: bool = True, settings: dict[str, Any] | None = None) -> Any:
    """An inference session for an export's ONNX file; ModelDirError naming the file when it
    is missing or ONNX Runtime cannot load it."""
    if not Path(path).is_file():
        raise ModelDirError(f"{Path(path).parent}: {Path(path).name} is missing")
    try:
        return make_session(str(path), device=device, threads=threads, spin=spin,
                            settings=settings)
    except Exception as exc:
        if type(exc).__module__.startswith("nlpforge"):
            raise
        raise ModelDirError(f"{path}: cannot load the ONNX model: {exc}")


def session_device(session: Any) -> tuple[str, int]:
    """Where a session runs, as IO binding names it: ("cuda", device id) or ("cpu", 0)."""
    provider = session.get_providers()[0]
    if provider == "CUDAExecutionProvider":
        options = session.get_provider_options().get(provider, {})
        return "cuda", int(options.get("device_id", 0))
    return "cpu", 0
