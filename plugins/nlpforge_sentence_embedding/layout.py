"""sentence-transformers' files in a model folder: read (what a checkpoint pools and whether it
normalizes) and written (so a run dir also loads with ``SentenceTransformer(run_dir)``).

``modules.json`` lists the modules applied after the transformer; ``1_Pooling/config.json``
says how token states become one vector (the legacy ``pooling_mode_*_token`` booleans or
the ``pooling_mode`` of recent releases); ``sentence_bert_config.json`` may hold
``max_seq_length``. Torch-free: ``from_pretrained_config`` and ``checkpoint_match`` run here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlpforge import ModelDirError, UsageError

MODULES = "modules.json"
POOLING_DIR = "1_Pooling"
NORMALIZE_DIR = "2_Normalize"
ST_CONFIG = "sentence_bert_config.json"
#: nlpforge's pooling names → sentence-transformers' ``pooling_mode`` names.
POOLINGS = {"mean": "mean", "cls": "cls", "last-token": "lasttoken", "max": "max"}
#: The legacy boolean keys of ``1_Pooling/config.json`` → sentence-transformers' mode names.
LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclass(frozen=True)
class Layout:
    """What a sentence-transformers folder declares: the pooling (nlpforge's name), whether a
    ``Normalize`` module follows, and ``max_seq_length`` (None when not given)."""

    pooling: str
    normalize: bool
    max_seq_length: int | None


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelDirError(f"{path}: cannot read: {exc}")


def module_kind(module: dict) -> str:
    """``Pooling`` for ``sentence_transformers.models.Pooling`` or
    ``sentence_transformers.sentence_transformer.modules.pooling.Pooling``."""
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def read_modules(directory: Path) -> list[dict] | None:
    """The entries of ``modules.json``, or None when the folder has none."""
    path = Path(directory) / MODULES
    if not path.is_file():
        return None
    modules = _read(path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ModelDirError(f"{path}: expected a list of modules")
    return sorted(modules, key=lambda m: int(m.get("idx", 0)))


def has_pooling(directory: Path) -> bool:
    """Whether the folder is a sentence-transformers model with a Pooling module."""
    try:
        modules = read_modules(directory)
    except ModelDirError:
        return False
    return bool(modules) and any(module_kind(m) == "Pooling" for m in modules)


def read_layout(directory: Path) -> Layout | None:
    """The pooling, normalization and max length of a sentence-transformers folder, or None
    when it has no ``modules.json``. Raises UsageError for a module or pooling mode nlpforge
    does not export (a Dense projection, weighted-mean pooling, several modes at once)."""
    directory = Path(directory)
    modules = read_modules(directory)
    if modules is None:
        return None
    where = directory / MODULES
    pooling, normalize = None, False
    for i, module in enumerate(modules):
        kind = module_kind(module)
        if kind == "Transformer":
            if i != 0 or module.get("path", "") not in ("", "."):
                raise UsageError(f"{where}: the Transformer module must be the first, at the "
                                 f"folder's root (found path {module.get('path')!r})")
        elif kind == "Pooling":
            pooling = read_pooling(directory / str(module.get("path") or POOLING_DIR))
        elif kind == "Normalize":
            normalize = True
        else:
            raise UsageError(f"{where}: module {module.get('name', i)!r} ({module.get('type')}) "
                             f"is not supported by the sentence-embedding task (it exports "
                             f"Transformer, Pooling and Normalize modules)")
    if pooling is None:
        raise UsageError(f"{where}: no Pooling module; sentence-embedding needs one")
    return Layout(pooling, normalize, read_max_seq_length(directory))


def read_pooling(folder: Path) -> str:
    """nlpforge's pooling name from a Pooling module's ``config.json``."""
    path = folder / "config.json"
    if not path.is_file():
        raise ModelDirError(f"{folder}: the Pooling module has no config.json")
    config = _read(path)
    if not isinstance(config, dict):
        raise ModelDirError(f"{path}: expected a JSON object")
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [name for key, name in LEGACY_KEYS.items() if config.get(key)]
    else:
        modes = [mode] if isinstance(mode, str) else list(mode)
    if len(modes) != 1:
        raise UsageError(f"{path}: field 'pooling_mode': {len(modes)} pooling modes "
                         f"({', '.join(map(str, modes)) or 'none'}); sentence-embedding "
                         f"exports exactly one")
    names = {st: ours for ours, st in POOLINGS.items()}
    if modes[0] not in names:
        raise UsageError(f"{path}: field 'pooling_mode': {modes[0]!r} is not supported "
                         f"(supported: {', '.join(POOLINGS.values())})")
    return names[modes[0]]


def read_max_seq_length(directory: Path) -> int | None:
    """``max_seq_length`` of ``sentence_bert_config.json``, or None."""
    path = Path(directory) / ST_CONFIG
    if not path.is_file():
        return None
    config = _read(path)
    value = config.get("max_seq_length") if isinstance(config, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else None


def write_layout(directory: Path, pooling: str, normalize: bool, dimension: int,
                 max_seq_length: int | None) -> None:
    """The sentence-transformers files of a model saved at ``directory`` (its transformer's
    config.json and weights already there), in the legacy format every sentence-transformers
    release since 2.x reads."""
    directory = Path(directory)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": POOLING_DIR,
         "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": NORMALIZE_DIR,
                        "type": "sentence_transformers.models.Normalize"})
        (directory / NORMALIZE_DIR).mkdir(exist_ok=True)
    _write(directory / MODULES, modules)
    (directory / POOLING_DIR).mkdir(exist_ok=True)
    pooling_config: dict[str, Any] = {"word_embedding_dimension": int(dimension)}
    for key, mode in LEGACY_KEYS.items():
        pooling_config[key] = mode == POOLINGS[pooling]
    _write(directory / POOLING_DIR / "config.json", pooling_config)
    if max_seq_length:
        _write(directory / ST_CONFIG, {"max_seq_length": int(max_seq_length),
                                       "do_lower_case": False})


def _write(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
