"""pytest plugin for task-plugin authors, registered through the ``pytest11`` entry point.

Fixtures (all prefixed ``nlpforge_`` so they never shadow a project's own):

- ``nlpforge_tiny_models``: tiny base models built once per session, by name
  (``.get("bert")``) or family (``.for_family("encoder")``);
- ``nlpforge_tiny_bert``, ``nlpforge_tiny_gpt2``, ``nlpforge_tiny_llama``, ``nlpforge_tiny_t5``,
  ``nlpforge_tiny_bart``: the directory of one tiny model (skipped, with the reason, where this
  nlpforge cannot build it);
- ``nlpforge_tokenizer``: a runtime ``Tokenizer`` (BERT-style WordPiece, 64 tokens) built in
  memory without transformers;
- ``nlpforge_plugins``: ``nlpforge_plugins.register(TaskClass or module)`` makes a plugin known
  for this test only; the previous plugin manager comes back afterwards, pass or fail;
- ``nlpforge_check_task``: ``check_task`` with the session's tiny model and the test's
  ``tmp_path``: ``nlpforge_check_task(MyTask, rows)`` proves train → export → validation →
  torch-free prediction → PyTorch parity in one line.

This module is loaded by every pytest run where nlpforge is installed: it imports nothing
heavy (no torch, no transformers, not even nlpforge) at module level and changes nothing
unless a test asks for one of its fixtures.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest


@pytest.fixture(scope="session")
def nlpforge_tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from nlpforge.testing.tiny import TinyModels

    return TinyModels(tmp_path_factory.mktemp("nlpforge-tiny"))


def _tiny(models: Any, name: str) -> Any:
    from nlpforge.testing.tiny import TinyModelUnavailable

    try:
        return models.get(name)
    except TinyModelUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def nlpforge_tiny_bert(nlpforge_tiny_models: Any) -> Any:
    return _tiny(nlpforge_tiny_models, "bert")


@pytest.fixture(scope="session")
def nlpforge_tiny_gpt2(nlpforge_tiny_models: Any) -> Any:
    return _tiny(nlpforge_tiny_models, "gpt2")


@pytest.fixture(scope="session")
def nlpforge_tiny_llama(nlpforge_tiny_models: Any) -> Any:
    return _tiny(nlpforge_tiny_models, "llama")


@pytest.fixture(scope="session")
def nlpforge_tiny_t5(nlpforge_tiny_models: Any) -> Any:
    return _tiny(nlpforge_tiny_models, "t5")


@pytest.fixture(scope="session")
def nlpforge_tiny_bart(nlpforge_tiny_models: Any) -> Any:
    return _tiny(nlpforge_tiny_models, "bart")


@pytest.fixture(scope="session")
def nlpforge_tokenizer() -> Any:
    from nlpforge.testing.tiny import wordpiece_tokenizer

    return wordpiece_tokenizer(max_length=64)


@pytest.fixture
def nlpforge_plugins() -> Any:
    from nlpforge.testing.registry import PluginRegistrar

    registrar = PluginRegistrar()
    try:
        yield registrar
    finally:
        registrar.close()


@pytest.fixture
def nlpforge_check_task(nlpforge_tiny_models: Any, tmp_path: Any) -> Callable[..., Any]:
    from nlpforge.testing.contract import check_task
    from nlpforge.testing.tiny import TinyModelUnavailable

    count = iter(range(1_000_000))

    def check(task: Any, rows: Any, requests: Any = None, **kwargs: Any) -> Any:
        if "base" not in kwargs:
            family = _family(task)
            try:
                kwargs["base"] = nlpforge_tiny_models.for_family(family)
            except TinyModelUnavailable as exc:
                pytest.skip(str(exc))
        kwargs.setdefault("workdir", tmp_path / f"contract-{next(count)}")
        return check_task(task, rows, requests, **kwargs)

    return check


def _family(task: Any) -> str:
    if isinstance(task, str):
        from nlpforge.plugins import get_plugin_manager

        task = get_plugin_manager().get_task(task)
    return task.family.value
