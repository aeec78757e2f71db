"""What training reports: a progress bar, a JSON Lines metrics log, TensorBoard when installed."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


class TrainLog:
    """Metrics to ``RUN/metrics.jsonl`` (appended, so a resumed run continues it) and TensorBoard."""

    def __init__(self, run_dir: Path | None, tensorboard: bool, total: int, initial: int,
                 show_bar: bool):
        from tqdm.auto import tqdm

        self.file = open(run_dir / "metrics.jsonl", "a", encoding="utf-8") if run_dir else None
        self.writer = None
        if run_dir and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # TensorBoard is optional
                self.writer = None
        self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", file=sys.stderr,
                        disable=not show_bar, dynamic_ncols=True)
        self._examples = self._tokens = 0
        self._since = time.perf_counter()

    def count(self, examples: int, tokens: int) -> None:
        self._examples += examples
        self._tokens += tokens

    def step(self, step: int, epoch: int, loss: float, lr: float, log: bool) -> None:
        self.bar.update(1)
        elapsed = max(time.perf_counter() - self._since, 1e-9)
        rates = {"examples_per_s": self._examples / elapsed, "tokens_per_s": self._tokens / elapsed}
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", ex_s=f"{rates['examples_per_s']:.1f}",
                             tok_s=f"{rates['tokens_per_s']:.0f}", epoch=epoch)
        if log:
            self.write({"step": step, "epoch": epoch, "loss": loss, "lr": lr,
                        **{k: round(v, 2) for k, v in rates.items()}})
            self._examples = self._tokens = 0
            self._since = time.perf_counter()

    def evaluation(self, step: int, epoch: int, metrics: dict[str, Any], name: str) -> None:
        self.bar.write(f"step {step} (epoch {epoch}): {name} = {metrics[name]:.4f}", file=sys.stderr)
        self.write({"step": step, "epoch": epoch, "eval": metrics})

    def write(self, record: dict[str, Any]) -> None:
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        if self.writer:
            step = record["step"]
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.writer.add_scalar(f"train/{key}", value, step)
            for key, value in record.get("eval", {}).items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"eval/{key}", value, step)

    def close(self) -> None:
        self.bar.close()
        if self.file:
            self.file.close()
        if self.writer:
            self.writer.close()


def draw_curves(run_dir: Path) -> None:
    """``RUN/curves.png`` when matplotlib is installed (``nlpforge[plots]``); a picture that
    cannot be drawn is a warning, never a failed run."""
    from nlpforge.report import plots

    if not plots.available():
        return
    from nlpforge.report.curves import write_curves

    try:
        write_curves(run_dir)
    except Exception as exc:  # noqa: BLE001 - the run is written; the picture is extra
        print(f"warning: {run_dir}/curves.png not drawn: {exc}", file=sys.stderr)
