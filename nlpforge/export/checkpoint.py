"""Checkpoints trained anywhere: a local ``save_pretrained`` dir or a Hub id → the task, labels,
tokenizer and model ``nlpforge export`` needs, without training.

``read_checkpoint`` finds the files (downloading a Hub id through ``huggingface_hub`` like
``from_pretrained`` does), reads ``config.json``, picks the task (``--task``, else each
installed task's ``checkpoint_match``), builds it with the task's ``from_pretrained_config`` and
loads the tokenizer — everything ``nlpforge inspect`` prints, with no weights loaded.
``export_model`` then loads the model, refuses a head whose weights the checkpoint lacks, and
hands a run-like view of the checkpoint to the family's exporter: the export is made, validated
and written exactly as one of a trained run, and its manifest says where the model came from.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator

from nlpforge.errors import ModelDirError, NlpforgeError, PluginError, UsageError
from nlpforge.json_files import read_json_object
from nlpforge.manifest import MANIFEST_NAME, Manifest, new_manifest
from nlpforge.runtime.tokenizer import Tokenizer

#: Files a tokenizer.json can be built from (transformers converts them to a fast tokenizer).
SLOW_TOKENIZER_FILES = ("vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                        "source.spm", "tokenizer.model")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
#: What a Hub download fetches: the config, tokenizer and PyTorch weights (not TF/Flax/ONNX).
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.spm", "*.jinja",
             "pytorch_model*.bin", "1_Pooling/*", "2_Normalize/*"]
#: Encoders whose position ids start after the padding id (RoBERTa's scheme): their
#: ``max_position_embeddings`` holds two more positions than a text may have tokens.
PADDING_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "mpnet",
                            "roberta-prelayernorm", "data2vec-text", "xmod", "ibert"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class Source:
    """Where the checkpoint's files are: ``path`` (local), and for a Hub id the ``hub_id`` and
    the ``revision`` (commit) downloaded."""

    model: str
    path: Path
    hub_id: str | None = None
    revision: str | None = None

    def record(self, trust_remote_code: bool) -> dict[str, Any]:
        return {"kind": "checkpoint", "model": self.model, "path": str(self.path),
                "hub_id": self.hub_id, "revision": self.revision,
                "trust_remote_code": trust_remote_code}


@dataclass
class Checkpoint:
    """A checkpoint read and understood: what ``nlpforge inspect`` prints and export uses."""

    source: Source
    config: dict[str, Any]
    task: Any
    task_reason: str
    candidates: dict[str, int]
    tokenizer: Tokenizer
    tokenizer_file: str  # "tokenizer.json", or the slow files it was built from
    trust_remote_code: bool = False
    #: The run-dir-like view of the checkpoint (links to its files, a built tokenizer.json).
    stage: Path = field(default_factory=Path)

    @property
    def architecture(self) -> str:
        return str((self.config.get("architectures") or ["?"])[0])

    def manifest(self, model_inputs: list[str]) -> Manifest:
        """The run-kind manifest the exporter reads (no training, no metrics)."""
        import torch
        import transformers

        from nlpforge.plugins import get_plugin_manager
        from nlpforge.version import __version__

        plugin = get_plugin_manager().plugin_of(self.task.id)
        return new_manifest(
            "run", self.task, plugin,
            {"max_length": self.tokenizer.max_length, "pad_id": self.tokenizer.pad_id},
            base_model=self.source.model, model_inputs=model_inputs, metrics={},
            training=None, source=self.source.record(self.trust_remote_code),
            provenance={"imported": True, "nlpforge": __version__, "torch": torch.__version__,
                        "transformers": transformers.__version__})


def resolve(model: str, revision: str | None = None) -> Source:
    """The local files of ``model``: a directory, or a Hub id downloaded (config, tokenizer
    and PyTorch weights only) into the Hugging Face cache."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelDirError(f"{model}: not a directory (a model is a folder with "
                                f"config.json, the weights and the tokenizer files)")
        if revision is not None:
            raise UsageError(f"--revision {revision}: {model} is a local directory; --revision "
                             f"picks a commit of a Hugging Face Hub model")
        return Source(model, path.absolute())
    if model.startswith((".", "/", "~")) or not _HUB_ID.match(model):
        raise ModelDirError(f"{model}: no such directory")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelDirError(f"{model}: no such directory (and huggingface_hub, which downloads "
                            f"Hub models, is not installed: pip install 'nlpforge[train]')")
    try:
        local = Path(snapshot_download(model, revision=revision, allow_patterns=HUB_FILES))
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise ModelDirError(f"{model}: no such directory, and it cannot be downloaded from the "
                            f"Hugging Face Hub: {type(exc).__name__}: {text[0] if text else ''}")
    commit = local.name if local.parent.name == "snapshots" else revision
    return Source(model, local, hub_id=model, revision=commit)


