"""Checkpoints: everything needed to continue a run exactly, written atomically.

``RUN/checkpoints/step-N/`` holds the model weights (safetensors), the optimizer, scheduler and
grad-scaler states, every RNG state and the position in the data. ``RUN/checkpoints/best/``
holds the weights of the best evaluation so far.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from nlpforge.training.state import STATE_NAME, Best, TrainerState

CHECKPOINTS = "checkpoints"
BEST = "best"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # contiguous CPU copies; tied weights are saved once per name, which load_state_dict accepts
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def _atomic_write_dir(target: Path, write) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        if target.exists():
            old = target.parent / f".{target.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any,
                    scaler: Any, state: TrainerState, generator_state: torch.Tensor,
                    keep: int) -> Path:
    """Write ``checkpoints/step-N`` (N: ``state.step``) atomically and keep only the newest
    ``keep`` of them. ``generator_state`` is the data-order generator's state that redraws
    the epoch the run is in."""
    root = run_dir / CHECKPOINTS
    target = root / f"step-{state.step}"

    def write(tmp: Path) -> None:
        save_file(_weights(model), str(tmp / "model.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "rng": rng_state(), "generator": generator_state},
                   tmp / "training_state.pt")
        state.write(tmp / STATE_NAME)

    _atomic_write_dir(target, write)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def save_best(run_dir: Path, model: torch.nn.Module, record: Best) -> None:
    def write(tmp: Path) -> None:
        save_file(_weights(model), str(tmp / "model.safetensors"))
        (tmp / "best.json").write_text(json.dumps(record, indent=2) + "\n")

    _atomic_write_dir(run_dir / CHECKPOINTS / BEST, write)


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    steps = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")
             and p.name[5:].isdigit() and (p / STATE_NAME).is_file()]
    return sorted(steps, key=lambda p: int(p.name[5:]))


def load_weights(path: Path, model: torch.nn.Module) -> None:
    state = load_file(str(path / "model.safetensors"))
    model.load_state_dict(state)


def load_checkpoint(path: Path) -> tuple[TrainerState, dict[str, Any]]:
    """The trainer state (JSON) and the torch states of a checkpoint."""
    state = TrainerState.read(path / STATE_NAME)
    torch_state = torch.load(path / "training_state.pt", weights_only=False)
    return state, torch_state
