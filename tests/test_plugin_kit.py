"""The plugin author's kit: ``nlpforge new-plugin``, the ``nlpforge.testing`` pytest plugin
(temporary registration, the contract check), a custom-head plugin kept as its own
distribution (tests/plugins/nlpforge-sentence-similarity), and the errors a user sees when a
plugin is broken, outdated or missing."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

import nlpforge
from conftest import ROOT, run_cli, write_jsonl
from nlpforge import Field, ModelFamily, Task
from nlpforge.errors import PluginError, UsageError
from nlpforge.plugins import PluginManager, get_plugin_manager
from nlpforge.testing import ContractError, check_task, compare_predictions, temporary_plugins

PAIRS = [("a man plays a guitar", "someone plays music", 0.8),
         ("a dog runs in the park", "the stock market fell", 0.0),
         ("a cat is sleeping", "a kitten sleeps", 0.9),
         ("the food was cold", "it rained all day", 0.1),
         ("i loved the film", "the movie was great", 1.0),
         ("the service was slow", "a lovely view", 0.2)]
SIM_ROWS = [{"text_a": a, "text_b": b, "score": s} for a, b, s in PAIRS] * 3
SIM_REQUESTS = [{"text_a": a, "text_b": b} for a, b, _ in PAIRS[:4]]


# -- tasks used by the tests (module level: a fresh process can import them) -----------------

class NeverTrained:
    """The methods ``register()`` requires, for tasks these tests register but never run."""

    def encode(self, rows, tokenizer):
        raise NotImplementedError

    def targets(self, rows):
        raise NotImplementedError

    def postprocess(self, outputs, rows):
        raise NotImplementedError

    def metrics(self, predictions, rows):
        raise NotImplementedError

    def build_model(self, base, **kwargs):
        raise NotImplementedError

    def load_model(self, path):
        raise NotImplementedError


class EchoLength(NeverTrained, Task):
    """A tiny task used to test registration: never trained."""

    id = "kit-echo-length"
    description = "test task"
    family = ModelFamily.ENCODER
    train_fields = (Field("text", str),)
    request_fields = (Field("text", str),)


class TorchInPostprocess(NeverTrained, Task):
    """Importing torch in postprocess: the torch-free runtime must catch it."""

    id = "kit-torchy"
    family = ModelFamily.ENCODER
    request_fields = (Field("text_a", str), Field("text_b", str))

    def encode(self, rows, tokenizer):
        from nlpforge.tasks import ENCODER_INPUTS

        texts = [r["text_a"] for r in rows] + [r["text_b"] for r in rows]
        return tokenizer.pad(tokenizer.encode(texts), ENCODER_INPUTS)

    def postprocess(self, outputs, rows):
        import torch  # noqa: F401  (the mistake under test)

        return [{} for _ in rows]


def _installed(dist: str) -> None:
    """The test plugins are installed with the test environment: missing is a failure."""
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{dist} is not installed: pip install -e tests/plugins/{dist} "
                    f"(tools/setup.sh does)", pytrace=False)


# -- nlpforge new-plugin ---------------------------------------------------------------------

def test_new_plugin_installs_is_listed_and_its_own_tests_pass(tmp_path):
    result = run_cli("new-plugin", "review-mood", "--output", str(tmp_path / "src"))
    assert result.returncode == 0, result.stderr
    project = tmp_path / "src" / "nlpforge-review-mood"
    assert f"pip install -e '{project}[test]'" in result.stdout
    for name in ("pyproject.toml", "README.md", "src/nlpforge_review_mood/__init__.py",
                 "tests/test_nlpforge_review_mood.py", "examples/train.jsonl"):
        assert (project / name).is_file(), name
    # What a user does, into a throwaway target (the shared venv stays as it is). No build
    # isolation: it would download setuptools.
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                          "--no-build-isolation", "--target", str(site), str(project)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    env = {"PYTHONPATH": str(site)}
    tasks = {t["id"]: t for t in json.loads(run_cli("tasks", "--json", env=env).stdout)}
    assert tasks["review-mood"]["distribution"] == "nlpforge-review-mood"
    assert tasks["review-mood"]["train_fields"] == ["text", "label"]
    assert "review-mood" not in {t["id"] for t in
                                 json.loads(run_cli("tasks", "--json").stdout)}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                           cwd=project, capture_output=True, text=True, timeout=600,
                           env={**os.environ, **env, "PYTHONWARNINGS": "ignore"})
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert "4 passed" in tests.stdout


def test_new_plugin_refuses_bad_names_taken_ids_and_existing_dirs(tmp_path, monkeypatch):
    from nlpforge.scaffold import create_plugin, names_for

    assert names_for("nlpforge-review-mood") == {
        "dist": "nlpforge-review-mood", "module": "nlpforge_review_mood",
        "task_id": "review-mood", "class_name": "ReviewMood"}
    result = run_cli("new-plugin", "Review Mood", "--output", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "plugin name 'Review Mood': use lower-case letters" in result.stderr
    with pytest.raises(UsageError, match="'text-classification' is already provided by "
                                         "'text-classification' from nlpforge"):
        create_plugin("text-classification", tmp_path)
    with pytest.raises(UsageError, match="the name 'seq2seq' is taken by the installed plugin "
                                         "'seq2seq' from nlpforge .* \\(module "
                                         "nlpforge_seq2seq\\)"):
        create_plugin("seq2seq", tmp_path)  # the built-in's entry point and module
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "nlpforge_shadow.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "modules"))
    with pytest.raises(UsageError, match="a module named nlpforge_shadow is importable"):
        create_plugin("shadow", tmp_path / "out")
    with pytest.raises(UsageError, match="--description"):
        create_plugin("quoted", tmp_path, description='say "hi"')
    create_plugin("mood", tmp_path, check_installed=False)
    with pytest.raises(UsageError, match="nlpforge-mood already exists; pass --overwrite"):
        create_plugin("mood", tmp_path, check_installed=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["modules", "nlpforge-mood"]


def test_scaffold_templates_ship_with_the_package():
    from nlpforge.scaffold import TEMPLATES

    data = (ROOT / "pyproject.toml").read_text()
    assert '"scaffold/templates/*.tmpl"' in data
    assert {p.name for p in TEMPLATES.glob("*.tmpl")} >= {
        "pyproject.toml.tmpl", "task.py.tmpl", "test_task.py.tmpl", "README.md.tmpl"}


# -- temporary registration ------------------------------------------------------------------

def test_temporary_plugins_are_undone_even_when_the_test_fails():
    before = get_plugin_manager()
    with pytest.raises(RuntimeError):
        with temporary_plugins(EchoLength) as manager:
            assert manager.get_task("kit-echo-length") is EchoLength
            assert get_plugin_manager() is manager
            assert manager.plugin_of("kit-echo-length").distribution == "local:test_plugin_kit"
            assert "text-classification" in manager.tasks  # installed plugins stay visible
            raise RuntimeError("the test fails here")
    assert get_plugin_manager() is before
    with pytest.raises(PluginError, match="unknown task 'kit-echo-length'"):
        get_plugin_manager().get_task("kit-echo-length")
    with temporary_plugins(EchoLength, installed=False) as manager:
        assert sorted(manager.tasks) == ["kit-echo-length"]


def test_the_fixtures_work_in_a_third_party_test_suite(tmp_path):
    # The pytest11 entry point makes them available to any project: run a suite that uses
    # them in a fresh pytest process, in a directory outside this repository.
    (tmp_path / "test_third_party.py").write_text(textwrap.dedent('''
        import pytest
        from nlpforge import Field, ModelFamily, Task
        from nlpforge.errors import PluginError
        from nlpforge.plugins import get_plugin_manager

        class Shout(Task):
            id = "shout"
            family = ModelFamily.ENCODER
            request_fields = (Field("text", str),)

            def encode(self, rows, tokenizer): ...
            def targets(self, rows): ...
            def postprocess(self, outputs, rows): ...
            def metrics(self, predictions, rows): ...
            def build_model(self, base, **kwargs): ...
            def load_model(self, path): ...

        def test_a_registers(nlpforge_plugins):
            manager = nlpforge_plugins.register(Shout)
            assert get_plugin_manager().get_task("shout") is Shout is manager.get_task("shout")

        def test_b_does_not_see_it():
            with pytest.raises(PluginError):
                get_plugin_manager().get_task("shout")

        def test_c_fails_while_registered(nlpforge_plugins):
            nlpforge_plugins.register(Shout)
            raise AssertionError("expected failure")

        def test_d_still_does_not_see_it():
            with pytest.raises(PluginError):
                get_plugin_manager().get_task("shout")

        def test_e_tokenizer(nlpforge_tokenizer):
            features = nlpforge_tokenizer.pad(nlpforge_tokenizer.encode(["the movie", "a"]))
            assert features["input_ids"].shape[0] == 2
    '''))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "test_third_party.py"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert "1 failed, 4 passed" in result.stdout, result.stdout[-3000:]
    assert "test_c_fails_while_registered" in result.stdout


def test_pytest_plugin_imports_nothing_heavy():
    code = ("import sys, nlpforge.testing.pytest_plugin, nlpforge.testing; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


# -- the hooks (every documented hook has a test_hook_<name>) --------------------------------

def test_hook_register_tasks():
    plugin = type(sys)("kit_hook_tasks")
    plugin.NLPFORGE_PLUGIN_API = 1

    class Unfinished(Task):
        id = "kit-unfinished"
        family = ModelFamily.ENCODER

        def encode(self, rows, tokenizer):
            return {}

    @nlpforge.hookimpl
    def register_tasks(register):
        register(EchoLength)
        with pytest.raises(PluginError, match="register\\(\\) takes a Task subclass"):
            register(object)
        with pytest.raises(PluginError, match="task 'kit-unfinished' .* does not implement "
                                              "postprocess, metrics, build_model, load_model, "
                                              "targets \\(or training_batch\\)"):
            register(Unfinished)

    plugin.register_tasks = register_tasks
    with temporary_plugins(plugin, installed=False) as manager:
        assert manager.get_task("kit-echo-length") is EchoLength
        info = manager.plugins[0]
        assert (info.name, info.status, info.tasks) == ("kit-hook-tasks", "loaded",
                                                       ["kit-echo-length"])


def test_hook_register_commands():
    plugin = type(sys)("kit_hook_commands")

    @nlpforge.hookimpl
    def register_commands(cli):
        @cli.command(name="kit-hello")
        @click.argument("name")
        def hello(name):
            click.echo(f"hello {name}")

    plugin.register_commands = register_commands
    group = click.Group()
    with temporary_plugins(plugin, installed=False) as manager:
        manager.add_commands(group)
        assert manager.plugins[0].commands == ["kit-hello"]
    assert CliRunner().invoke(group, ["kit-hello", "you"]).output == "hello you\n"


# -- the contract check ----------------------------------------------------------------------

def test_contract_check_names_the_failing_stage(tiny_bert, tmp_path):
    rows = [{"text": "good", "label": "pos"}, {"text": "bad"}]
    with pytest.raises(ContractError, match=r"task 'text-classification': data check failed: "
                                            r"rows:2: missing required field 'label'"):
        check_task("text-classification", rows, base=tiny_bert, workdir=tmp_path)
    with pytest.raises(ContractError, match="task options failed: task 'text-classification' "
                                            "has no option colour"):
        check_task("text-classification", rows, options={"colour": "red"}, base=tiny_bert)
    with pytest.raises(ContractError, match="not installed: unknown task 'no-such-task'"):
        check_task("no-such-task", rows)
    with pytest.raises(ContractError, match="training failed: cannot load the base model "
                                            ".*NotImplementedError"):
        check_task(EchoLength, [{"text": "x"}] * 4, base=tiny_bert, workdir=tmp_path / "w")
    assert "kit-echo-length" not in get_plugin_manager().tasks  # registration undone


def test_tiny_models_by_family_and_a_clear_reason_when_one_is_missing(tmp_path, monkeypatch):
    from nlpforge.testing import tiny

    assert [tiny.family_default(f) for f in ModelFamily] == ["bert", "gpt2", "t5"]
    with pytest.raises(tiny.TinyModelUnavailable, match="unknown tiny model 'gpt5'"):
        tiny.make_tiny_model("gpt5", tmp_path)
    monkeypatch.setitem(tiny.BUILDERS, "gpt2", "nlpforge.testing.no_such_module:make")
    with pytest.raises(tiny.TinyModelUnavailable, match="tiny gpt2: "
                                                        "nlpforge.testing.no_such_module is "
                                                        "not installed"):
        tiny.TinyModels(tmp_path).for_family(ModelFamily.DECODER)


@pytest.mark.slow
@pytest.mark.parametrize("task, rows, request_", [
    ("text-generation", [{"prompt": "say hi", "completion": " hello there"},
                         {"prompt": "count", "completion": " one two three"}] * 4,
     {"prompt": "say hi"}),
    ("text2text-generation", [{"source": "say hi", "target": "hello there"},
                              {"source": "count", "target": "one two three"}] * 4,
     {"source": "say hi"}),
])
def test_contract_check_for_the_generative_families(nlpforge_check_task, task, rows, request_):
    report = nlpforge_check_task(task, rows, [request_])
    assert report.validation["passed"] and report.torch_free
    assert isinstance(report.predictions[0]["generated_text"], str)
    # the export's greedy tokens equalled transformers' generate() on the run dir
    (torch_prediction,) = report.torch_predictions
    assert isinstance(torch_prediction["generated_text"], str)
    assert report.seconds["PyTorch vs ONNX"] > 0


def test_compare_predictions_reports_each_difference():
    a = [{"label": "pos", "score": 0.5, "scores": {"pos": 0.5, "neg": 0.5}}]
    assert compare_predictions(a, json.loads(json.dumps(a))) == []
    b = [{"label": "neg", "score": 0.51, "scores": {"pos": 0.5, "neg": 0.5000001}}]
    assert compare_predictions(a, b) == [
        "prediction[0].label: 'pos' != 'neg'",
        "prediction[0].score: 0.5 != 0.51 (diff 0.01)"]
    assert compare_predictions([{"x": [1, 2]}], [{"x": [1]}]) == ["prediction[0].x: 2 items != 1"]


# -- the custom-head plugin, its own distribution ---------------------------------------------

@pytest.fixture(scope="module")
def similarity(tiny_bert, tmp_path_factory):
    """sentence-similarity trained, exported and predicted by the contract check (once)."""
    _installed("nlpforge-sentence-similarity")
    return check_task("sentence-similarity", SIM_ROWS, SIM_REQUESTS, base=tiny_bert,
                      workdir=tmp_path_factory.mktemp("similarity"),
                      options={"loss": "cosent", "max_score": 1.0}, steps=6)


def test_custom_head_plugin_passes_the_contract_check(similarity):
    assert similarity.torch_free and similarity.validation["passed"]
    plugin = get_plugin_manager().plugin_of("sentence-similarity")  # through its entry point
    assert (plugin.distribution, plugin.module) == ("nlpforge-sentence-similarity",
                                                    "nlpforge_sentence_similarity")
    assert similarity.max_abs_diff["embeddings"] < 1e-4
    assert similarity.train["steps"] == 6
    assert set(similarity.train["best"]["metrics"]) == {"spearman", "pearson", "mse"}
    manifest = json.loads((similarity.export_dir / "nlpforge.json").read_text())
    assert manifest["plugin"] == {"name": "sentence-similarity",
                                  "distribution": "nlpforge-sentence-similarity",
                                  "version": "0.1.0", "requires": ">=0.1,<0.2"}
    assert manifest["io"]["outputs"] == ["embeddings"]
    assert manifest["task"]["state"]["options"]["loss"] == "cosent"
    head = json.loads((similarity.run_dir / "similarity_head.json").read_text())
    assert head == {"pooling": "mean", "projection_dim": 0, "hidden_size": 32}
    for p in similarity.predictions:
        assert set(p) == {"score", "similarity"} and -1 <= p["similarity"] <= 1
        assert p["score"] == pytest.approx(min(max(p["similarity"], 0.0), 1.0))


def test_custom_head_embeddings_are_unit_vectors_of_a_shared_encoder(similarity):
    predictor = nlpforge.load(str(similarity.export_dir))
    same = [{"text_a": "a cat is sleeping", "text_b": "a cat is sleeping"}]
    assert predictor.predict(same)[0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    features = predictor.task.encode(SIM_REQUESTS, predictor.tokenizer)
    vectors = predictor.run(features)["embeddings"]
    assert vectors.shape == (8, 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    wanted = [float(vectors[i] @ vectors[i + 4]) for i in range(4)]
    got = [p["similarity"] for p in similarity.predictions]
    assert got == pytest.approx(wanted, abs=1e-5)


def test_custom_head_predicts_and_evaluates_on_the_command_line(similarity, tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", SIM_REQUESTS)
    out = run_cli("predict", str(similarity.export_dir), "--input", str(pairs))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert compare_predictions(lines, similarity.predictions, 1e-5, 1e-5) == []
    data = write_jsonl(tmp_path / "gold.jsonl", SIM_ROWS)
    onnx_eval = json.loads(run_cli("evaluate", str(similarity.export_dir), "--data",
                                   str(data)).stdout)["metrics"]
    assert onnx_eval["spearman"] == pytest.approx(similarity.train["best"]["metrics"]["spearman"],
                                                  abs=1e-6)
    bad = write_jsonl(tmp_path / "bad.jsonl", [SIM_ROWS[0], {**SIM_ROWS[1], "score": 7}])
    result = run_cli("evaluate", str(similarity.export_dir), "--data", str(bad))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{bad}:2: field 'score': score 7 is outside 0.0..1.0" in result.stderr


def test_custom_head_is_served_like_a_builtin(similarity):
    from test_serving import Server

    server = Server(f"sim={similarity.export_dir}", "--threads", "1")
    try:
        c = server.client
        response = c.post("/v1/models/sim/predict", json={"inputs": SIM_REQUESTS})
        assert response.status_code == 200, response.text
        served = response.json()["predictions"]
        assert compare_predictions(served, similarity.predictions, 1e-5, 1e-5) == []
        v2 = {"inputs": [{"name": name, "shape": [2], "datatype": "BYTES",
                          "data": [r[name] for r in SIM_REQUESTS[:2]]}
                         for name in ("text_a", "text_b")]}
        response = c.post("/v2/models/sim/infer", json=v2)
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o for o in response.json()["outputs"]}
        assert outputs["similarity"]["data"] == pytest.approx(
            [p["similarity"] for p in similarity.predictions[:2]], abs=1e-5)
        meta = c.get("/v2/models/sim").json()
        assert {"name": "text_b", "datatype": "BYTES", "shape": [-1]} in meta["inputs"]
        assert meta["parameters"]["task"] == "sentence-similarity"
    finally:
        server.client.close()
        server.stop()


def test_similarity_metrics_rank_ties_like_spearman():
    from nlpforge_sentence_similarity import SentenceSimilarity, correlation, ranks

    assert ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [2.5, 0.0, 2.5, 1.0]
    task = SentenceSimilarity(max_score=5.0)
    rows = [{"score": s} for s in (0.0, 2.0, 2.0, 5.0)]
    predictions = [{"similarity": c, "score": 5 * max(c, 0)} for c in (0.1, 0.3, 0.2, 0.9)]
    m = task.metrics(predictions, rows)
    assert m["spearman"] == pytest.approx(correlation(np.array([0, 2, 1, 3.0]),
                                                      np.array([0, 1.5, 1.5, 3.0])))
    assert m["spearman"] == pytest.approx(0.9486833, abs=1e-6)  # scipy.stats.spearmanr
    assert m["mse"] == pytest.approx(np.mean([0.25, 0.25, 1.0, 0.25]))
    with pytest.raises(UsageError, match="max_score .* must be greater than min_score"):
        SentenceSimilarity(max_score=0.0)
    with pytest.raises(UsageError, match="'pooling': expected one of mean, cls, max"):
        SentenceSimilarity(pooling="sum")


def test_similarity_head_pooling_projection_losses_and_saved_settings(tiny_bert, tmp_path):
    _installed("nlpforge-sentence-similarity")
    import torch

    from nlpforge.errors import ModelDirError
    from nlpforge.testing import wordpiece_tokenizer
    from nlpforge_sentence_similarity import SentenceSimilarity, head

    task = SentenceSimilarity(pooling="max", projection_dim=8, include_embeddings=True)
    model = task.build_model(str(tiny_bert)).eval()
    features = task.encode(SIM_REQUESTS[:2], wordpiece_tokenizer())
    with torch.no_grad():
        vectors = task.forward(model, {k: torch.from_numpy(v) for k, v in features.items()})
    assert vectors["embeddings"].shape == (4, 8)
    assert torch.allclose(vectors["embeddings"].norm(dim=-1), torch.ones(4), atol=1e-5)
    out = task.postprocess({"embeddings": vectors["embeddings"].numpy()}, SIM_REQUESTS[:2])
    assert len(out[0]["embedding_a"]) == 8 and len(out[1]["embedding_b"]) == 8
    assert out[0]["similarity"] == pytest.approx(
        float(vectors["embeddings"][0] @ vectors["embeddings"][2]), abs=1e-6)

    model.save_pretrained(tmp_path / "run")
    loaded = task.load_model(str(tmp_path / "run"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 loaded.state_dict().values()))
    with pytest.raises(ModelDirError, match="trained with .*'pooling': 'max'.* asks for "
                                            ".*'pooling': 'mean'"):
        SentenceSimilarity().load_model(str(tmp_path / "run"))

    unit = torch.nn.functional.normalize
    a, b = unit(torch.tensor([[1.0, 0.0], [1.0, 0.0]])), unit(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    pair = torch.cat([a, b])  # cosines: 1 and 0
    assert head.pair_loss(pair, torch.tensor([1.0, 0.0]), "cosine_mse", 20.0).item() == 0.0
    assert head.pair_loss(pair, torch.tensor([0.5, 0.5]), "cosine_mse", 20.0).item() == \
        pytest.approx(0.25)
    right = head.pair_loss(pair, torch.tensor([0.9, 0.1]), "cosent", 20.0).item()
    wrong = head.pair_loss(pair, torch.tensor([0.1, 0.9]), "cosent", 20.0).item()
    assert right == pytest.approx(np.log1p(np.exp(-20.0)), abs=1e-7)
    assert wrong == pytest.approx(np.log1p(np.exp(20.0)), abs=1e-4)


def test_torch_in_postprocess_is_caught_by_the_torch_free_check(similarity, tmp_path):
    from nlpforge.testing import predict_without_torch

    export = tmp_path / "export"
    shutil.copytree(similarity.export_dir, export)
    manifest = json.loads((export / "nlpforge.json").read_text())
    manifest["task"] = {"id": "kit-torchy", "version": 1, "state": {}}
    manifest["plugin"] = {"name": "kit-torchy", "distribution": "local:test_plugin_kit",
                          "version": "0.0.0", "requires": ""}
    (export / "nlpforge.json").write_text(json.dumps(manifest))
    with pytest.raises(AssertionError, match="'import torch' during torch-free prediction"):
        predict_without_torch(export, SIM_REQUESTS[:1], ["test_plugin_kit:TorchInPostprocess"])


# -- what a user sees when a plugin is broken, outdated or missing ----------------------------

def _dist(root: Path, dist: str, module: str, code: str) -> Path:
    info = root / f"{dist.replace('-', '_')}-1.4.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.4.0\n")
    (info / "entry_points.txt").write_text(f"[nlpforge]\n{module} = {module}\n")
    (root / f"{module}.py").write_text(code)
    return root


BROKEN = {  # module: (code, what the user must read)
    "kit_broken": ("import no_such_module_xyz\n", (
        "plugin 'kit_broken' from nlpforge-kit-broken 1.4.0 failed to load: ModuleNotFoundError: "
        "No module named 'no_such_module_xyz'; reinstall or upgrade it (pip install -U "
        "'nlpforge-kit-broken') or skip it with NLPFORGE_BLOCK_PLUGINS=kit_broken")),
    "kit_old": ("NLPFORGE_PLUGIN_API = 0\n", (
        "plugin 'kit_old' from nlpforge-kit-old 1.4.0 failed to load: it is written for plugin "
        "API 0, this nlpforge has plugin API 1; upgrade it: pip install -U 'nlpforge-kit-old'")),
    "kit_new": ("NLPFORGE_PLUGIN_API = 2\n", (
        "plugin 'kit_new' from nlpforge-kit-new 1.4.0 failed to load: it is written for plugin "
        "API 2, this nlpforge has plugin API 1; upgrade nlpforge: pip install -U nlpforge (or "
        "install a release of nlpforge-kit-new made for plugin API 1)")),
}


def test_broken_and_outdated_plugins_name_the_distribution_and_the_fix(tmp_path):
    for module, (code, _) in BROKEN.items():
        _dist(tmp_path, "nlpforge-" + module.replace("_", "-"), module, code)
    env = {"PYTHONPATH": str(tmp_path)}
    result = run_cli("tasks", env=env)
    assert result.returncode == 0 and "text-classification" in result.stdout  # the rest works
    for _, expected in BROKEN.values():
        assert expected in result.stderr
    strict = run_cli("tasks", env={**env, "NLPFORGE_STRICT_PLUGINS": "1"})
    assert strict.returncode == 1 and "Traceback" not in strict.stderr
    assert BROKEN["kit_broken"][1] in strict.stderr  # the first one (by name) stops the run


def test_an_export_whose_plugin_is_missing_says_what_to_install(similarity, tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", SIM_REQUESTS[:1])
    blocked = run_cli("predict", str(similarity.export_dir), "--input", str(pairs),
                      env={"NLPFORGE_BLOCK_PLUGINS": "sentence-similarity"})
    assert blocked.returncode != 0 and "Traceback" not in blocked.stderr
    assert ("needs task 'sentence-similarity' from the plugin distribution "
            "nlpforge-sentence-similarity 0.1.0, which is installed but disabled here") \
        in blocked.stderr
    assert "pip install 'nlpforge-sentence-similarity>=0.1,<0.2'" in blocked.stderr
    manager = PluginManager(entry_points=[], env={})
    from nlpforge import plugins as registry
    from nlpforge.manifest import read_manifest, task_from_manifest

    previous = registry._manager
    registry.reset_plugin_manager(manager)
    try:
        with pytest.raises(PluginError, match=r"which is not available \(unknown task "
                                              r"'sentence-similarity'.*Run: pip install "
                                              r"'nlpforge-sentence-similarity>=0.1,<0.2'"):
            task_from_manifest(read_manifest(similarity.export_dir), "exp")
    finally:
        registry.reset_plugin_manager(previous)