def read_config(path: Path) -> dict[str, Any]:
    if (path / MANIFEST_NAME).is_file():
        raise ModelDirError(f"{path}: an nlpforge dir; export it with nlpforge export")
    if not (path / "config.json").is_file():
        what = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
        raise ModelDirError(f"{path}: not a model directory: no config.json (it holds {what})")
    return read_json_object(path / "config.json", strict=True)


def remote_code(config: dict[str, Any]) -> str | None:
    """The custom code a config asks ``transformers`` to run, or None."""
    auto_map = config.get("auto_map")
    if isinstance(auto_map, dict) and auto_map:
        return ", ".join(sorted({str(v) if isinstance(v, str) else str(v[0])
                                 for v in auto_map.values()}))
    return None


def pick_task(config: dict[str, Any], path: Path, task: str | None) -> tuple[type, str,
                                                                             dict[str, int]]:
    """The task class for a checkpoint, why it was picked, and every task's match."""
    from nlpforge.plugins import get_plugin_manager

    manager = get_plugin_manager()
    tasks = {tid: entry.task for tid, entry in manager.tasks.items()}
    scores: dict[str, int] = {}
    for tid, cls in tasks.items():
        try:
            scores[tid] = int(cls.checkpoint_match(config, path))
        except Exception as exc:  # a broken plugin must not break the others' detection
            raise PluginError(f"task '{tid}': checkpoint_match failed on {path}: "
                              f"{type(exc).__name__}: {exc}")
    fits = sorted(t for t, s in scores.items() if s > 0)
    architecture = (config.get("architectures") or ["(none)"])[0]
    if task is not None:
        cls = manager.get_task(task)
        if scores.get(task, 0) == 0:
            raise UsageError(f"--task {task} does not fit {path}: its architecture "
                             f"{architecture} ({config.get('model_type')}) has no "
                             f"{'/'.join(cls.checkpoint_heads) or task} head; "
                             + (f"tasks that fit: {', '.join(fits)}" if fits else
                                "no installed task fits it"))
        return cls, "--task", scores
    best = max(scores.values(), default=0)
    winners = sorted(t for t, s in scores.items() if s == best and s > 0)
    if len(winners) == 1 and best == 2:
        return tasks[winners[0]], (f"detected: the best checkpoint_match for {architecture} "
                                   f"({config.get('model_type')}) and its files"), scores
    if len(winners) > 1:
        raise UsageError(f"{path}: {architecture} fits several tasks ({', '.join(winners)}); "
                         f"name one with --task")
    if winners:
        raise UsageError(f"{path}: {architecture} has no task head of its own; it can be "
                         f"exported as {' or '.join(fits)}: name one with --task")
    raise UsageError(f"{path}: no installed task exports the architecture {architecture} "
                     f"(model type {config.get('model_type')}); installed tasks: "
                     f"{', '.join(sorted(tasks))}. A task plugin adds heads through "
                     f"Task.checkpoint_heads (docs/plugin-guide.md)")


