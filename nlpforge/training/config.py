"""TrainConfig: every setting of ``nlpforge train``, from flags or a YAML/TOML/JSON file.

Precedence: defaults < config file < command-line flags. The fully resolved config is saved in
the run dir (``train_config.json``) and checked before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

from nlpforge.errors import UsageError

SCHEDULERS = ("linear", "cosine", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
EVAL_STRATEGIES = ("epoch", "steps", "no")


@dataclass
class TrainConfig:
    """Everything ``nlpforge train`` needs; ``check()`` refuses bad values naming the option."""

    task: str = ""
    model: str = ""
    train: str = ""
    output: str = ""
    validation: str | None = None
    task_options: dict[str, Any] = field(default_factory=dict)
    labels: list[str] | None = None
    # length of training
    epochs: float = 3.0
    max_steps: int | None = None
    # batches
    batch_size: int = 16
    eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    max_length: int | None = None
    group_by_length: bool = True
    split_by_length: bool = False
    #: Read the training file as it trains, a buffer at a time (data larger than memory).
    stream: bool = False
    # optimizer and schedule
    lr: float = 5e-5
    weight_decay: float = 0.01
    scheduler: str = "linear"
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None
    max_grad_norm: float = 1.0
    # numerics and device
    precision: str = "fp32"
    device: str = "auto"
    seed: int = 42
    # evaluation, best model, early stopping
    eval_strategy: str = "epoch"
    eval_steps: int | None = None
    metric: str | None = None
    greater_is_better: bool | None = None
    early_stopping_patience: int | None = None
    early_stopping_min_delta: float = 0.0
    # checkpoints
    save_steps: int | None = None
    save_total_limit: int = 2
    resume: bool = False
    # memory and parameter-efficient training
    gradient_checkpointing: bool = False
    freeze_base: bool = False
    lora_r: int = 0
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None
    # logging
    logging_steps: int = 10
    tensorboard: bool = True
    progress: bool = True
    overwrite: bool = False

    def check(self, given: Collection[str] = ()) -> None:
        """Refuse invalid values before any work, naming the option. ``given`` names the
        settings among ``task``, ``train`` and ``validation`` supplied another way (a Task
        object, rows in memory: ``train(config, task=..., train_rows=...)``)."""
        for name in ("task", "model", "train", "output"):
            if not getattr(self, name) and name not in given:
                raise UsageError(f"--{name} is required")
        positive = ("epochs", "batch_size", "eval_batch_size", "lr", "gradient_accumulation_steps",
                    "logging_steps", "save_total_limit")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise UsageError(f"{_flag(name)} must be positive, got {value!r}")
        for name in ("max_steps", "eval_steps", "save_steps", "warmup_steps",
                     "early_stopping_patience"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < (0 if name == "warmup_steps" else 1)):
                raise UsageError(f"{_flag(name)} must be a whole number of at least "
                                 f"{0 if name == 'warmup_steps' else 1}, got {value!r}")
        if self.max_length is not None and self.max_length < 2:
            raise UsageError(f"--max-length must be at least 2, got {self.max_length}")
        if not 0 <= self.warmup_ratio < 1:
            raise UsageError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0 or self.max_grad_norm < 0 or self.early_stopping_min_delta < 0:
            raise UsageError("--weight-decay, --max-grad-norm and --early-stopping-min-delta "
                             "must not be negative")
        for name, allowed in (("scheduler", SCHEDULERS), ("precision", PRECISIONS),
                              ("eval_strategy", EVAL_STRATEGIES)):
            if getattr(self, name) not in allowed:
                raise UsageError(f"{_flag(name)} must be one of {', '.join(allowed)}, "
                                 f"got {getattr(self, name)!r}")
        if self.stream and not self.max_steps:
            raise UsageError("--stream reads the training data as it trains, so the number of "
                             "rows is not known in advance: give --max-steps N")
        if self.stream and "train" in given:
            raise UsageError("--stream reads a --train file; rows given in Python are in "
                             "memory already")
        if self.eval_strategy == "steps" and not self.eval_steps:
            raise UsageError("--eval-strategy steps needs --eval-steps N")
        if self.early_stopping_patience and not (self.validation or "validation" in given):
            raise UsageError("--early-stopping-patience needs --validation data")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.lora_r < 0 or (self.lora_r and not 0 <= self.lora_dropout < 1):
            raise UsageError("--lora-r must not be negative and --lora-dropout must be in [0, 1)")
        if self.lora_r and self.freeze_base:
            raise UsageError("--lora-r and --freeze-base do not go together (LoRA already "
                             "freezes the base)")

    def resolved(self) -> dict[str, Any]:
        """The config as saved in the run dir (no run-control flags)."""
        data = dataclasses.asdict(self)
        for name in ("progress", "overwrite", "resume"):
            data.pop(name)
        return data


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def read_config_file(path: str) -> dict[str, Any]:
    """A YAML, TOML or JSON file of train settings (keys as flags, with - or _)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot read: {exc.strerror or exc}")
    suffix = file.suffix.lower()
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise UsageError(f"--config {path}: use a .toml, .yaml, .yml or .json file")
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"--config {path}: cannot parse: {exc}")
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a table/mapping of settings")
    settings = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS or name in ("progress", "resume", "overwrite"):
            raise UsageError(f"--config {path}: unknown setting '{key}'")
        settings[name] = value
    return settings


def build_config(file_settings: dict[str, Any], flag_settings: dict[str, Any]) -> TrainConfig:
    """Defaults < file < flags, with types checked against the defaults."""
    merged = {**file_settings, **flag_settings}
    config = TrainConfig()
    for name, value in merged.items():
        setattr(config, name, _coerce(name, value))
    return config


def _coerce(name: str, value: Any) -> Any:
    default = getattr(TrainConfig(), name)
    kind = FIELDS[name].type
    if value is None:
        return None
    if isinstance(default, bool) or kind in ("bool", "bool | None"):
        if isinstance(value, bool):
            return value
        raise UsageError(f"{_flag(name)}: expected true or false, got {value!r}")
    if isinstance(default, float) or kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UsageError(f"{_flag(name)}: expected a number, got {value!r}")
    if isinstance(default, int) or kind in ("int", "int | None"):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UsageError(f"{_flag(name)}: expected a whole number, got {value!r}")
    if kind in ("list[str] | None",):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise UsageError(f"{_flag(name)}: expected a list of strings, got {value!r}")
    if kind == "dict[str, Any]":
        if isinstance(value, dict):
            return value
        raise UsageError(f"{_flag(name)}: expected a table of task options, got {value!r}")
    if isinstance(value, str):
        return value
    raise UsageError(f"{_flag(name)}: expected text, got {value!r}")
