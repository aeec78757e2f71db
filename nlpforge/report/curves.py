"""``curves.png`` of a run dir: its metrics log (``metrics.jsonl``) drawn, the best checkpoint
marked. ``nlpforge train`` writes it when matplotlib is installed; ``nlpforge plot`` redraws."""

from __future__ import annotations

import json
from pathlib import Path

from nlpforge.errors import ModelDirError

CURVES = "curves.png"


def read_log(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(training records, evaluation records) of ``run_dir/metrics.jsonl``; a torn last line
    (a run killed while writing it) is left out."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise ModelDirError(f"{run_dir}: no metrics.jsonl; is it a run dir of nlpforge train?")
    train, evals = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or "step" not in record:
            continue
        if isinstance(record.get("eval"), dict):
            evals.append(record)
        elif isinstance(record.get("loss"), (int, float)):
            train.append(record)
    return train, evals


def write_curves(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Draw the run's curves to ``output`` (default ``RUN/curves.png``); returns the path."""
    from nlpforge.report import plots

    run = Path(run_dir)
    train, evals = read_log(run)
    if not train and not evals:
        raise ModelDirError(f"{run}/metrics.jsonl: no steps logged yet")
    best, metric = _best(run)
    figure = plots.curves(train, evals, best, metric, run.name)
    target = Path(output) if output else run / CURVES
    target.write_bytes(plots.png(figure))
    return target


def _best(run: Path) -> tuple[int | None, str | None]:
    """The best evaluation's step and the metric that chose it, from the run's state."""
    try:
        state = json.loads((run / "trainer_state.json").read_text(encoding="utf-8"))
        config = json.loads((run / "train_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    best = state.get("best") or {}
    return best.get("step"), config.get("metric")
