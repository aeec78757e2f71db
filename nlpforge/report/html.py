"""``report.html``: one self-contained page (figures inlined as PNG data, no scripts, nothing
fetched) with the metrics and the task's sections, for one model or two side by side."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any, Sequence

from nlpforge.report.section import ReportSection

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.side { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 1em; }
img { max-width: 100%; height: auto; } .note { color: #555; } .meta { color: #555; }
"""


def write_report(directory: str | Path, title: str, meta: dict[str, Any],
                 models: dict[str, dict[str, Any]],
                 sections: dict[str, list[ReportSection]]) -> Path:
    """``directory/report.html`` for ``models`` (name → metrics) and their ``sections`` (name →
    the task's sections); two models are shown side by side."""
    from nlpforge.report import plots

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    names = list(models)
    parts = [f"<h1>{_e(title)}</h1>", _meta(meta), "<h2>Metrics</h2>", _metrics(models)]
    titles = list(dict.fromkeys(s.title for n in names for s in sections.get(n, [])))
    for heading in titles:
        parts.append(f"<h2>{_e(heading)}</h2>")
        columns = []
        for name in names:
            found = [s for s in sections.get(name, []) if s.title == heading]
            body = _section(found[0], plots) if found else "<p class=note>not reported</p>"
            label = f"<h3>{_e(name)}</h3>" if len(names) > 1 else ""
            columns.append(f"<div>{label}{body}</div>")
        parts.append(f"<div class=side>{''.join(columns)}</div>" if len(names) > 1
                     else columns[0])
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
            f"{''.join(parts)}</body></html>")
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps({**meta, "metrics": models}, indent=2) + "\n",
                                      encoding="utf-8")
    return path


def _section(section: ReportSection, plots: Any) -> str:
    body = [f"<p class=note>{_e(section.note)}</p>"] if section.note else []
    if section.draw is not None:
        data = base64.b64encode(plots.png(section.draw(plots))).decode("ascii")
        body.append(f"<img alt='{_e(section.title)}' src='data:image/png;base64,{data}'>")
    if section.table:
        body.append(_table(section.table))
    return "".join(body)


def _meta(meta: dict[str, Any]) -> str:
    items = "".join(f"<li><b>{_e(k)}</b>: {_e(str(v))}</li>" for k, v in meta.items())
    return f"<ul class=meta>{items}</ul>"


def _metrics(models: dict[str, dict[str, Any]]) -> str:
    """Scalar metrics, one column per model."""
    names = list(dict.fromkeys(k for m in models.values() for k, v in m.items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool)))
    rows = [{"metric": n, **{model: m.get(n) for model, m in models.items()}} for n in names]
    return _table(rows)


def _table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{_e(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(_cell(r.get(k)) for k in keys) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"<td class=num>{value:.4g}</td>"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"<td class=num>{value}</td>"
    return f"<td>{_e('' if value is None else str(value))}</td>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
