"""nlpforge.json: what a run dir or export dir is, and what it needs to run.

Schema version 1::

    {
      "schema_version": 1,
      "kind": "run" | "export",
      "task": {"id": str, "version": int, "state": {...}},
      "plugin": {"name": str, "distribution": str, "version": str, "requires": str},
      "nlpforge": {"version": str, "requires": str},
      "family": "encoder" | "decoder" | "encoder-decoder",
      "base_model": str,
      "tokenizer": {"max_length": int, "pad_id": int},
      "io": {"inputs": [...], "outputs": [...], "dynamic_axes": {...}},   # exports
      "opset": int, "validation": {...},                                   # exports
      "metrics": {...}, "training": {...}, "provenance": {...}
    }
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from nlpforge.errors import ManifestError, PluginError
from nlpforge.families import FAMILIES
from nlpforge.version import __version__

MANIFEST_NAME = "nlpforge.json"
SCHEMA_VERSION = 1
KINDS = ("run", "export")

_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "kind": str,
    "task": dict,
    "plugin": dict,
    "nlpforge": dict,
    "family": str,
    "tokenizer": dict,
}


def compatible_range(version: str) -> str:
    """The range of releases that can read what ``version`` wrote: same major (0.x: same minor)."""
    v = Version(version)
    if v.major == 0:
        return f">={v.major}.{v.minor},<{v.major}.{v.minor + 1}"
    return f">={v.major}.{v.minor},<{v.major + 1}"


def validate(data: Any, where: str) -> dict[str, Any]:
    """Check the structure of a manifest; raise ManifestError naming the field."""
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected a JSON object")
    version = data.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise ManifestError(f"{where}: schema version {version} is newer than this nlpforge "
                            f"understands ({SCHEMA_VERSION}); upgrade nlpforge")
    for key, kind in _REQUIRED.items():
        if key not in data:
            raise ManifestError(f"{where}: missing field '{key}'")
        if not isinstance(data[key], kind):
            raise ManifestError(f"{where}: field '{key}' has the wrong type")
    if data["kind"] not in KINDS:
        raise ManifestError(f"{where}: field 'kind' must be one of {', '.join(KINDS)}")
    if data["family"] not in FAMILIES:
        raise ManifestError(f"{where}: field 'family' must be one of {', '.join(FAMILIES)}")
    for key, sub in (("task", ("id", "version")), ("plugin", ("distribution", "requires")),
                     ("nlpforge", ("version", "requires")), ("tokenizer", ("max_length",))):
        for name in sub:
            if name not in data[key]:
                raise ManifestError(f"{where}: missing field '{key}.{name}'")
    for key in ("plugin", "nlpforge"):
        try:
            SpecifierSet(data[key]["requires"])
        except InvalidSpecifier:
            raise ManifestError(f"{where}: field '{key}.requires' is not a version range: "
                                f"{data[key]['requires']!r}")
    if data["kind"] == "export" and not isinstance(data.get("io"), dict):
        raise ManifestError(f"{where}: an export manifest needs the field 'io'")
    return data


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``DIR/nlpforge.json``."""
    directory = Path(directory)
    if not directory.exists():
        raise ManifestError(f"{directory}: no such directory")
    if not directory.is_dir():
        raise ManifestError(f"{directory}: not a directory")
    path = directory / MANIFEST_NAME
    if not path.is_file() and (directory / "train_config.json").is_file():
        raise ManifestError(f"{directory}: training has not finished (no {MANIFEST_NAME}); "
                            f"continue it with: nlpforge train --resume --output {directory}")
    if not path.is_file():
        raise ManifestError(f"{directory}: no {MANIFEST_NAME}; this is not an nlpforge run or "
                            f"export dir (make one with 'nlpforge train' or 'nlpforge export')")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read: {exc}")
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}:{exc.lineno}: corrupt JSON: {exc.msg}")
    data = validate(data, str(path))
    running = Version(__version__)
    if running not in SpecifierSet(data["nlpforge"]["requires"]):
        raise ManifestError(f"{path}: written by nlpforge {data['nlpforge']['version']} and needs "
                            f"nlpforge{data['nlpforge']['requires']}; this is {__version__}. "
                            f"Run: pip install 'nlpforge{data['nlpforge']['requires']}'")
    return data


def write_manifest(directory: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Validate and write ``DIR/nlpforge.json``."""
    validate(data, f"{directory}/{MANIFEST_NAME}")
    path = Path(directory) / MANIFEST_NAME
    tmp = path.with_name(f".{MANIFEST_NAME}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # the manifest appears whole: its presence marks a finished dir
    return path


def new_manifest(kind: str, task: Any, plugin: Any, tokenizer: dict[str, Any],
                 **fields: Any) -> dict[str, Any]:
    """A manifest for ``task`` (a Task instance) provided by ``plugin`` (a PluginInfo)."""
    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "task": {"id": task.id, "version": task.version, "state": task.state()},
        "plugin": {"name": plugin.name, "distribution": plugin.distribution,
                   "version": plugin.version, "requires": _plugin_range(plugin.version)},
        "nlpforge": {"version": __version__, "requires": compatible_range(__version__)},
        "family": task.family.value,
        "tokenizer": tokenizer,
    }
    data.update(fields)
    return data


def _plugin_range(version: str) -> str:
    try:
        return compatible_range(version)
    except Exception:
        return ""


def task_from_manifest(data: dict[str, Any], where: str) -> Any:
    """Rebuild the Task instance a manifest describes; explain what to install when missing."""
    from nlpforge.plugins import get_plugin_manager

    manager = get_plugin_manager()
    task_id = data["task"]["id"]
    plugin = data["plugin"]
    need = f"{plugin['distribution']}{plugin['requires']}"
    try:
        cls = manager.get_task(task_id)
    except PluginError as exc:
        state = next((p for p in manager.plugins if p.distribution == plugin["distribution"]
                      and p.status != "loaded"), None)
        why = f"which is not available ({exc}). Run: pip install '{need}'"
        if state is not None and state.status == "failed":
            why = f"which is installed ({state.version}) but failed: {state.error}"
            if "pip install" not in why:
                why += f". Run: pip install --force-reinstall '{need}'"
        elif state is not None:
            why = (f"which is installed but disabled here (NLPFORGE_BLOCK_PLUGINS or "
                   f"NLPFORGE_LOAD_PLUGINS excludes '{state.name}'): allow it; where it is "
                   f"not installed, run: pip install '{need}'")
        raise PluginError(f"{where}: needs task '{task_id}' from the plugin distribution "
                          f"{plugin['distribution']} {plugin.get('version', '')}, {why}")
    info = manager.plugin_of(task_id)
    if plugin["requires"] and info.version != "unknown":
        try:
            ok = Version(info.version) in SpecifierSet(plugin["requires"])
        except Exception:
            ok = True
        if not ok:
            raise PluginError(f"{where}: was made with {plugin['distribution']} "
                              f"{plugin['version']}; installed is {info.distribution} "
                              f"{info.version}. Run: pip install '{need}'")
    if data["task"]["version"] > cls.version:
        raise PluginError(f"{where}: task '{task_id}' version {data['task']['version']} is newer "
                          f"than the installed plugin's ({cls.version}). Run: pip install -U "
                          f"'{plugin['distribution']}'")
    return cls.from_state(data["task"].get("state", {}))
