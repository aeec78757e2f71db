"""The trainer every task shares: accumulation, mixed precision, evaluation, early stopping,
checkpoints and resume, graceful stop, and DistributedDataParallel under torchrun."""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nlpforge.atomic import check_output
from nlpforge.data import read_dataset
from nlpforge.errors import NlpforgeError, UsageError
from nlpforge.families import family
from nlpforge.manifest import MANIFEST_NAME, new_manifest, write_manifest
from nlpforge.metrics import IGNORE_INDEX
from nlpforge.plugins import get_plugin_manager
from nlpforge.runtime.batching import predict_rows, row_size
from nlpforge.runtime.tokenizer import FEATURES, Tokenizer
from nlpforge.training import checkpoint as ckpt
from nlpforge.training import distributed as dist
from nlpforge.training.adapters import adapt_model, merged
from nlpforge.training.batches import epoch_batches, split_by_length
from nlpforge.training.config import TrainConfig
from nlpforge.training.models import (load_base_model, load_base_tokenizer, quiet_transformers,
                                      torch_runner)
from nlpforge.training.optim import linear_schedule, make_optimizer, make_scheduler
from nlpforge.training.progress import TrainLog
from nlpforge.training.signals import StopRequest

__all__ = ["TrainConfig", "train", "Interrupted", "linear_schedule", "make_optimizer"]
CONFIG_NAME = "train_config.json"
#: Settings that may differ when a run is resumed (they do not change the weights).
MAY_CHANGE_ON_RESUME = {"eval_batch_size", "logging_steps", "save_steps", "save_total_limit",
                        "tensorboard", "validation", "early_stopping_patience"}


