"""nlpforge.json: schema checks, version ranges, and the task it names."""

from __future__ import annotations

import json
import shutil

import pytest

from nlpforge.errors import ManifestError, PluginError
from nlpforge.manifest import compatible_range, read_manifest, task_from_manifest, validate


def base() -> dict:
    return {
        "schema_version": 1, "kind": "run",
        "task": {"id": "text-classification", "version": 1,
                 "state": {"labels": ["a", "b"], "options": {"multi_label": False}}},
        "plugin": {"name": "text-classification", "distribution": "nlpforge", "version": "0.1.0",
                   "requires": ">=0.1,<0.2"},
        "nlpforge": {"version": "0.1.0", "requires": ">=0.1,<0.2"},
        "family": "encoder", "tokenizer": {"max_length": 16, "pad_id": 0},
    }


def test_compatible_range():
    assert compatible_range("0.1.3") == ">=0.1,<0.2"
    assert compatible_range("2.4.0") == ">=2.4,<3"


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("task"), "missing field 'task'"),
    (lambda m: m.update(kind="model"), "field 'kind' must be one of run, export"),
    (lambda m: m.update(family="rnn"), "field 'family'"),
    (lambda m: m["plugin"].pop("requires"), "missing field 'plugin.requires'"),
    (lambda m: m["nlpforge"].update(requires="about one"), "not a version range"),
    (lambda m: m.update(schema_version=7), "schema version 7 is newer"),
    (lambda m: m.update(kind="export"), "needs the field 'io'"),
    (lambda m: m.update(tokenizer=[]), "field 'tokenizer' has the wrong type"),
])
def test_invalid_manifests(change, message):
    data = base()
    change(data)
    with pytest.raises(ManifestError, match=message):
        validate(data, "x/nlpforge.json")


def test_read_checks_the_nlpforge_range(tmp_path):
    data = base()
    data["nlpforge"] = {"version": "3.0.0", "requires": ">=3.0,<4"}
    (tmp_path / "nlpforge.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"needs nlpforge>=3.0,<4.*pip install"):
        read_manifest(tmp_path)


def test_read_errors(tmp_path):
    with pytest.raises(ManifestError, match="no nlpforge.json"):
        read_manifest(tmp_path)
    with pytest.raises(ManifestError, match="no such directory"):
        read_manifest(tmp_path / "nope")
    (tmp_path / "nlpforge.json").write_text("[1, 2")
    with pytest.raises(ManifestError, match="corrupt JSON"):
        read_manifest(tmp_path)


def test_task_from_manifest_rebuilds_the_task():
    task = task_from_manifest(base(), "x")
    assert task.id == "text-classification" and task.labels == ["a", "b"]


def test_task_from_manifest_names_what_to_install():
    data = base()
    data["task"]["id"] = "sentence-similarity"
    data["plugin"].update(distribution="nlpforge-similarity", version="1.4.0",
                          requires=">=1.4,<2")
    with pytest.raises(PluginError, match=r"pip install 'nlpforge-similarity>=1.4,<2'"):
        task_from_manifest(data, "x")


def test_task_from_manifest_checks_the_plugin_version():
    data = base()
    data["plugin"].update(version="0.9.0", requires=">=0.9,<0.10")
    with pytest.raises(PluginError, match=r"made with nlpforge 0.9.0; installed is nlpforge 0.1.0"):
        task_from_manifest(data, "x")
    data = base()
    data["task"]["version"] = 5
    with pytest.raises(PluginError, match="version 5 is newer"):
        task_from_manifest(data, "x")


def test_run_and_export_manifests_are_valid(trained_run, exported, tmp_path):
    run = read_manifest(trained_run)
    assert run["kind"] == "run" and run["model_inputs"]
    assert run["provenance"]["torch"] and run["training"]["seed"] == 42
    exp = read_manifest(exported)
    assert exp["kind"] == "export" and exp["validation"]["passed"]
    assert exp["io"]["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert isinstance(exp["opset"], int)
    copy = tmp_path / "e"
    shutil.copytree(exported, copy)
    data = json.loads((copy / "nlpforge.json").read_text())
    del data["io"]
    (copy / "nlpforge.json").write_text(json.dumps(data))
    import nlpforge

    with pytest.raises(ManifestError, match="needs the field 'io'"):
        nlpforge.load(str(copy))
