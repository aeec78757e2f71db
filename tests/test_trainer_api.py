"""The trainer from Python: a Task instance or class and rows in memory, no data files and no
registration; the typed trainer state and the JSON it reads and writes."""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import EXAMPLES
from nlpforge.errors import DataError, PluginError, UsageError
from nlpforge.training.loop import Interrupted, TrainConfig, train
from nlpforge.training.state import STATE_NAME, Best, Evaluation, TrainerState
from nlpforge_text_classification import TextClassification


class ReviewPolarity(TextClassification):
    """A task class no plugin registers (module level, so a later registration can name it)."""

    id = "api-review-polarity"


class Impostor(TextClassification):
    """A class with the id of a registered task (TextClassification's, inherited)."""


def read_rows(name: str, count: int) -> list[dict]:
    lines = (EXAMPLES / name).read_text().splitlines()
    return [json.loads(line) for line in lines[:count]]


TRAIN_ROWS = read_rows("train.jsonl", 64)
VALIDATION_ROWS = read_rows("validation.jsonl", 24)
#: 64 rows in batches of 16: 4 steps an epoch, so 6 steps end inside the second epoch.
SETTINGS = dict(batch_size=16, lr=1e-3, max_steps=6, save_steps=3, eval_strategy="steps",
                eval_steps=2, progress=False, tensorboard=False)


def weights(run: Path) -> dict:
    return load_file(str(run / "model.safetensors"))


def final_state(run: Path) -> dict:
    state = json.loads((run / STATE_NAME).read_text())
    assert state.pop("train_seconds") >= 0
    return state


@pytest.fixture(scope="module")
def rows_run(tiny_bert, tmp_path_factory) -> Path:
    """A run of the unregistered task, from rows in memory."""
    out = tmp_path_factory.mktemp("api") / "run"
    summary = train(TrainConfig(model=str(tiny_bert), output=str(out), **SETTINGS),
                    task=ReviewPolarity(), train_rows=TRAIN_ROWS,
                    validation_rows=VALIDATION_ROWS)
    assert summary["steps"] == 6 and summary["output"] == str(out)
    assert summary["best"]["step"] in (2, 4, 6)
    return out


def test_a_run_from_rows_is_the_run_of_the_same_data_files(rows_run, tiny_bert, tmp_path):
    """Same weights, state, checkpoints and settings as ``nlpforge train`` on files holding
    the rows; the manifest names the unregistered task under a local stand-in plugin."""
    train_file, validation_file = tmp_path / "train.jsonl", tmp_path / "validation.jsonl"
    for path, rows in ((train_file, TRAIN_ROWS), (validation_file, VALIDATION_ROWS)):
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    file_run = tmp_path / "file-run"
    train(TrainConfig(task="text-classification", model=str(tiny_bert), train=str(train_file),
                      validation=str(validation_file), output=str(file_run), **SETTINGS))

    def listing(run: Path) -> list[str]:
        return sorted(str(p.relative_to(run)) for p in run.rglob("*"))

    assert listing(rows_run) == listing(file_run)
    a, b = weights(rows_run), weights(file_run)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert final_state(rows_run) == final_state(file_run)
    for step in ("step-3", "step-6"):
        path = Path("checkpoints", step, STATE_NAME)
        assert (rows_run / path).read_text() == (file_run / path).read_text()

    config = json.loads((rows_run / "train_config.json").read_text())
    file_config = json.loads((file_run / "train_config.json").read_text())
    assert config == {**file_config, "task": "api-review-polarity", "train": "",
                      "validation": None, "output": str(rows_run)}
    manifest = json.loads((rows_run / "nlpforge.json").read_text())
    file_manifest = json.loads((file_run / "nlpforge.json").read_text())
    assert manifest["task"] == {**file_manifest["task"], "id": "api-review-polarity"}
    assert manifest["metrics"] == file_manifest["metrics"]
    top = ReviewPolarity.__module__.split(".")[0]
    assert manifest["plugin"] == {"name": "api-review-polarity",
                                  "distribution": f"local:{top}", "version": "unknown",
                                  "requires": ""}
    assert manifest["provenance"]["train_file"] is None
    assert manifest["provenance"]["validation_file"] is None