class Interrupted(NlpforgeError):
    """Training stopped by a signal after saving a checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
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


def resume_config(output: str) -> TrainConfig:
    """The settings an unfinished run was started with (``RUN/train_config.json``)."""
    path = Path(output) / CONFIG_NAME
    if not path.is_file():
        raise UsageError(f"--resume: {output} has no {CONFIG_NAME}; there is no run to resume")
    return TrainConfig(**json.loads(path.read_text()), resume=True)


def train(config: TrainConfig) -> dict[str, Any]:
    """Fine-tune ``config.model`` on ``config.train``; write the run dir ``config.output``."""
    config.check()
    d, device = dist.init_distributed(resolve_device(config.device))
    try:
        return Trainer(config, d, device).run()
    finally:
        dist.shutdown()


class Trainer:
    def __init__(self, config: TrainConfig, d: dist.Dist, device: torch.device):
        self.config, self.dist, self.device = config, d, device
        self.output = Path(config.output)
        manager = get_plugin_manager()
        self.task = manager.get_task(config.task)(labels=config.labels, **config.task_options)
        self.plugin = manager.plugin_of(self.task.id)
        self.metric = config.metric or self.task.primary_metric
        better = config.greater_is_better
        self.greater = self.task.greater_is_better if better is None else better
        if config.precision == "fp16" and device.type != "cuda":
            raise UsageError("--precision fp16 needs a CUDA GPU; use bf16 on the CPU")

    # -- setup --------------------------------------------------------------------------------

    def _check_output(self) -> None:
        """Refuse a bad output before any work; nothing is written yet."""
        c = self.config
        if c.resume:
            saved = json.loads((self.output / CONFIG_NAME).read_text())
            for key, value in c.resolved().items():
                if key not in MAY_CHANGE_ON_RESUME and saved.get(key) != value:
                    raise UsageError(f"--resume: --{key.replace('_', '-')} is {value!r} but the run "
                                     f"was started with {saved.get(key)!r}; a resumed run keeps "
                                     f"its settings")
            if (self.output / MANIFEST_NAME).is_file():
                raise UsageError(f"--resume: {self.output} is a finished run")
            return
        if self.output.exists() and any(self.output.iterdir()):
            unfinished = (self.output / CONFIG_NAME).is_file() and \
                not (self.output / MANIFEST_NAME).is_file()
            if not c.overwrite:
                hint = " or --resume to continue it" if unfinished else ""
                raise UsageError(f"run dir {self.output} already exists; pass --overwrite to "
                                 f"replace it{hint}")
        check_output(self.output, overwrite=True, what="run dir")

    def _create_output(self) -> None:
        """Once data, tokenizer and model have loaded: the run dir with its settings."""
        if self.dist.main and not self.config.resume:
            if self.output.exists():
                shutil.rmtree(self.output)
            self.output.mkdir(parents=True)
            for item in Path(self._tokenizer_dir.name).iterdir():
                shutil.copy2(item, self.output / item.name)
            (self.output / CONFIG_NAME).write_text(
                json.dumps(self.config.resolved(), indent=2) + "\n")
        dist.barrier(self.dist)

    def _load_data(self) -> None:
        c = self.config
        self.train_rows = read_dataset(c.train, self.task).rows
        self.task.fit(self.train_rows)
        self.val_rows = read_dataset(c.validation, self.task).rows if c.validation else None

    def _load_tokenizer(self) -> None:
        c = self.config
        self._tokenizer_dir = tempfile.TemporaryDirectory(prefix="nlpforge-tokenizer-")
        if c.resume:
            hf = load_base_tokenizer(str(self.output))
        else:
            hf = load_base_tokenizer(c.model)
        with quiet_transformers():
            hf.save_pretrained(self._tokenizer_dir.name)
        self.max_length = c.max_length or min(self.task.default_max_length,
                                              hf.model_max_length or 512)
        pad = hf.pad_token_id if hf.pad_token_id is not None else (hf.eos_token_id or 0)
        self.pad_id = int(pad)
        self.tokenizer = Tokenizer.from_dir(self._tokenizer_dir.name, self.max_length,
                                            self.pad_id)

    def _build_model(self) -> None:
        c = self.config
        seed_everything(c.seed)
        model = load_base_model(self.task, c.model)
        self.inputs = model_inputs(model)
        model = adapt_model(model, c).to(self.device)
        self.model = model
        self.train_model = model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.optimizer = make_optimizer(model, c.lr, c.weight_decay)
        self.lengths = [row_size(row) for row in self.train_rows]
        per_epoch = math.ceil(len(self._global_batches(torch.Generator().manual_seed(0)))
                              / c.gradient_accumulation_steps)
        self.total = c.max_steps or max(1, math.ceil(c.epochs * per_epoch))
        warmup = c.warmup_steps if c.warmup_steps is not None else int(c.warmup_ratio * self.total)
        self.scheduler = make_scheduler(c.scheduler, self.optimizer, warmup, self.total)
        self.scaler = torch.amp.GradScaler("cuda") if c.precision == "fp16" else None

    def _global_batches(self, generator: torch.Generator) -> list[list[int]]:
        """This epoch's global batches (``batch_size`` rows per process)."""
        size = self.config.batch_size * self.dist.world
        batches = epoch_batches(self.lengths, size, generator, self.config.group_by_length)
        return [b for b in batches if len(b) >= self.dist.world]

    # -- one optimizer step -------------------------------------------------------------------

    def _autocast(self) -> Any:
        precision = self.config.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _step(self, group: list[list[int]], log: TrainLog) -> float:
        micro = []
        local_units = 0
        for batch in group:
            rows = [self.train_rows[i] for i in dist.shard(self.dist, batch)]
            for part, features in self._micro_batches(rows):
                # Token features the model does not take (token_type_ids of a model without
                # them) are dropped; targets and anything else go to compute_loss.
                tensors = to_torch({k: v for k, v in features.items()
                                    if k in self.inputs or k not in FEATURES}, device=self.device)
                units = self.task.loss_units(tensors)
                local_units += units
                mask = features.get("attention_mask")
                tokens = int(mask.sum()) if mask is not None else 0
                log.count(len(part) * self.dist.world, tokens * self.dist.world)
                micro.append((tensors, units))
        total_units = dist.all_sum(self.dist, local_units, self.device) or 1.0
        loss_sum = backward_micro_batches(self.task, self.train_model, micro, total_units,
                                          self.dist, self._autocast, self.scaler)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], self.config.max_grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return dist.all_sum(self.dist, loss_sum, self.device) / total_units

    def _micro_batches(self, rows: list[dict]) -> list[tuple[list[dict], dict]]:
        """The batch's features, or with ``split_by_length`` the features of its micro-batches
        of similar length (``split_by_length`` in batches.py). Tasks that make several
        examples of a row (question-answering windows) are not split."""
        features = self.task.training_batch(rows, self.tokenizer)
        mask = features.get("attention_mask")
        if not self.config.split_by_length or mask is None or self.task.splits_rows:
            return [(rows, features)]
        lengths = mask.sum(axis=1)
        labels = features.get("labels")
        decoder_labels = family(self.task.family).labels_are_decoder_tokens
        if decoder_labels and getattr(labels, "ndim", 0) == 2:
            lengths = lengths + (labels != IGNORE_INDEX).sum(axis=1)  # decoder tokens cost too
        parts = split_by_length(lengths.tolist())
        if len(parts) == 1:
            return [(rows, features)]
        chunks = [[rows[i] for i in part] for part in parts]
        return [(chunk, self.task.training_batch(chunk, self.tokenizer)) for chunk in chunks]

    # -- evaluation, best model, checkpoints --------------------------------------------------

    def _evaluate(self, log: TrainLog) -> None:
        if not self.val_rows:
            return
        _, metrics = evaluate_rows(self.task, self.model, self.tokenizer, self.val_rows,
                                   self.inputs, self.config.eval_batch_size, self.dist)
        if self.metric not in metrics:
            raise UsageError(f"--metric {self.metric}: the task reports "
                             f"{', '.join(k for k in metrics if not isinstance(metrics[k], dict))}")
        record = {"step": self.state["step"], "epoch": self.state["epoch"], "metrics": metrics}
        self.state["history"].append(record)
        if self.dist.main:
            log.evaluation(self.state["step"], self.state["epoch"], metrics, self.metric)
        score = float(metrics[self.metric])
        best = self.state["best"]
        delta = self.config.early_stopping_min_delta
        improved = best is None or (score > best["score"] + delta if self.greater
                                    else score < best["score"] - delta)
        if improved:
            self.state["best"] = {**record, "score": score}
            self.state["bad_evals"] = 0
            if self.dist.main:
                ckpt.save_best(self.output, self.model, self.state["best"])
        else:
            self.state["bad_evals"] += 1
        patience = self.config.early_stopping_patience
        if patience and self.state["bad_evals"] >= patience:
            self.state["stop_early"] = True

    def _checkpoint(self, generator_state: torch.Tensor) -> None:
        if self.dist.main:
            state = {**self.state, "generator_state": generator_state}
            ckpt.save_checkpoint(self.output, self.state["step"], self.model, self.optimizer,
                                 self.scheduler, self.scaler, state, self.config.save_total_limit)
        dist.barrier(self.dist)

    def _restore(self, generator: torch.Generator) -> torch.Tensor | None:
        checkpoints = ckpt.list_checkpoints(self.output)
        if not checkpoints:
            return None
        state, torch_state = ckpt.load_checkpoint(checkpoints[-1])
        ckpt.load_weights(checkpoints[-1], self.model)
        self.optimizer.load_state_dict(torch_state["optimizer"])
        self.scheduler.load_state_dict(torch_state["scheduler"])
        if self.scaler and torch_state["scaler"]:
            self.scaler.load_state_dict(torch_state["scaler"])
        ckpt.set_rng_state(torch_state["rng"])
        self.state = state
        generator.set_state(torch_state["generator"])
        return torch_state["generator"]

    # -- the run ------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Everything before the first step: check the output, read the data, load the
        tokenizer and model, create the run dir."""
        self._check_output()
        self._load_data()
        self._load_tokenizer()
        self._build_model()
        self._create_output()
        self.state: dict[str, Any] = {"step": 0, "epoch": 1, "batch_index": 0, "history": [],
                                      "best": None, "bad_evals": 0, "stop_early": False,
                                      "loss": None}

    def run(self) -> dict[str, Any]:
        c = self.config
        self.prepare()
        generator = torch.Generator().manual_seed(c.seed)
        epoch_start = self._restore(generator) if c.resume else None
        if c.resume and epoch_start is None:
            raise UsageError(f"--resume: {self.output} has no checkpoint yet; start it again "
                             f"with --overwrite")
        start = time.perf_counter()
        log = TrainLog(self.output if self.dist.main else None, c.tensorboard, self.total,
                       self.state["step"], c.progress and self.dist.main)
        self.train_model.train()
        try:
            with StopRequest() as stop:
                self._loop(generator, epoch_start, log, stop)
        finally:
            log.close()
        seconds = time.perf_counter() - start
        if self.dist.main:
            self._save_final(seconds)
        dist.barrier(self.dist)
        best = self.state["best"]
        return {"output": str(self.output), "best": best, "steps": self.state["step"],
                "epochs": self.state["epoch"] - 1, "stopped_early": self.state["stop_early"],
                "train_seconds": round(seconds, 3)}

    def _loop(self, generator: torch.Generator, epoch_start: torch.Tensor | None,
              log: TrainLog, stop: StopRequest) -> None:
        c = self.config
        s = self.state
        accum = c.gradient_accumulation_steps
        while s["step"] < self.total and not s["stop_early"]:
            if epoch_start is None:
                epoch_start = generator.get_state()
            else:
                generator.set_state(epoch_start)
            batches = self._global_batches(generator)
            while s["batch_index"] < len(batches):
                group = batches[s["batch_index"]:s["batch_index"] + accum]
                loss = self._step(group, log)
                s["step"] += 1
                s["batch_index"] += len(group)
                s["loss"] = loss if s["loss"] is None else 0.9 * s["loss"] + 0.1 * loss
                if self.dist.main:
                    log.step(s["step"], s["epoch"], s["loss"], self.scheduler.get_last_lr()[0],
                             s["step"] % c.logging_steps == 0)
                if c.eval_strategy == "steps" and s["step"] % c.eval_steps == 0:
                    self._evaluate(log)
                done = s["step"] >= self.total or s["stop_early"]
                if s["batch_index"] >= len(batches):
                    break  # the epoch's end is handled below
                if c.save_steps and s["step"] % c.save_steps == 0:
                    self._checkpoint(epoch_start)
                if dist.all_any(self.dist, stop.requested):
                    self._checkpoint(epoch_start)
                    raise self._interrupted(stop.signal or signal.SIGTERM)
                if done:
                    if c.eval_strategy == "epoch" and not s["stop_early"]:
                        self._evaluate(log)  # the end of training counts as an epoch's end
                    return
            # end of an epoch
            if c.eval_strategy == "epoch":
                self._evaluate(log)
            s["epoch"] += 1
            s["batch_index"] = 0
            epoch_start = None
            stopping = dist.all_any(self.dist, stop.requested)
            if stopping or not c.save_steps or s["step"] % c.save_steps == 0:
                self._checkpoint(generator.get_state())
            if stopping:
                raise self._interrupted(stop.signal or signal.SIGTERM)

    def _interrupted(self, signum: int) -> Interrupted:
        name = signal.Signals(signum).name
        return Interrupted(f"training stopped by {name} at step {self.state['step']}; checkpoint "
                           f"saved in {self.output / ckpt.CHECKPOINTS}. Continue with: nlpforge "
                           f"train --resume --output {self.output}", signum)

    def _save_final(self, seconds: float) -> None:
        c = self.config
        best = self.state["best"]
        if best is not None and self.val_rows:
            ckpt.load_weights(self.output / ckpt.CHECKPOINTS / ckpt.BEST, self.model)
        model = merged(self.model).to("cpu")
        tmp = Path(tempfile.mkdtemp(prefix=".final.tmp-", dir=self.output))
        try:
            with quiet_transformers():
                model.save_pretrained(tmp)
            for item in tmp.iterdir():
                os.replace(item, self.output / item.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        history = {k: v for k, v in self.state.items() if k != "loss"}
        history["train_seconds"] = round(seconds, 3)
        (self.output / "trainer_state.json").write_text(json.dumps(history, indent=2) + "\n")
        manifest = new_manifest(
            "run", self.task, self.plugin, {"max_length": self.max_length, "pad_id": self.pad_id},
            base_model=c.model, model_inputs=self.inputs,
            metrics=best["metrics"] if best else {},
            training={**c.resolved(), "steps": self.state["step"],
                      "best_step": best["step"] if best else None},
            provenance=_provenance(c, self.dist.world),
        )
        write_manifest(self.output, manifest)  # written last: it marks the run dir finished


def _provenance(config: TrainConfig, world: int) -> dict[str, Any]:
    import platform

    import transformers

    from nlpforge.version import __version__

    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nlpforge": __version__, "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "processes": world,
        "train_file": str(Path(config.train).absolute()),
        "validation_file": str(Path(config.validation).absolute()) if config.validation else None,
    }
