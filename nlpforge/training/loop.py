"""The trainer every task shares: accumulation, mixed precision, evaluation, early stopping,
checkpoints and resume, graceful stop, and DistributedDataParallel under torchrun.

``train(config)`` trains a registered task on data files (``nlpforge train``);
``train(config, task=..., train_rows=..., validation_rows=...)`` trains a Task instance or class
on rows in memory. Both write the same run dir.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from nlpforge.errors import NlpforgeError, UsageError
from nlpforge.families import family
from nlpforge.metrics import IGNORE_INDEX
from nlpforge.runtime.batching import row_size
from nlpforge.runtime.tokenizer import FEATURES, Tokenizer
from nlpforge.training import checkpoint as ckpt
from nlpforge.training import distributed as dist
from nlpforge.training.adapters import adapt_model, merged
from nlpforge.training.batches import epoch_batches, split_by_length
from nlpforge.training.config import TrainConfig
from nlpforge.training.inputs import TaskArg, load_rows, python_config, resolve_task
from nlpforge.training.loading import load_base_model, load_base_tokenizer, quiet_transformers
from nlpforge.training.optim import linear_schedule, make_optimizer, make_scheduler
from nlpforge.training.progress import TrainLog, draw_curves
from nlpforge.training.rundir import (check_run_dir, create_run_dir, finish_run_dir,
                                      resume_config, run_manifest)
from nlpforge.training.signals import StopRequest
from nlpforge.training.state import Best, Evaluation, TrainerState
from nlpforge.training.stream import StreamedRows, stream_batches
from nlpforge.training.steps import (backward_micro_batches, evaluate_rows, model_inputs,
                                     resolve_device, seed_everything, to_torch)

# Besides train() and Trainer: what tests, tools and the CLI import from here.
__all__ = ["TrainConfig", "train", "Trainer", "Interrupted", "resume_config", "linear_schedule",
           "make_optimizer", "backward_micro_batches", "evaluate_rows", "model_inputs",
           "to_torch"]


class Interrupted(NlpforgeError):
    """Training stopped by a signal after saving a checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def train(config: TrainConfig, *, task: TaskArg | None = None,
          train_rows: Iterable[dict] | None = None,
          validation_rows: Iterable[dict] | None = None) -> dict[str, Any]:
    """Fine-tune ``config.model`` and write the run dir ``config.output``; returns a summary
    (``output``, ``best`` evaluation, ``steps``, ``epochs``, ``stopped_early``,
    ``train_seconds``).

    The task is ``config.task`` (a registered id) or ``task``: a Task instance, or a Task
    class built with ``config.labels`` and ``config.task_options``; it need not be registered.
    The rows are read from ``config.train``/``config.validation`` or given as ``train_rows``/
    ``validation_rows`` (lists of dicts, checked against the task like a file's rows). To
    resume such a run, call ``train`` again with ``config.resume`` set and the same task and
    rows. Raises NlpforgeError subclasses for anything the caller can fix.
    """
    if task is None and train_rows is None and validation_rows is None:
        config.check()
    else:
        config = python_config(config, task, train_rows, validation_rows)
    d, device = dist.init_distributed(resolve_device(config.device))
    try:
        return Trainer(config, d, device, task=task, train_rows=train_rows,
                       validation_rows=validation_rows).run()
    finally:
        dist.shutdown()


