"""The run dir: refused before any work when it cannot be used, created with the run's settings
and tokenizer once everything has loaded, finished with the model, the final trainer state and,
last, the manifest (a run dir without ``nlpforge.json`` is unfinished)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from nlpforge.atomic import check_output
from nlpforge.errors import UsageError
from nlpforge.manifest import MANIFEST_NAME, new_manifest, write_manifest
from nlpforge.training.config import TrainConfig
from nlpforge.training.loading import quiet_transformers
from nlpforge.training.state import STATE_NAME, TrainerState

#: The run's resolved settings in the run dir.
CONFIG_NAME = "train_config.json"
#: Settings that may differ when a run is resumed (they do not change the weights).
MAY_CHANGE_ON_RESUME = {"eval_batch_size", "logging_steps", "save_steps", "save_total_limit",
                        "tensorboard", "validation", "early_stopping_patience"}


def resume_config(output: str) -> TrainConfig:
    """The settings an unfinished run was started with (``RUN/train_config.json``)."""
    path = Path(output) / CONFIG_NAME
    if not path.is_file():
        raise UsageError(f"--resume: {output} has no {CONFIG_NAME}; there is no run to resume")
    return TrainConfig(**json.loads(path.read_text()), resume=True)


def check_run_dir(config: TrainConfig, output: Path) -> None:
    """Refuse a bad output before any work; nothing is written yet."""
    if config.resume:
        saved = json.loads((output / CONFIG_NAME).read_text())
        for key, value in config.resolved().items():
            if key not in MAY_CHANGE_ON_RESUME and saved.get(key) != value:
                raise UsageError(f"--resume: --{key.replace('_', '-')} is {value!r} but the run "
                                 f"was started with {saved.get(key)!r}; a resumed run keeps "
                                 f"its settings")
        if (output / MANIFEST_NAME).is_file():
            raise UsageError(f"--resume: {output} is a finished run")
        return
    if output.exists() and any(output.iterdir()):
        unfinished = (output / CONFIG_NAME).is_file() and not (output / MANIFEST_NAME).is_file()
        if not config.overwrite:
            hint = " or --resume to continue it" if unfinished else ""
            raise UsageError(f"run dir {output} already exists; pass --overwrite to "
                             f"replace it{hint}")
    check_output(output, overwrite=True, what="run dir")


def create_run_dir(config: TrainConfig, output: Path, tokenizer_dir: Path) -> None:
    """A new run dir (replacing ``output``) with the tokenizer files and the settings."""
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    for item in tokenizer_dir.iterdir():
        shutil.copy2(item, output / item.name)
    (output / CONFIG_NAME).write_text(json.dumps(config.resolved(), indent=2) + "\n")


def finish_run_dir(output: Path, model: Any, state: TrainerState, train_seconds: float,
                   manifest: dict[str, Any]) -> None:
    """The model's files, the final ``trainer_state.json``, then the manifest."""
    tmp = Path(tempfile.mkdtemp(prefix=".final.tmp-", dir=output))
    try:
        with quiet_transformers():
            model.save_pretrained(tmp)
        for item in tmp.iterdir():
            os.replace(item, output / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    state.write(output / STATE_NAME, train_seconds=train_seconds)
    write_manifest(output, manifest)  # written last: it marks the run dir finished


def run_manifest(config: TrainConfig, task: Any, plugin: Any, tokenizer: dict[str, Any],
                 inputs: list[str], state: TrainerState, world: int) -> dict[str, Any]:
    """The finished run's ``nlpforge.json``: task, plugin, tokenizer settings, the best
    evaluation's metrics, the settings and steps, and where it was made."""
    best = state.best
    return new_manifest(
        "run", task, plugin, tokenizer, base_model=config.model, model_inputs=inputs,
        metrics=best["metrics"] if best else {},
        training={**config.resolved(), "steps": state.step,
                  "best_step": best["step"] if best else None},
        provenance=_provenance(config, world),
    )


def _provenance(config: TrainConfig, world: int) -> dict[str, Any]:
    import transformers

    from nlpforge.version import __version__

    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nlpforge": __version__, "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "processes": world,
        # None where the rows were given in Python
        "train_file": str(Path(config.train).absolute()) if config.train else None,
        "validation_file": str(Path(config.validation).absolute()) if config.validation else None,
    }
