"""``nlpforge new-plugin``: a ready-to-install task plugin distribution from templates.

The project it writes installs with pip, is listed by ``nlpforge tasks``, and its own tests
pass out of the box (they use ``nlpforge.testing``). Templates are ``string.Template`` files in
``templates/`` (``$name`` placeholders: Python code needs no escaping). No torch here.
"""

from __future__ import annotations

import keyword
import os
import re
from pathlib import Path
from string import Template

from nlpforge.version import __version__
from nlpforge.atomic import atomic_dir
from nlpforge.errors import UsageError

TEMPLATES = Path(__file__).resolve().parent / "templates"
NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
PREFIX = "nlpforge-"


def names_for(name: str) -> dict[str, str]:
    """The names a plugin called ``name`` gets: distribution, module, task id, class."""
    task_id = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if not NAME.fullmatch(task_id) or len(task_id) > 64:
        raise UsageError(f"plugin name {name!r}: use lower-case letters, digits and single "
                         f"dashes, starting with a letter (e.g. 'review-rating')")
    module = "nlpforge_" + task_id.replace("-", "_")
    class_name = "".join(part.capitalize() for part in task_id.split("-"))
    if keyword.iskeyword(class_name):
        class_name += "Task"
    return {"dist": PREFIX + task_id, "module": module, "task_id": task_id,
            "class_name": class_name}


def create_plugin(name: str, output: str | os.PathLike = ".", description: str | None = None,
                  overwrite: bool = False, check_installed: bool = True) -> Path:
    """Write the plugin project ``OUTPUT/nlpforge-NAME``; returns its path."""
    from nlpforge.hookspecs import PLUGIN_API_VERSION
    from nlpforge.manifest import compatible_range

    values = names_for(name)
    description = description or f"The {values['task_id']} task for nlpforge"
    if any(c in description for c in '"\\$\n\r') or len(description) > 200:
        raise UsageError("--description: one line of at most 200 characters, without "
                         "quotes, backslashes or '$'")
    if check_installed:
        _refuse_taken_names(values)
    values.update(description=description, api_version=str(PLUGIN_API_VERSION),
                  nlpforge_range=compatible_range(__version__))
    target = Path(output) / values["dist"]
    files = {
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        ".gitignore": "gitignore.tmpl",
        f"src/{values['module']}/__init__.py": "task.py.tmpl",
        f"tests/test_{values['module']}.py": "test_task.py.tmpl",
        "examples/train.jsonl": "train.jsonl.tmpl",
    }
    with atomic_dir(target, overwrite) as root:
        for path, template in files.items():
            text = Template((TEMPLATES / template).read_text(encoding="utf-8"))
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text.substitute(values), encoding="utf-8")
    return target


def _refuse_taken_names(values: dict[str, str]) -> None:
    """Refuse a plugin whose task id, entry-point name, module or distribution is taken by an
    installed one (or its module by anything importable): the two could not both load."""
    import importlib.util

    from nlpforge.plugins import get_plugin_manager

    manager = get_plugin_manager()
    entry = manager.tasks.get(values["task_id"])
    if entry is not None:
        raise UsageError(f"task id '{values['task_id']}' is already provided by "
                         f"{entry.plugin.describe()}; choose another name")
    for plugin in manager.plugins:
        if values["task_id"] == plugin.name or values["dist"] == plugin.distribution \
                or values["module"] == plugin.module.split(":")[0].split(".")[0]:
            raise UsageError(f"the name '{values['task_id']}' is taken by the installed plugin "
                             f"{plugin.describe()} (module {plugin.module}); choose another name")
    if importlib.util.find_spec(values["module"]) is not None:
        raise UsageError(f"a module named {values['module']} is importable here already; "
                         f"choose another name")
