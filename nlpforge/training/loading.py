"""Loading base models, tokenizers and trained run dirs with errors users can act on."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from nlpforge.errors import ModelDirError
from nlpforge.manifest import read_manifest, task_from_manifest
from nlpforge.runtime.tokenizer import Tokenizer

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' info and 'newly initialized weights' notices while loading."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def _where(name: str) -> str:
    if os.path.isdir(name):
        return f"the directory {name}"
    if os.path.exists(name) or name.startswith((".", "/", "~")):
        return f"{name} (not a model directory)"
    return f"'{name}' (not a local directory; tried the Hugging Face Hub)"


def load_base_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as exc:
        raise ModelDirError(f"cannot load a tokenizer from {_where(name)}: {_first_line(exc)}")
    if not getattr(tokenizer, "is_fast", False):
        raise ModelDirError(f"{name}: nlpforge needs a fast tokenizer (tokenizer.json); this "
                            f"model only has a slow one")
    return tokenizer


def load_base_model(task: Any, name: str) -> Any:
    try:
        with quiet_transformers():
            return task.build_model(name)
    except Exception as exc:
        raise ModelDirError(f"cannot load the base model from {_where(name)}: {_first_line(exc)}")


def load_run(directory: str | os.PathLike) -> tuple[dict[str, Any], Any, Any, Tokenizer]:
    """A run dir's manifest, task, PyTorch model (eval mode) and tokenizer."""
    directory = Path(directory)
    manifest = read_manifest(directory, kind="run")
    missing = [n for n in ("config.json", "tokenizer.json") if not (directory / n).is_file()]
    if not any((directory / w).is_file() for w in WEIGHTS):
        missing.append("model weights (model.safetensors)")
    if missing:
        raise ModelDirError(f"{directory}: incomplete run dir, missing {', '.join(missing)}")
    task = task_from_manifest(manifest, str(directory))
    try:
        with quiet_transformers():
            model = task.load_model(str(directory))
    except Exception as exc:
        raise ModelDirError(f"{directory}: cannot load the trained model: {_first_line(exc)}")
    model.eval()
    tok = manifest["tokenizer"]
    tokenizer = Tokenizer.from_dir(directory, tok["max_length"], tok.get("pad_id"))
    return manifest, task, model, tokenizer


def torch_runner(task: Any, model: Any, inputs: list[str]):
    """A runner for ``predict_rows`` that calls the PyTorch model."""

    device = next(model.parameters()).device

    def run(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            # A feature the task does not make is not passed (GPT-2 takes token_type_ids,
            # which a text-generation task leaves out)
            out = task.forward(model, {k: torch.from_numpy(features[k]).to(device)
                                       for k in (*inputs, *task.forward_extras)
                                       if k in features})  # extras: seq2seq teacher forcing
        return {k: v.float().cpu().numpy() for k, v in out.items()}

    return run


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