class Trainer:
    """One training run: a task, its rows and a base model in, a run dir out.

    ``run()`` does it all, once: ``prepare()`` (check the output, load the rows, tokenizer and
    model, create the run dir), then epochs of optimizer steps (``_train_epoch``) each closed
    by ``_end_epoch`` (evaluation, best model, early stopping, checkpoint), then the final
    save. Under torchrun every process runs one; only rank 0 writes. ``train()`` builds it;
    ``task``, ``train_rows`` and ``validation_rows`` are ``train()``'s.
    """

    def __init__(self, config: TrainConfig, d: dist.Dist, device: torch.device, *,
                 task: TaskArg | None = None, train_rows: Iterable[dict] | None = None,
                 validation_rows: Iterable[dict] | None = None):
        #: The run's settings, as checked by ``train()``.
        self.config = config
        #: This process's place under torchrun (rank 0 of 1 without it).
        self.dist = d
        #: Where the model trains.
        self.device = device
        #: The run dir.
        self.output = Path(config.output)
        #: The task (fitted on the training rows by ``prepare()``) and the plugin the manifest
        #: records for it (a local stand-in for a task class no plugin registers).
        self.task, self.plugin = resolve_task(config, task)
        #: The metric that picks the best model, and whether greater is better.
        self.metric: str = config.metric or self.task.primary_metric
        better = config.greater_is_better
        self.greater: bool = self.task.greater_is_better if better is None else better
        self._given_rows = (train_rows, validation_rows)
        if config.precision == "fp16" and device.type != "cuda":
            raise UsageError("--precision fp16 needs a CUDA GPU; use bf16 on the CPU")

        # Set up by prepare():
        #: Training rows, checked against the task; validation rows, or None without them.
        self.train_rows: list[dict] = []
        self.val_rows: list[dict] | None = None
        #: Each training row's size (for batches of similar length).
        self.lengths: list[int] = []
        #: The tokenizer training encodes with (the base model's, saved into the run dir), its
        #: maximum length in tokens and its padding id; ``_tokenizer_dir`` holds its files.
        self.tokenizer: Tokenizer | None = None
        self.max_length: int = 0
        self.pad_id: int = 0
        self._tokenizer_dir: tempfile.TemporaryDirectory | None = None
        #: The model as saved; ``train_model`` is what the steps run (it, or its DDP wrapper).
        self.model: Any = None
        self.train_model: Any = None
        #: The tokenizer features the model's forward takes.
        self.inputs: list[str] = []
        #: AdamW, the learning-rate schedule, and the fp16 gradient scaler (else None).
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.scaler: Any = None
        #: Optimizer steps of the whole run (``--max-steps``, else from ``--epochs``).
        self.total: int = 0
        #: Where the run is; saved with every checkpoint, restored by ``--resume``.
        self.state = TrainerState()

    # -- setup --------------------------------------------------------------------------------

    def _create_output(self) -> None:
        """Once data, tokenizer and model have loaded: the run dir with its settings."""
        if self.dist.main and not self.config.resume:
            create_run_dir(self.config, self.output, Path(self._tokenizer_dir.name))
        dist.barrier(self.dist)

    def _load_data(self) -> None:
        """The rows (given in Python, else read from the data files); the task fitted on them."""
        c = self.config
        given_train, given_validation = self._given_rows
        if c.stream:
            self.train_rows = StreamedRows(c.train, self.task)  # type: ignore[assignment]
        else:
            self.train_rows = load_rows(given_train, c.train, self.task, "train_rows") or []
        self.task.fit(self.train_rows)
        self.val_rows = load_rows(given_validation, c.validation, self.task, "validation_rows")

    def _load_tokenizer(self) -> None:
        """The base model's tokenizer (the run dir's, on resume), saved to a temp dir."""
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
        """The model (adapted: LoRA, frozen base…), its optimizer, schedule and step count."""
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
        if c.stream:
            self.total = c.max_steps  # type: ignore[assignment]  # config.check requires it
        else:
            self.lengths = [row_size(row) for row in self.train_rows]
            per_epoch = math.ceil(len(list(self._global_batches(torch.Generator().manual_seed(0))))
                                  / c.gradient_accumulation_steps)
            self.total = c.max_steps or max(1, math.ceil(c.epochs * per_epoch))
        warmup = c.warmup_steps if c.warmup_steps is not None else int(c.warmup_ratio * self.total)
        self.scheduler = make_scheduler(c.scheduler, self.optimizer, warmup, self.total)
        self.scaler = torch.amp.GradScaler("cuda") if c.precision == "fp16" else None

    def _global_batches(self, generator: torch.Generator) -> Iterator[list[dict]]:
        """This epoch's global batches of rows (``batch_size`` rows per process); with
        ``--stream`` drawn from the file as it is read."""
        size = self.config.batch_size * self.dist.world
        if self.config.stream:
            batches: Iterable[list[dict]] = stream_batches(
                self.train_rows, size, generator,  # type: ignore[arg-type]
                self.config.group_by_length, row_size)
        else:
            batches = ([self.train_rows[i] for i in b] for b in epoch_batches(
                self.lengths, size, generator, self.config.group_by_length))
        return (b for b in batches if len(b) >= self.dist.world)

    # -- one optimizer step -------------------------------------------------------------------

    def _autocast(self) -> Any:
        precision = self.config.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _step(self, group: list[list[dict]], log: TrainLog) -> float:
        """One optimizer step over ``group`` (global batches, accumulated); returns the
        step's mean loss over every process."""
        micro = []
        local_units = 0
        for batch in group:
            rows = dist.shard(self.dist, batch)
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
        """Evaluate on the validation rows (if any): history, best model, early stopping."""
        if not self.val_rows:
            return
        _, metrics = evaluate_rows(self.task, self.model, self.tokenizer, self.val_rows,
                                   self.inputs, self.config.eval_batch_size, self.dist)
        if self.metric not in metrics:
            raise UsageError(f"--metric {self.metric}: the task reports "
                             f"{', '.join(k for k in metrics if not isinstance(metrics[k], dict))}")
        s = self.state
        record: Evaluation = {"step": s.step, "epoch": s.epoch, "metrics": metrics}
        s.history.append(record)
        if self.dist.main:
            log.evaluation(s.step, s.epoch, metrics, self.metric)
        score = float(metrics[self.metric])
        delta = self.config.early_stopping_min_delta
        improved = s.best is None or (score > s.best["score"] + delta if self.greater
                                      else score < s.best["score"] - delta)
        if improved:
            s.best = Best(**record, score=score)
            s.bad_evals = 0
            if self.dist.main:
                ckpt.save_best(self.output, self.model, s.best)
        else:
            s.bad_evals += 1
        patience = self.config.early_stopping_patience
        if patience and s.bad_evals >= patience:
            s.stop_early = True

    def _checkpoint(self, generator_state: torch.Tensor) -> None:
        """Save ``checkpoints/step-N``; ``generator_state`` redraws the epoch's data order."""
        if self.dist.main:
            ckpt.save_checkpoint(self.output, self.model, self.optimizer, self.scheduler,
                                 self.scaler, self.state, generator_state,
                                 self.config.save_total_limit)
        dist.barrier(self.dist)

    def _restore(self, generator: torch.Generator) -> torch.Tensor | None:
        """Load the newest checkpoint; returns its data-order generator state (None when
        there is no checkpoint)."""
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
        check_run_dir(self.config, self.output)
        self._load_data()
        self._load_tokenizer()
        self._build_model()
        self._create_output()

    def run(self) -> dict[str, Any]:
        """Train and write the run dir; returns ``train()``'s summary."""
        c = self.config
        self.prepare()
        generator = torch.Generator().manual_seed(c.seed)
        epoch_start = self._restore(generator) if c.resume else None
        if c.resume and epoch_start is None:
            raise UsageError(f"--resume: {self.output} has no checkpoint yet; start it again "
                             f"with --overwrite")
        start = time.perf_counter()
        log = TrainLog(self.output if self.dist.main else None, c.tensorboard, self.total,
                       self.state.step, c.progress and self.dist.main)
        self.train_model.train()
        try:
            with StopRequest() as stop:
                self._train(generator, epoch_start, log, stop)
        finally:
            log.close()
        seconds = time.perf_counter() - start
        if self.dist.main:
            self._save_final(seconds)
        dist.barrier(self.dist)
        s = self.state
        return {"output": str(self.output), "best": s.best, "steps": s.step,
                "epochs": s.epoch - 1, "stopped_early": s.stop_early,
                "train_seconds": round(seconds, 3)}

    def _train(self, generator: torch.Generator, epoch_start: torch.Tensor | None,
               log: TrainLog, stop: StopRequest) -> None:
        """Epochs until the step budget is spent or early stopping ends training.
        ``epoch_start``: the data-order generator state of a resumed epoch."""
        s = self.state
        while s.step < self.total and not s.stop_early:
            if epoch_start is None:
                epoch_start = generator.get_state()
            else:
                generator.set_state(epoch_start)  # a resumed epoch: the same data order
            batches = self._global_batches(generator)
            if not self._train_epoch(batches, epoch_start, log, stop):
                # training ends inside the epoch, which counts as an epoch's end
                if self.config.eval_strategy == "epoch" and not s.stop_early:
                    self._evaluate(log)
                return
            self._end_epoch(generator, log, stop)
            epoch_start = None

    def _train_epoch(self, batches: Iterator[list[dict]], epoch_start: torch.Tensor,
                     log: TrainLog, stop: StopRequest) -> bool:
        """The epoch's optimizer steps from ``state.batch_index`` on, with the evaluations
        and checkpoints that fall on a step (``--eval-steps``, ``--save-steps``) inside it.

        Returns True when the epoch's last batch is trained, False when training ends before
        (the step budget spent, early stopping). A stop request is checkpointed
        (``epoch_start`` redraws this epoch's data order) and raised as ``Interrupted``.
        """
        c, s = self.config, self.state
        accum = c.gradient_accumulation_steps
        for _ in itertools.islice(batches, s.batch_index):  # trained before a resume
            pass
        upcoming = list(itertools.islice(batches, accum))
        while upcoming:
            group = upcoming
            s.advance(self._step(group, log), len(group))
            upcoming = list(itertools.islice(batches, accum))
            if self.dist.main:
                log.step(s.step, s.epoch, s.loss, self.scheduler.get_last_lr()[0],
                         s.step % c.logging_steps == 0)
            if c.eval_strategy == "steps" and s.step % c.eval_steps == 0:
                self._evaluate(log)
            if not upcoming:
                return True  # its checkpoint is _end_epoch's
            if c.save_steps and s.step % c.save_steps == 0:
                self._checkpoint(epoch_start)
            if dist.all_any(self.dist, stop.requested):
                self._checkpoint(epoch_start)
                raise self._interrupted(stop.signal or signal.SIGTERM)
            if s.step >= self.total or s.stop_early:
                return False
        return True

    def _end_epoch(self, generator: torch.Generator, log: TrainLog, stop: StopRequest) -> None:
        """After an epoch's last batch: its evaluation (``--eval-strategy epoch``), then the
        next epoch's start and its checkpoint (each epoch, or with ``--save-steps`` when the
        step count falls on one); a stop request is checkpointed and raised as
        ``Interrupted``."""
        c, s = self.config, self.state
        if c.eval_strategy == "epoch":
            self._evaluate(log)
        s.next_epoch()
        stopping = dist.all_any(self.dist, stop.requested)
        if stopping or not c.save_steps or s.step % c.save_steps == 0:
            self._checkpoint(generator.get_state())  # the next epoch's data order
        if stopping:
            raise self._interrupted(stop.signal or signal.SIGTERM)

    def _interrupted(self, signum: int) -> Interrupted:
        name = signal.Signals(signum).name
        return Interrupted(f"training stopped by {name} at step {self.state.step}; checkpoint "
                           f"saved in {self.output / ckpt.CHECKPOINTS}. Continue with: nlpforge "
                           f"train --resume --output {self.output}", signum)

    def _save_final(self, seconds: float) -> None:
        """The model (the best evaluation's weights when there was one), the final state and,
        last, the manifest that marks the run dir finished."""
        if self.state.best is not None and self.val_rows:
            ckpt.load_weights(self.output / ckpt.CHECKPOINTS / ckpt.BEST, self.model)
        model = merged(self.model).to("cpu")
        manifest = run_manifest(self.config, self.task, self.plugin,
                                {"max_length": self.max_length, "pad_id": self.pad_id},
                                self.inputs, self.state, self.dist.world)
        finish_run_dir(self.output, model, self.state, round(seconds, 3), manifest)
        draw_curves(self.output)
