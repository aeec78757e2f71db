"""nlpforge.json: what a run dir or export dir is, and what it needs to run.

``Manifest`` below is the schema (version 1), one documented field at a time; the file is that
record as JSON. ``read_manifest`` validates and returns it, ``write_manifest`` writes it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypedDict

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from nlpforge.errors import ManifestError, ModelDirError, PluginError
from nlpforge.families import FAMILIES
from nlpforge.version import __version__

class TaskRecord(TypedDict):
    #: The task id (``Task.id``) that the plugin registers.
    id: str
    #: ``Task.version`` when the dir was made; a newer one than installed is refused.
    version: int
    #: ``Task.state()``: labels and options, what ``Task.from_state`` rebuilds the task from.
    state: dict[str, Any]


class PluginRecord(TypedDict):
    #: The entry-point name of the plugin that provided the task.
    name: str
    #: Its distribution, and that distribution's version.
    distribution: str
    version: str
    #: The releases of that distribution that can run this dir (``>=0.1,<0.2``).
    requires: str


class NlpforgeRecord(TypedDict):
    #: The nlpforge that wrote the dir, and the releases that can read it.
    version: str
    requires: str


class TokenizerRecord(TypedDict, total=False):
    #: Tokens per row (longer inputs are cut or refused), and the padding token's id.
    max_length: int
    pad_id: int


class Manifest(TypedDict, total=False):
    """``nlpforge.json`` of a run dir (``kind == "run"``) or export dir (``"export"``)."""

    #: The schema version (1); a newer one than this nlpforge knows is refused.
    schema_version: int
    #: ``"run"`` (written by ``nlpforge train``) or ``"export"`` (``nlpforge export``).
    kind: str
    task: TaskRecord
    plugin: PluginRecord
    nlpforge: NlpforgeRecord
    #: The model family (``nlpforge.families``): encoder, decoder, encoder-decoder.
    family: str
    tokenizer: TokenizerRecord
    #: The base checkpoint training started from (path or hub id).
    base_model: str
    #: The token features the model's forward takes (input_ids, attention_mask, …).
    model_inputs: list[str]
    #: A checkpoint trained elsewhere (``nlpforge export CHECKPOINT``): ``kind``
    #: ("checkpoint"), ``model`` as given, its ``path``, the ``hub_id`` and ``revision``
    #: downloaded, and ``trust_remote_code``. Absent for a dir that nlpforge trained.
    source: dict[str, Any]
    #: The best evaluation's metrics (empty without validation data).
    metrics: dict[str, Any]
    #: The resolved training settings, the steps run and the best step (None: imported).
    training: dict[str, Any] | None
    #: When and with what it was made: versions, files, process count; exports add
    #: ``exported`` and ``torch_export``.
    provenance: dict[str, Any]
    # -- exports only ---------------------------------------------------------------------
    #: The graphs' files and interfaces: encoders ``model``, ``inputs``, ``outputs``,
    #: ``dynamic_axes``; generative exports also the cache layout (``num_layers``, heads, …)
    #: and, for encoder-decoders, ``encoder``/``decoder``/``decoder_with_past``.
    io: dict[str, Any]
    #: The ONNX opset the graphs use.
    opset: int
    #: Which torch.onnx exporter wrote each graph (generative exports).
    exporter: Any
    #: The fp32 graphs against PyTorch: tolerance, max abs diff per output, shapes, verdict.
    validation: dict[str, Any]
    #: Variant name (fp32, optimized, int8, fp16) → its ``file``, ``files``, ``precision``
    #: and ``validation`` (a report, or the name of the field that holds it).
    variants: dict[str, dict[str, Any]]
    #: The variant ``nlpforge.load`` runs unless told otherwise (or tuned on this CPU).
    default_variant: str
    #: Generative exports with ``--optimize``: fp32 and optimized generation timed in turns on
    #: the machine that exported (``seconds``, ``workload``, ``cpu``); the faster is the default.
    default_choice: dict[str, Any]
    #: ``--optimize``: the level and passes applied, or None.
    optimization: dict[str, Any] | None
    #: ``--quantize``: the method, its validation and the task-metric quality gate, or None.
    quantization: dict[str, Any] | None
    #: ``nlpforge tune`` (or ``--optimize auto``): the CPU fingerprint it measured on, the
    #: ``tuned`` variant's candidate and session settings, its speed-up over fp32, every
    #: candidate's timings and checks. ``nlpforge.load`` runs ``tuned`` on that CPU only.
    tuning: dict[str, Any]
    #: The run dir (or checkpoint dir) the export was made from.
    source_run: str
    #: How long the export took.
    export_seconds: float
    #: ``--format triton``: the model repository entry written.
    triton: dict[str, Any]


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


def validate(data: Any, where: str) -> Manifest:
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


#: What to do when a dir is not of the kind a command needs.
_MAKE_KIND = {"export": "make an export dir first with 'nlpforge export {dir} --output DIR'",
              "run": "a run dir is what 'nlpforge train' writes"}


def read_manifest(directory: str | os.PathLike, kind: str | None = None) -> Manifest:
    """Read and validate ``DIR/nlpforge.json``; ``kind``: the dir must be a ``run`` or an
    ``export`` dir (ModelDirError otherwise)."""
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
    if kind is not None and data["kind"] != kind:
        raise ModelDirError(f"{directory}: this is {'an' if data['kind'] == 'export' else 'a'} "
                            f"{data['kind']} dir, not {'an' if kind == 'export' else 'a'} {kind} "
                            f"dir; {_MAKE_KIND[kind].format(dir=directory)}")
    return data


def write_manifest(directory: str | os.PathLike, data: Manifest) -> Path:
    """Validate and write ``DIR/nlpforge.json``."""
    validate(data, f"{directory}/{MANIFEST_NAME}")
    path = Path(directory) / MANIFEST_NAME
    tmp = path.with_name(f".{MANIFEST_NAME}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # the manifest appears whole: its presence marks a finished dir
    return path


def new_manifest(kind: str, task: Any, plugin: Any, tokenizer: TokenizerRecord,
                 **fields: Any) -> Manifest:
    """A manifest for ``task`` (a Task instance) provided by ``plugin`` (a PluginInfo)."""
    data: Manifest = {
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


def task_from_manifest(data: Manifest, where: str) -> Any:
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
        if plugin["distribution"].startswith("local:"):  # trained from Python, unregistered
            why = (f"which is not registered here ({exc}): register the task class first "
                   f"(a plugin's entry point, or PluginManager.register in the process)")
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
