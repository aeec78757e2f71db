"""Plugin discovery through entry points: isolation, strict mode, allow/block lists, conflicts."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from conftest import run_cli

GOOD_TASK = '''
import nlpforge
from nlpforge import Field, ModelFamily, Task

class Echo(Task):
    id = "echo"
    description = "Echo test task"
    family = ModelFamily.ENCODER
    train_fields = (Field("text"),)
    request_fields = (Field("text"),)

    def encode(self, rows, tokenizer):
        return {}

    def targets(self, rows):
        return {}

    def postprocess(self, outputs, rows):
        return [dict(row) for row in rows]

    def metrics(self, predictions, rows):
        return {}

    def build_model(self, base, **kwargs):
        raise NotImplementedError

    def load_model(self, path):
        raise NotImplementedError

@nlpforge.hookimpl
def register_tasks(register):
    register(Echo)
'''


def make_dist(root: Path, dist: str, version: str, entry_points: dict[str, str],
              modules: dict[str, str]) -> Path:
    """A minimal installed distribution (dist-info + modules) on a directory for PYTHONPATH."""
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    eps = "[nlpforge]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(eps)
    for name, code in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(code))
    return root


def cli(root: Path, *args: str, **env: str):
    return run_cli(*args, env={"PYTHONPATH": str(root), **env})


def plugins_json(root: Path, **env: str) -> dict:
    result = cli(root, "plugins", "--json", **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def by_name(data: dict) -> dict:
    return {p["name"]: p for p in data["plugins"]}


def test_builtin_task_is_an_entry_point_plugin():
    data = json.loads(run_cli("plugins", "--json").stdout)
    builtin = by_name(data)["text-classification"]
    assert builtin["distribution"] == "nlpforge"
    assert builtin["status"] == "loaded" and builtin["tasks"] == ["text-classification"]
    tasks = json.loads(run_cli("tasks", "--json").stdout)
    row = next(t for t in tasks if t["id"] == "text-classification")
    assert row["family"] == "encoder" and row["description"]


def test_third_party_plugin_is_found(tmp_path):
    root = make_dist(tmp_path, "nlpforge-echo", "1.2.0", {"echo": "echo_plugin"},
                     {"echo_plugin": GOOD_TASK})
    echo = by_name(plugins_json(root))["echo"]
    assert (echo["distribution"], echo["version"], echo["tasks"]) == ("nlpforge-echo", "1.2.0", ["echo"])
    out = cli(root, "tasks").stdout
    assert "echo" in out and "text-classification" in out


def test_broken_plugin_is_reported_and_the_rest_works(tmp_path):
    root = make_dist(tmp_path, "nlpforge-broken", "0.3.1", {"broken": "broken_plugin"},
                     {"broken_plugin": "import no_such_module_xyz\n"})
    result = cli(root, "tasks")
    assert result.returncode == 0
    assert "text-classification" in result.stdout
    assert "nlpforge-broken 0.3.1" in result.stderr and "no_such_module_xyz" in result.stderr
    assert "Traceback" not in result.stderr
    broken = by_name(plugins_json(root))["broken"]
    assert broken["status"] == "failed" and "ModuleNotFoundError" in broken["error"]
    assert cli(root, "--help").returncode == 0


def test_strict_mode_turns_a_broken_plugin_into_an_error(tmp_path):
    root = make_dist(tmp_path, "nlpforge-broken", "0.3.1", {"broken": "broken_plugin"},
                     {"broken_plugin": "raise RuntimeError('boom')\n"})
    result = cli(root, "tasks", NLPFORGE_STRICT_PLUGINS="1")
    assert result.returncode != 0
    assert "nlpforge-broken 0.3.1" in result.stderr and "boom" in result.stderr
    assert "Traceback" not in result.stderr


def test_failing_registration_is_isolated(tmp_path):
    code = GOOD_TASK.replace("register(Echo)", "register(Echo)\n    raise ValueError('half done')")
    root = make_dist(tmp_path, "nlpforge-half", "1.0", {"half": "half_plugin"}, {"half_plugin": code})
    half = by_name(plugins_json(root))["half"]
    assert half["status"] == "failed" and "half done" in half["error"]


def test_invalid_task_class_is_reported(tmp_path):
    code = GOOD_TASK.replace('id = "echo"', 'id = "Has Spaces"')
    root = make_dist(tmp_path, "nlpforge-bad", "1.0", {"bad": "bad_plugin"}, {"bad_plugin": code})
    bad = by_name(plugins_json(root))["bad"]
    assert bad["status"] == "failed" and "lower-case" in bad["error"]


def test_duplicate_task_id_names_both_distributions(tmp_path, tiny_bert):
    code = GOOD_TASK.replace('id = "echo"', 'id = "text-classification"')
    root = make_dist(tmp_path, "nlpforge-clash", "2.0", {"clash": "clash_plugin"},
                     {"clash_plugin": code})
    data = plugins_json(root)
    assert "text-classification" in data["conflicts"]
    result = cli(root, "train", "--task", "text-classification", "--model", str(tiny_bert),
                 "--train", "x.jsonl", "--output", str(tmp_path / "run"))
    assert result.returncode != 0
    assert "nlpforge 0.1.0" in result.stderr and "nlpforge-clash 2.0" in result.stderr
    assert "NLPFORGE_BLOCK_PLUGINS" in result.stderr
    # blocking one of them resolves the clash
    fixed = plugins_json(root, NLPFORGE_BLOCK_PLUGINS="nlpforge-clash")
    assert not fixed["conflicts"]


def test_block_and_allow_lists_select_plugins(tmp_path):
    root = make_dist(tmp_path, "nlpforge-echo", "1.2.0", {"echo": "echo_plugin"},
                     {"echo_plugin": GOOD_TASK})
    blocked = by_name(plugins_json(root, NLPFORGE_BLOCK_PLUGINS="text-classification"))
    assert blocked["text-classification"]["status"] == "disabled"
    assert blocked["echo"]["status"] == "loaded"
    allowed = by_name(plugins_json(root, NLPFORGE_LOAD_PLUGINS="nlpforge-echo"))
    assert allowed["text-classification"]["status"] == "disabled"
    assert allowed["echo"]["status"] == "loaded"
    result = cli(root, "train", "--task", "text-classification", "--model", "m", "--train", "t",
                 "--output", str(tmp_path / "o"), NLPFORGE_BLOCK_PLUGINS="text-classification")
    assert result.returncode != 0 and "unknown task 'text-classification'" in result.stderr


def test_plugin_api_version_mismatch(tmp_path):
    code = "NLPFORGE_PLUGIN_API = 99\n" + GOOD_TASK
    root = make_dist(tmp_path, "nlpforge-future", "9.0", {"future": "future_plugin"},
                     {"future_plugin": code})
    future = by_name(plugins_json(root))["future"]
    assert future["status"] == "failed" and "plugin API 99" in future["error"]


def test_plugin_adds_a_command(tmp_path):
    code = GOOD_TASK + textwrap.dedent('''
        import click

        @nlpforge.hookimpl
        def register_commands(cli):
            @cli.command(name="echo-hello")
            @click.argument("name")
            def hello(name):
                """Say hello."""
                click.echo(f"hello {name}")
    ''')
    root = make_dist(tmp_path, "nlpforge-echo", "1.2.0", {"echo": "echo_plugin"},
                     {"echo_plugin": code})
    assert "echo-hello" in cli(root, "--help").stdout
    result = cli(root, "echo-hello", "world")
    assert result.returncode == 0 and result.stdout.strip() == "hello world"
    assert by_name(plugins_json(root))["echo"]["commands"] == ["echo-hello"]


def test_in_process_manager_isolates_errors():
    from importlib.metadata import EntryPoint

    from nlpforge.plugins import PluginManager

    eps = [EntryPoint("text-classification", "nlpforge_text_classification", "nlpforge"),
           EntryPoint("ghost", "no_such_module_abc", "nlpforge")]
    manager = PluginManager(entry_points=eps, env={}).load()
    assert "text-classification" in manager.tasks
    ghost = next(p for p in manager.plugins if p.name == "ghost")
    assert ghost.status == "failed"
    from nlpforge.errors import PluginError

    with pytest.raises(PluginError, match="unknown task 'nope'.*some plugins failed"):
        manager.get_task("nope")
    with pytest.raises(PluginError, match="STRICT"):
        PluginManager(entry_points=eps, env={"NLPFORGE_STRICT_PLUGINS": "1"}).load()


def test_a_misspelt_hook_is_an_error_naming_the_plugin_and_the_hook(tmp_path):
    code = GOOD_TASK.replace("def register_tasks(register):", "def register_task(register):")
    root = make_dist(tmp_path, "nlpforge-typo", "1.0", {"typo": "typo_plugin"},
                     {"typo_plugin": code})
    typo = by_name(plugins_json(root))["typo"]
    assert typo["status"] == "failed" and typo["tasks"] == []
    assert ("it implements 'register_task' (did you mean 'register_tasks'?), which is not an "
            "nlpforge hook") in typo["error"]
    strict = cli(root, "tasks", NLPFORGE_STRICT_PLUGINS="1")
    assert strict.returncode != 0 and "'typo' from nlpforge-typo 1.0" in strict.stderr


def test_a_plugin_name_or_module_taken_by_another_distribution_is_reported(tmp_path):
    root = make_dist(tmp_path, "nlpforge-seq2seq", "2.0", {"seq2seq": "nlpforge_seq2seq"},
                     {"nlpforge_seq2seq": GOOD_TASK})
    data = plugins_json(root)
    same = [p for p in data["plugins"] if p["name"] == "seq2seq"]
    assert sorted(p["distribution"] for p in same) == ["nlpforge", "nlpforge-seq2seq"]
    failed = [p for p in same if p["status"] == "failed"]
    assert len(failed) == 1 and "the plugin name 'seq2seq' is taken by" in failed[0]["error"]


def test_in_process_register_and_unregister():
    import types

    import nlpforge
    from nlpforge.errors import PluginError
    from nlpforge.plugins import PluginManager

    namespace: dict = {}
    exec(GOOD_TASK, namespace)
    plugin = types.SimpleNamespace(register_tasks=namespace["register_tasks"])
    manager = PluginManager(entry_points=[], env={})
    info = manager.register(plugin, "echo", "nlpforge-echo", "1.0")
    assert (info.status, info.tasks, manager.get_task("echo")) == ("loaded", ["echo"],
                                                                  namespace["Echo"])
    with pytest.raises(PluginError, match="a plugin named 'echo' is registered already"):
        manager.register(plugin, "echo")
    manager.unregister("echo")
    with pytest.raises(PluginError, match="unknown task 'echo'"):
        manager.get_task("echo")

    @nlpforge.hookimpl
    def register_task(register):
        pass

    typo = manager.register(types.SimpleNamespace(register_task=register_task), "typo")
    assert typo.status == "failed" and "did you mean 'register_tasks'" in typo.error
    assert not manager.pm.has_plugin("typo")