def max_length(config: dict[str, Any], path: Path, tokenizer_config: dict[str, Any],
               given: int | None) -> int:
    """Tokens per text: ``given``, else sentence-transformers' ``max_seq_length``, the
    tokenizer's ``model_max_length``, or the model's positions."""
    if given is not None:
        return given
    st = path / "sentence_bert_config.json"
    if st.is_file():
        value = read_json_object(st).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    value = tokenizer_config.get("model_max_length")
    if isinstance(value, (int, float)) and 0 < value <= 1_000_000:
        return int(value)
    positions = config.get("max_position_embeddings") or config.get("n_positions") \
        or config.get("n_ctx")
    if isinstance(positions, int) and positions > 0:
        if config.get("model_type") in PADDING_OFFSET_POSITIONS:
            positions -= 2
        return positions
    return 512


def _token_id(backend: Any, config: dict[str, Any], name: str) -> int | None:
    token = config.get(name)
    if isinstance(token, dict):
        token = token.get("content")
    return backend.token_to_id(token) if isinstance(token, str) else None


def _stage_tokenizer(path: Path, stage: Path) -> str:
    """Make sure ``stage`` has a tokenizer.json: the checkpoint's, or one transformers builds
    from the slow tokenizer's files. Returns which it is."""
    if (path / "tokenizer.json").is_file():
        return "tokenizer.json"
    slow = [n for n in SLOW_TOKENIZER_FILES if (path / n).is_file()]
    if not slow:
        raise ModelDirError(f"{path}: no tokenizer: tokenizer.json is missing (and none of "
                            f"{', '.join(SLOW_TOKENIZER_FILES)} to build it from)")
    from transformers import AutoTokenizer

    from nlpforge.training.loading import quiet_transformers

    try:
        with quiet_transformers():
            hf = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:
        raise ModelDirError(f"{path}: no tokenizer.json, and transformers cannot build one from "
                            f"{', '.join(slow)}: {type(exc).__name__}: {exc}")
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise ModelDirError(f"{path}: no tokenizer.json, and its {type(hf).__name__} has no fast "
                            f"version to build one from {', '.join(slow)}")
    target = stage / "tokenizer.json"
    if target.is_symlink():
        target.unlink()
    backend.save(str(target))
    return f"tokenizer.json built from {', '.join(slow)}"


def _tokenizer(path: Path, stage: Path, config: dict[str, Any],
               given_length: int | None) -> tuple[Tokenizer, str]:
    made_from = _stage_tokenizer(path, stage)
    tokenizer_config = read_json_object(path / "tokenizer_config.json") \
        if (path / "tokenizer_config.json").is_file() else {}
    length = max_length(config, path, tokenizer_config, given_length)
    probe = Tokenizer.from_dir(stage, length)
    backend = probe.backend
    pad = _token_id(backend, tokenizer_config, "pad_token")
    if pad is None and isinstance(config.get("pad_token_id"), int):
        pad = config["pad_token_id"]
    if pad is None:  # GPT-2-like: no pad token; padded positions are masked out
        eos = _token_id(backend, tokenizer_config, "eos_token")
        pad = eos if eos is not None else config.get("eos_token_id")
        pad = pad[0] if isinstance(pad, list) else pad
    return Tokenizer.from_dir(stage, length, int(pad) if pad is not None else None), made_from


def _stage(path: Path, stage: Path) -> None:
    """A run-dir-like view of the checkpoint: a link to each of its files and folders."""
    for item in path.iterdir():
        if item.name != MANIFEST_NAME and not item.name.startswith("."):
            (stage / item.name).symlink_to(item.absolute(), item.is_dir())


