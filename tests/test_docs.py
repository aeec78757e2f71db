"""The docs that describe the code are kept true by tests."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

from nlpforge import hookspecs

ROOT = Path(__file__).resolve().parent.parent


def test_cli_reference_is_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_cli_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_hook_is_documented_with_its_signature():
    guide = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [name for name, f in inspect.getmembers(hookspecs, inspect.isfunction)
             if hasattr(f, "nlpforge_spec")]
    assert hooks == ["register_commands", "register_tasks"]
    for name in hooks:
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"### `{name}({params})`" in guide, name
        assert getattr(hookspecs, name).__doc__.strip()


def test_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    head = readme[:1500]
    assert "bash tools/quickstart.sh" in head and "bash tools/test.sh" in head
    assert "bash tools/test.sh" in (ROOT / ".ci" / "run").read_text()
