"""Pictures: a run's curves.png (written by train, redrawn by nlpforge plot) and evaluate's
self-contained report.html, with the task's own sections, for one model or a run dir beside
its export."""

from __future__ import annotations

import base64
import json
import re
import sys

import pytest

from conftest import EXAMPLES, run_cli

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(d) for d in re.findall(r"base64,([A-Za-z0-9+/=]+)'", html)]


def test_train_writes_curves_and_plot_redraws_them(trained_run, tmp_path):
    assert (trained_run / "curves.png").read_bytes().startswith(PNG)
    target = tmp_path / "again.png"
    result = run_cli("plot", str(trained_run), "--output", str(target))
    assert result.returncode == 0, result.stderr
    assert target.read_bytes().startswith(PNG) and result.stdout.strip() == str(target)
    missing = run_cli("plot", str(tmp_path))
    assert missing.returncode != 0 and "no metrics.jsonl" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_curves_read_the_log_and_mark_the_best_step(trained_run):
    from nlpforge.report.curves import _best, read_log

    train, evals = read_log(trained_run)
    assert evals and all("accuracy" in r["eval"] for r in evals)
    state = json.loads((trained_run / "trainer_state.json").read_text())
    assert _best(trained_run)[0] == state["best"]["step"]


def test_a_report_of_a_run_dir_beside_its_export(trained_run, exported, tmp_path):
    out = tmp_path / "report"
    result = run_cli("evaluate", str(trained_run), "--data", str(EXAMPLES / "validation.jsonl"),
                     "--compare", str(exported), "--report", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["compare"]["identical_predictions"] == 1.0  # PyTorch and ONNX agree
    assert summary["compare"]["metrics"]["accuracy"] == summary["metrics"]["accuracy"]
    html = (out / "report.html").read_text()
    assert "http" not in html.replace("http-equiv", "")  # nothing fetched
    for heading in ("Metrics", "Confusion matrix", "Scores per label"):
        assert f"<h2>{heading}</h2>" in html
    images = _images(html)
    assert len(images) == 4 and all(i.startswith(PNG) for i in images)  # 2 sections x 2 models
    assert html.count("<h3>") == 4 and str(exported) in html
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["metrics"]) == {str(trained_run), str(exported)}


def test_a_report_without_matplotlib_names_the_extra(exported, tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; "
            "from nlpforge.cli.main import main; sys.argv = ['nlpforge', 'evaluate', "
            f"{str(exported)!r}, '--data', {str(EXAMPLES / 'validation.jsonl')!r}, "
            f"'--report', {str(tmp_path / 'r')!r}]; main()")
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2 and "pip install 'nlpforge[plots]'" in result.stderr
    assert not (tmp_path / "r").exists()


def test_ner_confusions_name_type_errors_misses_and_spurious_entities():
    from nlpforge_token_classification.confusions import entity_confusions

    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "O"]]
    pred = [["B-ORG", "I-ORG", "O", "O"], ["B-ORG", "O", "B-LOC"]]
    got = {(r["true"], r["predicted"]): r["count"] for r in entity_confusions(pred, true, "iob2")}
    assert got == {("PER", "ORG"): 1, ("LOC", "-"): 1, ("-", "LOC"): 1}


def test_qa_scores_by_answer_length():
    from nlpforge_question_answering.squad import by_answer_length

    rows = by_answer_length(["Paris", "the red house", "x"],
                            [["Paris"], ["the big red house"], ["in the year 1850 or so"]])
    assert [(r["answer words"], r["questions"]) for r in rows] == [("1", 1), ("3-4", 1),
                                                                  ("5-8", 1)]
    assert rows[0]["exact_match"] == 100.0 and rows[2]["f1"] == 0.0