@contextmanager
def open_checkpoint(model: str, task: str | None = None, *, revision: str | None = None,
                    trust_remote_code: bool = False, max_length: int | None = None,
                    task_options: dict[str, Any] | None = None) -> Iterator[Checkpoint]:
    """Read a checkpoint (no weights loaded); the staged view lives as long as the context."""
    if max_length is not None and max_length < 2:
        raise UsageError(f"--max-length must be at least 2, got {max_length}")
    source = resolve(model, revision)
    config = read_config(source.path)
    code = remote_code(config)
    if code and not trust_remote_code:
        raise UsageError(f"{source.path}: the model runs its own code ({code}) from the "
                         f"checkpoint; read that code, then pass --trust-remote-code to run it")
    cls, reason, scores = pick_task(config, source.path, task)
    stage = Path(tempfile.mkdtemp(prefix="nlpforge-checkpoint-"))
    try:
        _stage(source.path, stage)
        tokenizer, made_from = _tokenizer(source.path, stage, config, max_length)
        try:
            built = cls.from_pretrained_config(config, tokenizer, source.path)
        except NlpforgeError:
            raise
        except Exception as exc:
            raise PluginError(f"task '{cls.id}' cannot read {source.path}: "
                              f"{type(exc).__name__}: {exc}")
        if task_options:  # through the task's own constructor, which checks them
            built = cls.from_state({**built.state(),
                                    "options": {**built.settings, **task_options}})
        if not any((source.path / w).is_file() for w in WEIGHT_FILES):
            raise ModelDirError(f"{source.path}: no weights (model.safetensors or "
                                f"pytorch_model.bin)")
        yield Checkpoint(source, config, built, reason, scores, tokenizer, made_from,
                         trust_remote_code, stage=stage)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def load_model(checkpoint: Checkpoint) -> Any:
    """The task's PyTorch model on the checkpoint (eval mode); ModelDirError when the
    checkpoint lacks weights the task's model needs (they would be random)."""
    from nlpforge.training.loading import quiet_transformers

    task, path = checkpoint.task, str(checkpoint.stage)
    kwargs = {"trust_remote_code": True} if checkpoint.trust_remote_code else {}
    try:
        with quiet_transformers(), _missing_weights() as missing:
            model = task.load_model(path, **kwargs)
    except TypeError as exc:
        if kwargs and "trust_remote_code" in str(exc):
            raise PluginError(f"task '{task.id}': its load_model takes no trust_remote_code; "
                              f"it cannot load a model that runs its own code")
        raise ModelDirError(f"{checkpoint.source.path}: cannot load the model as "
                            f"{task.id}: {type(exc).__name__}: {exc}")
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise ModelDirError(f"{checkpoint.source.path}: cannot load the model as {task.id}: "
                            f"{type(exc).__name__}: {text[0] if text else ''}")
    model.eval()
    for cls, keys in missing:
        if keys:
            shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            raise ModelDirError(
                f"{checkpoint.source.path}: its {checkpoint.architecture} has no weights for "
                f"the {cls} that task '{task.id}' loads ({shown}): exported, it would predict "
                f"with random weights. Fine-tune it first (nlpforge train --model "
                f"{checkpoint.source.model} --task {task.id} ...), or export it as the task "
                f"of its head")
    return model


@contextmanager
def _missing_weights() -> Iterator[list[tuple[str, list[str]]]]:
    """(model class, weights it needed that the checkpoint lacked) of each ``from_pretrained``
    inside the block, read from transformers' loading report (empty when a transformers
    release reports another way)."""
    from transformers import modeling_utils

    report = getattr(modeling_utils, "log_state_dict_report", None)
    found: list[tuple[str, list[str]]] = []
    if report is None:
        yield found
        return

    def record(*args: Any, **kwargs: Any) -> Any:
        model, info = kwargs.get("model"), kwargs.get("loading_info")
        if model is not None and hasattr(info, "missing_and_mismatched"):
            found.append((type(model).__name__, sorted(info.missing_and_mismatched())))
        return report(*args, **kwargs)

    modeling_utils.log_state_dict_report = record
    try:
        yield found
    finally:
        modeling_utils.log_state_dict_report = report
