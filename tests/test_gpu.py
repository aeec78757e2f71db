"""The CUDA paths (``pytest -m gpu``; tools/gpu_check.sh runs them on a GPU machine): the CUDA
execution provider chosen by ``nlpforge.load(device="cuda")``, generation's IO binding giving
CPU greedy's tokens, the fp16 variant within its tolerance, and ``nlpforge train --device
cuda``. Each skips, saying which, where ONNX Runtime's CUDA provider or torch's CUDA is not
usable; one test checks, without a GPU, that the CUDA benchmark refuses to start."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from importlib.util import find_spec

import numpy as np
import pytest

from conftest import EXAMPLES, GENERATION_PROMPTS, ROOT, SEQ2SEQ_ROWS, run_cli


def ort_cuda_problem() -> str | None:
    """Why ONNX Runtime cannot run on a GPU here (None: it can)."""
    import onnxruntime as ort

    from nlpforge.runtime.providers import cuda_device_count, cuda_libraries_ok

    if shutil.which("nvidia-smi") is None or cuda_device_count() == 0:
        return "no NVIDIA GPU (nvidia-smi or the CUDA driver is missing)"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no CUDA provider (install onnxruntime-gpu)"
    if not cuda_libraries_ok():
        return "ONNX Runtime's CUDA provider cannot load cuBLAS/cuDNN"
    return None


def torch_cuda_problem() -> str | None:
    """Why torch cannot train on a GPU here (None: it can)."""
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA GPU (nvidia-smi is missing)"
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA GPU (a CPU wheel, or no driver)"
    return None


ORT_CUDA = ort_cuda_problem()
TORCH_CUDA = torch_cuda_problem()
TEXTS = ["a wonderful, moving film", "dull and far too long", "it was fine", "I loved it",
         "the worst thing I have seen this year", "not bad at all"]


@pytest.mark.gpu
@pytest.mark.skipif(ORT_CUDA is not None, reason=f"gpu: {ORT_CUDA}")
def test_load_on_cuda_runs_the_cuda_provider(exported):
    import nlpforge

    gpu = nlpforge.load(str(exported), device="cuda")
    cpu = nlpforge.load(str(exported), device="cpu")
    assert gpu.providers[0] == "CUDAExecutionProvider"
    assert cpu.providers == ["CPUExecutionProvider"]
    got, want = gpu.predict(TEXTS), cpu.predict(TEXTS)
    assert [p["label"] for p in got] == [p["label"] for p in want]
    assert np.allclose([p["score"] for p in got], [p["score"] for p in want], atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(ORT_CUDA is not None, reason=f"gpu: {ORT_CUDA}")
@pytest.mark.skipif(find_spec("optimum") is None,
                    reason="needs optimum (nlpforge[train]) to export the tiny generative models")
@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_generation_on_cuda_binds_io_and_matches_cpu_greedy(name, request):
    """On CUDA the steppers keep inputs, outputs and caches on the GPU (IO binding) and
    greedy search gives the CPU's tokens."""
    import nlpforge

    _, export, _ = request.getfixturevalue(f"{name}_export")
    gpu = nlpforge.load(str(export), device="cuda")
    cpu = nlpforge.load(str(export), device="cpu")
    assert gpu.stepper.graph.binding and gpu.stepper.graph.device_type == "cuda"
    assert not cpu.stepper.graph.binding
    prompts = GENERATION_PROMPTS if name == "gpt2" else [r["source"] for r in SEQ2SEQ_ROWS]
    config = cpu.config_for({"max_new_tokens": 12, "do_sample": False, "num_beams": 1})
    want = cpu.search(cpu.as_rows(prompts), config)
    got = gpu.search(gpu.as_rows(prompts), config)
    for row in range(len(prompts)):
        assert got.new_tokens(row).tolist() == want.new_tokens(row).tolist(), prompts[row]
    assert gpu.generate(prompts, max_new_tokens=12) == cpu.generate(prompts, max_new_tokens=12)


@pytest.mark.gpu
@pytest.mark.skipif(ORT_CUDA is not None, reason=f"gpu: {ORT_CUDA}")
def test_fp16_variant_on_cuda_is_within_its_tolerance(trained_run, tmp_path):
    import nlpforge
    from nlpforge.export.fp16 import RELATIVE_TOLERANCE

    export = tmp_path / "export"
    result = run_cli("export", str(trained_run), "--output", str(export), "--fp16")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((export / "nlpforge.json").read_text())
    assert manifest["variants"]["fp16"]["file"] == "model.fp16.onnx"
    half = nlpforge.load(str(export), device="cuda", variant="fp16")
    full = nlpforge.load(str(export), device="cpu", variant="fp32")
    assert half.variant == "fp16" and half.providers[0] == "CUDAExecutionProvider"
    features = full.task.encode(full.as_rows(TEXTS), full.tokenizer)
    got, want = half.run(features)["logits"], full.run(features)["logits"]
    assert got.dtype == np.float32  # fp16 inside, the fp32 model's inputs and outputs
    assert np.abs(got - want).max() <= RELATIVE_TOLERANCE * np.abs(want).max()


@pytest.mark.gpu
@pytest.mark.skipif(TORCH_CUDA is not None, reason=f"gpu: {TORCH_CUDA}")
def test_train_on_cuda_takes_the_cpus_first_step(tmp_path):
    """A few steps with --device cuda; the first step's loss is the CPU's (same seed, same
    batch, no dropout; float32 kernels differ only in rounding)."""
    from nlpforge.testing import make_tiny_bert

    tiny_bert = make_tiny_bert(tmp_path / "bert", dropout=0.0)
    losses = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / device
        result = run_cli("train", "--task", "text-classification", "--model", str(tiny_bert),
                         "--train", str(EXAMPLES / "train.jsonl"), "--output", str(out),
                         "--max-steps", "3", "--batch-size", "8", "--logging-steps", "1",
                         "--device", device, "--quiet", "--no-tensorboard")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["steps"] == 3
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        losses[device] = [x["loss"] for x in lines if "loss" in x]
        assert len(losses[device]) == 3 and all(math.isfinite(x) for x in losses[device])
    assert losses["cuda"][0] == pytest.approx(losses["cpu"][0], rel=1e-3)


@pytest.mark.skipif(ORT_CUDA is None and TORCH_CUDA is None,
                    reason="CUDA is usable here: the refusal cannot be checked")
def test_cuda_benchmark_refuses_without_cuda(tmp_path):
    """``bench_inference.py --device cuda`` says why it cannot run, before it writes anything."""
    out = tmp_path / "bench"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_inference.py"),
                             "--device", "cuda", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "bench_inference: --device cuda refused: " in result.stderr
    reasons = ("the CUDA driver sees no GPU", "has no CUDAExecutionProvider",
               "cannot load cuBLAS/cuDNN", "cannot use CUDA", "torch is not installed")
    assert any(reason in result.stderr for reason in reasons), result.stderr
    assert not out.exists()