def test_a_run_of_an_unregistered_task_exports_once_the_task_is_registered(rows_run, tmp_path):
    import nlpforge
    from nlpforge.export.onnx import export_run
    from nlpforge.testing import temporary_plugins
    from nlpforge.testing.contract import compare_outputs

    with pytest.raises(PluginError, match="needs task 'api-review-polarity'"):
        export_run(str(rows_run), str(tmp_path / "refused"))
    export = tmp_path / "export"
    requests = [{"text": "A lovely, quiet hotel."}, {"text": "The app crashes all the time."}]
    with temporary_plugins(ReviewPolarity):
        export_run(str(rows_run), str(export))
        predictions = nlpforge.load(str(export), device="cpu").predict(requests)
        # the ONNX predictions and raw outputs equal PyTorch's on the run dir
        torch_predictions, diffs = compare_outputs(rows_run, export, requests, predictions,
                                                   atol=1e-4, prediction_atol=1e-4)
    assert [p["label"] for p in predictions] == [p["label"] for p in torch_predictions]
    assert {p["label"] for p in predictions} <= {"negative", "positive"}
    assert diffs["logits"] <= 1e-4


def test_a_run_from_rows_resumes_to_the_same_weights(rows_run, tiny_bert, tmp_path,
                                                     monkeypatch):
    """A stop request after step 3 (as SIGTERM makes one), then train() again with
    ``resume`` and the same task and rows: the weights of the uninterrupted run."""
    from nlpforge.training import distributed

    calls = []
    all_any = distributed.all_any

    def stop_at_the_third_check(d, flag):
        calls.append(flag)
        return len(calls) == 3 or all_any(d, flag)

    monkeypatch.setattr(distributed, "all_any", stop_at_the_third_check)
    out = tmp_path / "run"
    config = TrainConfig(model=str(tiny_bert), output=str(out), **SETTINGS)
    with pytest.raises(Interrupted, match="at step 3"):
        train(config, task=ReviewPolarity, train_rows=TRAIN_ROWS,
              validation_rows=VALIDATION_ROWS)
    assert not (out / "nlpforge.json").exists()
    monkeypatch.setattr(distributed, "all_any", all_any)
    config.resume = True
    summary = train(config, task=ReviewPolarity, train_rows=TRAIN_ROWS,
                    validation_rows=VALIDATION_ROWS)
    assert summary["steps"] == 6
    a, b = weights(rows_run), weights(out)
    assert all(a[k].equal(b[k]) for k in a)
    assert final_state(out) == final_state(rows_run)


@pytest.mark.parametrize("change, message", [
    (dict(train="data.jsonl"), "both config.train"),
    (dict(task="text-classification"), "config.task is 'text-classification'"),
    (dict(task_options={"multi_label": True}), "give them to its constructor"),
    (dict(early_stopping_patience=2, validation_rows=None), "needs --validation"),
])
def test_python_inputs_given_twice_or_missing_are_refused(tiny_bert, tmp_path, change,
                                                          message):
    change = dict(change)
    validation = change.pop("validation_rows", VALIDATION_ROWS)
    config = TrainConfig(model=str(tiny_bert), output=str(tmp_path / "run"), **change)
    with pytest.raises(UsageError, match=message):
        train(config, task=ReviewPolarity(), train_rows=TRAIN_ROWS, validation_rows=validation)
    assert not (tmp_path / "run").exists()


def test_rows_are_checked_like_a_files_rows(tiny_bert, tmp_path):
    config = TrainConfig(model=str(tiny_bert), output=str(tmp_path / "run"), progress=False)
    bad = [TRAIN_ROWS[0], {"text": "no label"}]
    with pytest.raises(DataError, match=r"train_rows:2: missing required field 'label'"):
        train(config, task=ReviewPolarity, train_rows=bad)
    with pytest.raises(DataError, match=r"validation_rows: no rows"):
        train(config, task=ReviewPolarity, train_rows=TRAIN_ROWS, validation_rows=[])
    with pytest.raises(UsageError, match="--train is required"):
        train(config, task=ReviewPolarity)


