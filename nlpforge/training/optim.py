"""Optimizer and learning-rate schedules."""

from __future__ import annotations

import math

import torch


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over trainable parameters; biases and normalisation weights (1-d) get no decay.

    The fused kernel where the parameters allow it (floating point, on the CPU or CUDA): the
    same update in one pass over each tensor, far cheaper on the CPU than the per-tensor loop
    (figures in docs/training.md, from tools/profile_train_step.py)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=lr, fused=fused or None)


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, warmup: int,
                   total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``warmup`` steps, then linear decay, cosine decay or constant."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        if name == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int,
                    total: int) -> torch.optim.lr_scheduler.LambdaLR:
    return make_scheduler("linear", optimizer, warmup, total)
