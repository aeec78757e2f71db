"""The pieces of an optimizer step and of an evaluation, shared by the trainer and the tools:
the device, seeding, the model's inputs, tensors from arrays, accumulation over micro-batches,
and PyTorch predictions through the runtime's batching code."""

from __future__ import annotations

import contextlib
import inspect
import random
from typing import Any

import numpy as np
import torch

from nlpforge.errors import UsageError
from nlpforge.runtime.batching import predict_rows
from nlpforge.runtime.tokenizer import FEATURES, Tokenizer
from nlpforge.training import distributed as dist
from nlpforge.training.loading import torch_runner


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's random number generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """The device ``--device`` names (``auto``: CUDA when torch sees a GPU, else the CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: torch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def model_inputs(model: Any) -> list[str]:
    """The tokenizer features the model's forward accepts."""
    params = inspect.signature(model.forward).parameters
    return [name for name in FEATURES if name in params]


def to_torch(arrays: dict[str, np.ndarray], names: list[str] | None = None,
             device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """Tensors of ``arrays`` (only ``names``, when given), on ``device`` when given."""
    return {k: torch.from_numpy(v).to(device) if device else torch.from_numpy(v)
            for k, v in arrays.items() if names is None or k in names}


def evaluate_rows(task: Any, model: Any, tokenizer: Tokenizer, rows: list[dict],
                  inputs: list[str], batch_size: int,
                  d: dist.Dist | None = None) -> tuple[list[dict], dict[str, Any]]:
    """Predictions and metrics of a PyTorch model through the runtime's batching code.

    Under DDP every rank predicts its share and all ranks get the same metrics.
    """
    d = d or dist.Dist()
    was_training = model.training
    model.eval()
    mine = dist.shard(d, rows)
    predictions = predict_rows(task, tokenizer, torch_runner(task, model, inputs), mine,
                               batch_size) if mine else []
    model.train(was_training)
    predictions = dist.gather_in_order(d, predictions, len(rows))
    return predictions, task.metrics(predictions, rows)


def backward_micro_batches(task: Any, model: Any, micro: list[tuple[dict, int]],
                           total_units: float, d: dist.Dist | None = None,
                           autocast: Any = contextlib.nullcontext, scaler: Any = None) -> float:
    """Accumulate the gradient of one optimizer step over micro-batches.

    Each micro-batch's mean loss is weighted by its share of the step's loss units (examples
    or target tokens, summed over all processes), so the result is the gradient of one big
    batch, whatever the micro-batch sizes. Returns the sum of loss × units on this process.
    """
    d = d or dist.Dist()
    loss_sum = 0.0
    for i, (tensors, units) in enumerate(micro):
        last = i == len(micro) - 1
        sync = contextlib.nullcontext() if last or not d.enabled else model.no_sync()
        with sync:
            with autocast():
                loss = task.compute_loss(model, tensors)
            # DDP averages gradients over processes: scale back up by the world size
            scaled = loss.float() * (units * d.world / total_units)
            (scaler.scale(scaled) if scaler else scaled).backward()
        loss_sum += float(loss.detach()) * units
    return loss_sum
