"""The training loop: AdamW, warmup + linear decay, evaluation each epoch, best model kept."""

from __future__ import annotations

import inspect
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nlpforge.atomic import atomic_dir, check_output
from nlpforge.data import read_dataset
from nlpforge.errors import UsageError
from nlpforge.manifest import new_manifest, write_manifest
from nlpforge.plugins import get_plugin_manager
from nlpforge.runtime.tokenizer import FEATURES, Tokenizer
from nlpforge.training.models import (load_base_model, load_base_tokenizer, quiet_transformers,
                                      torch_runner)
from nlpforge.runtime.batching import predict_rows, row_size
from nlpforge.training.batches import epoch_batches


@dataclass
class TrainConfig:
    """Everything ``nlpforge train`` needs; checked before any work starts."""

    task: str
    model: str
    train: str
    output: str
    validation: str | None = None
    task_options: dict[str, Any] = field(default_factory=dict)
    labels: list[str] | None = None
    epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 16
    eval_batch_size: int = 64
    max_length: int | None = None
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 42
    group_by_length: bool = True
    device: str = "auto"
    overwrite: bool = False
    progress: bool = True

    def check(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size,
                    "eval_batch_size": self.eval_batch_size, "lr": self.lr}
        for name, value in positive.items():
            if not value > 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.max_length is not None and self.max_length < 2:
            raise UsageError(f"--max-length must be at least 2, got {self.max_length}")
        if not 0 <= self.warmup_ratio < 1:
            raise UsageError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"--device {self.device}: torch sees no CUDA GPU; use --device cpu")
        if self.weight_decay < 0:
            raise UsageError(f"--weight-decay must not be negative, got {self.weight_decay}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_inputs(model: Any) -> list[str]:
    """The tokenizer features the model's forward accepts."""
    params = inspect.signature(model.forward).parameters
    return [name for name in FEATURES if name in params]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_torch(arrays: dict[str, np.ndarray], names: list[str] | None = None,
             device: torch.device | None = None) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device) if device else torch.from_numpy(v)
            for k, v in arrays.items() if names is None or k in names}


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; biases and normalisation weights (1-d parameters) get no weight decay."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def evaluate_rows(task: Any, model: Any, tokenizer: Tokenizer, rows: list[dict],
                  inputs: list[str], batch_size: int) -> tuple[list[dict], dict[str, Any]]:
    """Predictions and metrics of a PyTorch model, through the runtime's batching code."""
    was_training = model.training
    model.eval()
    predictions = predict_rows(task, tokenizer, torch_runner(task, model, inputs), rows,
                               batch_size)
    model.train(was_training)
    return predictions, task.metrics(predictions, rows)


def train(config: TrainConfig) -> dict[str, Any]:
    """Fine-tune ``config.model`` on ``config.train``; write the run dir ``config.output``."""
    config.check()
    check_output(config.output, config.overwrite, "run dir")
    manager = get_plugin_manager()
    task = manager.get_task(config.task)(labels=config.labels, **config.task_options)
    train_data = read_dataset(config.train, task)
    task.fit(train_data.rows)
    val_data = read_dataset(config.validation, task) if config.validation else None
    seed_everything(config.seed)

    with atomic_dir(config.output, config.overwrite) as tmp:
        hf_tokenizer = load_base_tokenizer(config.model)
        max_length = config.max_length or min(task.default_max_length,
                                              hf_tokenizer.model_max_length or 512)
        hf_tokenizer.save_pretrained(tmp)
        pad_id = hf_tokenizer.pad_token_id
        if pad_id is None:
            pad_id = hf_tokenizer.eos_token_id or 0
        tokenizer = Tokenizer.from_dir(tmp, max_length=max_length, pad_id=pad_id)
        model = load_base_model(task, config.model).to(resolve_device(config.device))
        inputs = model_inputs(model)
        history = _fit(task, model, tokenizer, inputs, train_data.rows,
                       val_data.rows if val_data else None, config)
        with quiet_transformers():
            model.to("cpu").save_pretrained(tmp)
        best = history["best"]
        manifest = new_manifest(
            "run", task, manager.plugin_of(task.id),
            {"max_length": max_length, "pad_id": int(pad_id)},
            base_model=config.model,
            model_inputs=inputs,
            metrics=best["metrics"] if best else {},
            training={k: v for k, v in asdict(config).items() if k not in ("progress",)},
            provenance=_provenance(config),
        )
        write_manifest(tmp, manifest)
        (tmp / "trainer_state.json").write_text(json.dumps(history, indent=2) + "\n")
    return {"output": str(config.output), "best": best, "steps": history["steps"],
            "train_seconds": history["train_seconds"]}


def _fit(task: Any, model: torch.nn.Module, tokenizer: Tokenizer, inputs: list[str],
         rows: list[dict], val_rows: list[dict] | None, config: TrainConfig) -> dict[str, Any]:
    from tqdm.auto import tqdm

    steps_per_epoch = math.ceil(len(rows) / config.batch_size)
    lengths = [row_size(row) for row in rows]
    total = math.ceil(config.epochs * steps_per_epoch)
    if config.max_steps:  # as in Hugging Face's Trainer, --max-steps overrides --epochs
        total = config.max_steps
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, config.lr, config.weight_decay)
    scheduler = linear_schedule(optimizer, int(config.warmup_ratio * total), total)
    generator = torch.Generator().manual_seed(config.seed)
    sign = 1 if task.greater_is_better else -1
    history: dict[str, Any] = {"epochs": [], "best": None, "steps": 0}
    best_state, best_score = None, -math.inf
    model.train()
    bar = tqdm(total=total, desc="train", unit="step", file=sys.stderr,
               disable=not config.progress, dynamic_ncols=True)
    step, epoch, start, running = 0, 0, time.perf_counter(), None
    while step < total:
        epoch += 1
        for index in epoch_batches(lengths, config.batch_size, generator, config.group_by_length):
            batch = [rows[i] for i in index]
            features = to_torch(task.encode(batch, tokenizer), inputs, device)
            features.update(to_torch(task.targets(batch), device=device))
            loss = task.compute_loss(model, features)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            value = float(loss.detach())
            running = value if running is None else 0.9 * running + 0.1 * value
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}",
                            epoch=epoch)
            if step >= total:
                break
        record: dict[str, Any] = {"epoch": epoch, "step": step, "train_loss": running}
        if val_rows:
            _, metrics = evaluate_rows(task, model, tokenizer, val_rows, inputs,
                                       config.eval_batch_size)
            record["metrics"] = metrics
            score = sign * float(metrics[task.primary_metric])
            if score > best_score:
                best_score = score
                best_state = {k: v.detach().to("cpu", copy=True)
                          for k, v in model.state_dict().items()}
                history["best"] = record
            bar.write(f"epoch {epoch}: {task.primary_metric} = "
                      f"{metrics[task.primary_metric]:.4f}", file=sys.stderr)
        history["epochs"].append(record)
    bar.close()
    history["steps"] = step
    history["train_seconds"] = round(time.perf_counter() - start, 3)
    if best_state is not None:
        model.load_state_dict(best_state)
    elif history["epochs"]:
        history["best"] = {**history["epochs"][-1], "metrics": {}}
    model.eval()
    return history


def _provenance(config: TrainConfig) -> dict[str, Any]:
    import platform

    import transformers

    from nlpforge import __version__

    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nlpforge": __version__, "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "train_file": str(Path(config.train).absolute()),
        "validation_file": str(Path(config.validation).absolute()) if config.validation else None,
    }
