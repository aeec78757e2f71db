"""The figures: training curves, bar charts, confusion matrices. matplotlib (``nlpforge[plots]``)
with the Agg backend: no display needed."""

from __future__ import annotations

import io
from typing import Any, Sequence

from nlpforge.errors import UsageError

COLORS = ["#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6", "#dd4477"]


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend; a UsageError naming the extra when missing."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError("pictures need matplotlib: pip install 'nlpforge[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def png(figure: Any, dpi: int = 110) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    plt = pyplot()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return out.getvalue()


def bars(categories: Sequence[str], series: dict[str, Sequence[float]], title: str,
         ylabel: str = "", limit: float | None = 1.0) -> Any:
    """Grouped vertical bars: one group per category, one bar per series, values written on
    top."""
    plt = pyplot()
    width = max(4.5, 0.35 * len(categories) * max(1, len(series)) + 1.5)
    figure, axes = plt.subplots(figsize=(min(width, 14), 3.6))
    step = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (len(series) - 1) / 2) * step for i in range(len(categories))]
        drawn = axes.bar(xs, values, step * 0.95, label=name, color=COLORS[k % len(COLORS)])
        if len(categories) * len(series) <= 24:
            axes.bar_label(drawn, fmt="%.2f", fontsize=7, padding=1)
    axes.set_xticks(range(len(categories)), categories, rotation=30 if len(categories) > 6
                    else 0, ha="right" if len(categories) > 6 else "center")
    if limit is not None:
        axes.set_ylim(0, limit * 1.1)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    if len(series) > 1:
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    return figure


def confusion(labels: Sequence[str], matrix: Sequence[Sequence[int]], title: str) -> Any:
    """Rows: the true label, columns: the predicted one; counts written in the cells."""
    plt = pyplot()
    n = len(labels)
    size = min(2.5 + 0.45 * n, 11)
    figure, axes = plt.subplots(figsize=(size, size * 0.85))
    image = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, ha="right" if n > 4
                    else "center")
    axes.set_yticks(range(n), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    high = max((max(row) for row in matrix), default=0)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                value = matrix[i][j]
                axes.text(j, i, str(value), ha="center", va="center", fontsize=8,
                          color="white" if value > high / 2 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    return figure


def curves(train: list[dict], evals: list[dict], best_step: int | None, metric: str | None,
           title: str) -> Any:
    """Training loss against the step (left axis) and each validation metric (right axis);
    the best checkpoint's step marked."""
    plt = pyplot()
    figure, loss_axes = plt.subplots(figsize=(7.5, 4))
    if train:
        loss_axes.plot([r["step"] for r in train], [r["loss"] for r in train], color=COLORS[0],
                       label="training loss")
    eval_losses = [r for r in evals if isinstance(r["eval"].get("loss"), (int, float))]
    if eval_losses:
        loss_axes.plot([r["step"] for r in eval_losses], [r["eval"]["loss"] for r in eval_losses],
                       "o--", color=COLORS[1], label="validation loss")
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("loss")
    names = sorted({k for r in evals for k, v in r["eval"].items()
                    if isinstance(v, (int, float)) and k != "loss" and not k.startswith("eval_")})
    handles, labels = loss_axes.get_legend_handles_labels()
    if names:
        metric_axes = loss_axes.twinx()
        for k, name in enumerate(names[:6]):
            points = [(r["step"], r["eval"][name]) for r in evals if name in r["eval"]]
            line, = metric_axes.plot(*zip(*points), "s-", color=COLORS[(k + 2) % len(COLORS)],
                                     label=f"validation {name}", linewidth=1)
            handles.append(line)
            labels.append(f"validation {name}")
        metric_axes.set_ylabel("metric")
    if best_step is not None:
        loss_axes.axvline(best_step, color="grey", linestyle=":", linewidth=1)
        loss_axes.annotate(f" best ({metric})" if metric else " best", (best_step, 0.02),
                           xycoords=("data", "axes fraction"), fontsize=8, ha="right",
                           va="bottom", rotation=90, color="grey")
    loss_axes.legend(handles, labels, fontsize=8, loc="upper center", frameon=False,
                     bbox_to_anchor=(0.5, -0.14), ncol=min(len(labels), 4))
    loss_axes.set_title(title)
    return figure
