"""The trainer's state: where a run is, what its evaluations gave, whether it stops early.

It is saved with every checkpoint (``checkpoints/step-N/trainer_state.json``, every field) and
once at the end (``RUN/trainer_state.json``: every field but ``loss``, plus ``train_seconds``).
The JSON keys are the field names below, in this order.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypedDict

#: File name of the state in a checkpoint and in the finished run dir.
STATE_NAME = "trainer_state.json"


class Evaluation(TypedDict):
    """One evaluation on the validation rows."""

    #: Optimizer steps done when it ran.
    step: int
    #: The epoch it ran in, counted from 1.
    epoch: int
    #: The task's metrics (``Task.metrics``) on the validation rows.
    metrics: dict[str, Any]


class Best(Evaluation):
    """The best evaluation so far; its weights are in ``checkpoints/best/``."""

    #: The value of the metric that picks the best model (``--metric``).
    score: float


@dataclass
class TrainerState:
    """Where a run is: enough, with the torch states of a checkpoint, to continue it exactly."""

    #: Optimizer steps done.
    step: int = 0
    #: The current epoch, counted from 1; after an epoch's last batch it is the next one.
    epoch: int = 1
    #: Global batches of the current epoch already trained (the position in its data order).
    batch_index: int = 0
    #: Every evaluation so far, oldest first.
    history: list[Evaluation] = field(default_factory=list)
    #: The best evaluation by the chosen metric; None before the first evaluation.
    best: Best | None = None
    #: Evaluations in a row without an improvement (early stopping counts them).
    bad_evals: int = 0
    #: Early stopping has ended training.
    stop_early: bool = False
    #: The training loss smoothed over steps (exponential moving average); None before the
    #: first step. Not in the final ``RUN/trainer_state.json``.
    loss: float | None = None

    def advance(self, loss: float, batches: int) -> None:
        """Count one optimizer step over ``batches`` global batches with mean loss ``loss``."""
        self.step += 1
        self.batch_index += batches
        self.loss = loss if self.loss is None else 0.9 * self.loss + 0.1 * loss

    def next_epoch(self) -> None:
        """Move to the start of the next epoch."""
        self.epoch += 1
        self.batch_index = 0

    # -- JSON -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The checkpoint form: every field."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def final_json(self, train_seconds: float) -> dict[str, Any]:
        """The finished run's form: every field but ``loss``, then ``train_seconds``."""
        data = self.to_json()
        del data["loss"]
        data["train_seconds"] = train_seconds
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TrainerState":
        """The state in either form; keys it does not know (``train_seconds``) are left out,
        absent ones take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def write(self, path: Path, train_seconds: float | None = None) -> None:
        """Write the checkpoint form, or with ``train_seconds`` the final form, to ``path``."""
        data = self.to_json() if train_seconds is None else self.final_json(train_seconds)
        path.write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> "TrainerState":
        """The state saved in ``path`` (either form)."""
        return cls.from_json(json.loads(path.read_text()))
