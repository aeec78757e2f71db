"""The docs that describe the code are kept true by tests."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

from nlpforge import hookspecs

ROOT = Path(__file__).resolve().parent.parent


def test_architecture_table_is_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_architectures.py"),
                             "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_cli_reference_is_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_cli_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _signature(function) -> str:
    params = []
    for p in inspect.signature(function).parameters.values():
        if p.name in ("self", "cls"):
            continue
        params.append(("**" if p.kind is p.VAR_KEYWORD else
                       "*" if p.kind is p.VAR_POSITIONAL else "") + p.name)
    return f"{function.__name__}({', '.join(params)})"


def test_every_hook_is_documented_with_its_signature_and_tested():
    guide = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [name for name, f in inspect.getmembers(hookspecs, inspect.isfunction)
             if hasattr(f, "nlpforge_spec")]
    assert hooks == ["register_commands", "register_tasks"]
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    for name in hooks:
        assert f"### `{_signature(getattr(hookspecs, name))}`" in guide, name
        assert getattr(hookspecs, name).__doc__.strip()
        assert f"def test_hook_{name}(" in tests, f"no test_hook_{name} test"
    assert f"plugin API version {hookspecs.PLUGIN_API_VERSION})" in guide


def test_every_task_member_is_documented_with_its_signature():
    from nlpforge.tasks import Task

    guide = (ROOT / "docs" / "plugins.md").read_text()
    members = [f for name, f in inspect.getmembers(Task, callable)
               if not name.startswith("_") and name != "check_class"]
    assert len(members) >= 16
    for function in members:
        assert f"`{_signature(function)}`" in guide, _signature(function)
    declared = [name for name in Task.__annotations__ if not name.startswith("_")]
    assert {"splits_rows", "evaluate_by", "forward_extras", "family"} <= set(declared)
    for name in declared:
        assert f"`{name}`" in guide, name


def test_every_tokenizer_member_is_documented_with_its_signature():
    from nlpforge import Tokenizer
    from nlpforge.testing import wordpiece_tokenizer

    section = (ROOT / "docs" / "plugins.md").read_text().split("### The tokenizer", 1)[1]
    section = section.split("\n## ", 1)[0]
    methods = [f for name, f in inspect.getmembers(Tokenizer, callable)
               if not name.startswith("_")]
    assert {"encode", "decode_batch", "token_to_id", "special_token_id", "special_ids",
            "num_special_tokens"} <= {f.__name__ for f in methods}
    for function in methods:
        assert f"`{_signature(function)}`" in section, _signature(function)
    properties = [name for name, _ in inspect.getmembers(Tokenizer, inspect.isdatadescriptor)
                  if not name.startswith("_")]
    attributes = [name for name in vars(wordpiece_tokenizer()) if not name.startswith("_")]
    assert {"mask_token", "vocab_size"} <= set(properties)
    assert {"backend", "max_length", "pad_id", "special_tokens"} <= set(attributes)
    for name in properties + attributes:
        assert f"`{name}`" in section, name


def test_every_export_of_nlpforge_is_documented():
    import nlpforge

    reference = (ROOT / "docs" / "plugins.md").read_text()
    section = reference.split("### What `nlpforge` exports", 1)[1].split("\n### ", 1)[0]
    for name in nlpforge.__all__:
        if name != "__version__":
            assert f"`{name}`" in section or f"`{name}(" in section, name


def test_plugins_import_nlpforge_from_its_public_names_only():
    """What plugins.md says: a plugin imports ``nlpforge`` and ``nlpforge.metrics``, nothing
    deeper (the built-in plugins, the example plugins and the new-plugin template)."""
    import re

    allowed = {"nlpforge", "nlpforge.metrics"}
    files = [*(ROOT / "plugins").rglob("*.py"),
             *(ROOT / "tests" / "plugins").glob("*/nlpforge_*/*.py"),
             ROOT / "nlpforge" / "scaffold" / "templates" / "task.py.tmpl"]
    assert len(files) > 20
    module = r"(nlpforge(?:\.\w+)*)"
    imports = re.compile(rf"^\s*(?:from\s+{module}\s+import|import\s+{module})", re.M)
    found = [f"{path.relative_to(ROOT)}: {name}"
             for path in files
             for match in imports.finditer(path.read_text(encoding="utf-8"))
             for name in [match.group(1) or match.group(2)]
             if name not in allowed]
    assert not found, "\n".join(found)


def test_plugin_guide_states_the_api_version_fixtures_and_manifest():
    from nlpforge.manifest import _REQUIRED
    from nlpforge.testing import pytest_plugin

    guide = (ROOT / "docs" / "plugin-guide.md").read_text()
    reference = (ROOT / "docs" / "plugins.md").read_text()
    assert f"plugin API version is {hookspecs.PLUGIN_API_VERSION}**" in guide
    assert f"NLPFORGE_PLUGIN_API = {hookspecs.PLUGIN_API_VERSION}" in guide
    for key in _REQUIRED:
        assert f'"{key}"' in guide, key
    fixtures = [name for name in dir(pytest_plugin) if name.startswith("nlpforge_")]
    assert len(fixtures) >= 8
    for name in fixtures:
        assert f"`{name}`" in reference, name


def test_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    head = readme[:1500]
    assert "bash tools/quickstart.sh" in head and "bash tools/test.sh" in head
    assert "bash tools/test.sh" in (ROOT / ".ci" / "run").read_text()