def test_a_class_that_takes_a_registered_id_is_refused(tiny_bert, tmp_path):
    """Its run dir would load the registered class instead: refused before any work."""
    config = TrainConfig(model=str(tiny_bert), output=str(tmp_path / "run"))
    with pytest.raises(UsageError, match="give the class an id of its own"):
        train(config, task=Impostor, train_rows=TRAIN_ROWS)
    assert not (tmp_path / "run").exists()


# -- the trainer state ------------------------------------------------------------------------

#: checkpoints/step-2/trainer_state.json as the trainer wrote it before the state was typed
#: (text-classification, 3 steps, evaluation and checkpoint every 2).
CHECKPOINT_STATE = r'''{
  "step": 2,
  "epoch": 1,
  "batch_index": 2,
  "history": [
    {
      "step": 2,
      "epoch": 1,
      "metrics": {
        "accuracy": 0.5,
        "macro_f1": 0.3333333333333333,
        "per_label": {
          "negative": {
            "precision": 0.5,
            "recall": 1.0,
            "f1": 0.6666666666666666,
            "support": 50
          },
          "positive": {
            "precision": 0.0,
            "recall": 0.0,
            "f1": 0.0,
            "support": 50
          }
        }
      }
    }
  ],
  "best": {
    "step": 2,
    "epoch": 1,
    "metrics": {
      "accuracy": 0.5,
      "macro_f1": 0.3333333333333333,
      "per_label": {
        "negative": {
          "precision": 0.5,
          "recall": 1.0,
          "f1": 0.6666666666666666,
          "support": 50
        },
        "positive": {
          "precision": 0.0,
          "recall": 0.0,
          "f1": 0.0,
          "support": 50
        }
      }
    },
    "score": 0.3333333333333333
  },
  "bad_evals": 0,
  "stop_early": false,
  "loss": 0.6941122472286224
}
'''
#: RUN/trainer_state.json of a run without validation, as written then.
FINAL_STATE = r'''{
  "step": 2,
  "epoch": 1,
  "batch_index": 2,
  "history": [],
  "best": null,
  "bad_evals": 0,
  "stop_early": false,
  "train_seconds": 0.85
}
'''


@pytest.mark.parametrize("text, final", [(CHECKPOINT_STATE, False), (FINAL_STATE, True)])
def test_the_state_reads_and_writes_the_json_the_trainer_wrote(tmp_path, text, final):
    data = json.loads(text)
    state = TrainerState.from_json(data)
    assert state.step == data["step"] and state.history == data["history"]
    assert state.best == data["best"]
    path = tmp_path / STATE_NAME
    state.write(path, train_seconds=data["train_seconds"] if final else None)
    assert path.read_text() == text  # same keys, order and values: byte for byte
    assert TrainerState.read(path) == state


def test_the_state_counts_steps_and_epochs():
    state = TrainerState.from_json(json.loads(CHECKPOINT_STATE))
    loss = state.loss
    state.advance(0.5, batches=2)
    assert (state.step, state.batch_index) == (3, 4)
    assert state.loss == pytest.approx(0.9 * loss + 0.1 * 0.5)
    state.next_epoch()
    assert (state.epoch, state.batch_index) == (2, 0)
    fresh = TrainerState()
    fresh.advance(2.0, batches=1)
    assert (fresh.step, fresh.epoch, fresh.batch_index, fresh.loss) == (1, 1, 1, 2.0)


@pytest.mark.parametrize("record, names", [
    (TrainerState, list(TrainerState.__dataclass_fields__)),
    (Evaluation, ["step", "epoch", "metrics"]),
    (Best, ["score"]),  # and Evaluation's
])
def test_every_state_field_has_a_doc_comment(record, names):
    """Each field's line follows a ``#:`` comment (the form Sphinx's autodoc reads)."""
    lines, _ = inspect.getsourcelines(record)
    tree = ast.parse(textwrap.dedent("".join(lines)))
    fields = [node for node in tree.body[0].body if isinstance(node, ast.AnnAssign)]
    assert [node.target.id for node in fields] == names
    for node in fields:
        comment = lines[node.lineno - 2].strip()
        assert comment.startswith("#: ") and len(comment) > 10, \
            f"{record.__name__}.{node.target.id} has no doc comment"
    assert record.__doc__


def test_the_state_fields_are_the_keys_on_disk():
    assert [f for f in TrainerState.__dataclass_fields__] == list(json.loads(CHECKPOINT_STATE))
