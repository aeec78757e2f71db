"""Execution providers: CPU where there is no usable GPU, and no noise on the way."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nlpforge.errors import UsageError
from nlpforge.runtime import providers


def test_cpu_is_chosen_without_a_gpu(monkeypatch):
    monkeypatch.setattr(providers, "cuda_device_count", lambda: 0)
    assert providers.choose_providers("auto") == ["CPUExecutionProvider"]
    assert providers.choose_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(UsageError, match="no usable CUDA GPU"):
        providers.choose_providers("cuda")
    with pytest.raises(UsageError, match="unknown device"):
        providers.choose_providers("tpu")


def test_cuda_first_when_a_gpu_is_usable(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(providers, "cuda_device_count", lambda: 2)
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(providers, "cuda_libraries_ok", lambda: True)
    assert providers.choose_providers("cuda:1") == [
        ("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert providers.choose_providers("auto")[0][0] == "CUDAExecutionProvider"
    # a GPU without cuBLAS/cuDNN: "auto" stays quietly on the CPU
    monkeypatch.setattr(providers, "cuda_libraries_ok", lambda: False)
    assert providers.choose_providers("auto") == ["CPUExecutionProvider"]


def test_loading_an_export_prints_nothing(exported):
    code = (f"import nlpforge; p = nlpforge.load({str(exported)!r}, threads=1); "
            f"p.predict(['hello'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout == "" and result.stderr == ""
