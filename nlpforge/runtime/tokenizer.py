"""Tokenization with the ``tokenizers`` library only, shared by training and the runtime.

Training encodes through this class too, so the ids a model was trained on and the ids the
runtime feeds it come from one code path and one ``tokenizer.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tokenizers import Encoding
from tokenizers import Tokenizer as Backend

from nlpforge.errors import ModelDirError

FEATURES = ("input_ids", "attention_mask", "token_type_ids")


class Tokenizer:
    """A ``tokenizers.Tokenizer`` with nlpforge's padding and truncation.

    Fixed padding stored in ``tokenizer.json`` (some models pad every input to 128 tokens) is
    turned off: each batch is padded to its own longest row.
    """

    def __init__(self, backend: Backend, pad_id: int, max_length: int,
                 padding_side: str = "right"):
        self.backend = backend
        self.backend.no_padding()
        self.backend.enable_truncation(max_length, strategy="longest_first")
        self.pad_id = int(pad_id)
        self.max_length = int(max_length)
        self.padding_side = padding_side
        self._memo: dict | None = None  # see reuse()
        #: Special tokens by role (``mask_token``, ``cls_token``…) from tokenizer_config.json.
        self.special_tokens: dict[str, str] = {}
        #: The chat template (jinja2) of chat models, rendered by text-generation.
        self.chat_template: str | None = None

    @classmethod
    def from_dir(cls, directory: str | os.PathLike, max_length: int | None = None,
                 pad_id: int | None = None) -> "Tokenizer":
        """Load ``DIR/tokenizer.json``; the pad id comes from the argument or the dir's config."""
        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise ModelDirError(f"{directory}: no tokenizer.json (nlpforge needs a fast "
                                f"tokenizer saved by the tokenizers library)")
        try:
            backend = Backend.from_file(str(path))
        except Exception as exc:
            raise ModelDirError(f"{path}: cannot load tokenizer: {exc}")
        config = _read_json(directory / "tokenizer_config.json")
        if pad_id is None:
            pad_id = _pad_id(backend, config)
        if max_length is None:
            max_length = int(config.get("model_max_length", 512))
            max_length = max_length if 0 < max_length <= 100_000 else 512
        tokenizer = cls(backend, pad_id, max_length)
        tokenizer.special_tokens = _special_tokens(config)
        tokenizer.chat_template = _chat_template(directory, config)
        return tokenizer

    def encode(self, texts: Sequence[str] | Sequence[list[str]],
               pairs: Sequence[str] | None = None,
               is_pretokenized: bool = False) -> list[Encoding]:
        """Tokenize with special tokens, truncated to ``max_length`` (longest first for pairs).

        With ``is_pretokenized``, each text is a list of words (``Encoding.word_ids`` maps
        tokens back to them).
        """
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        memo = self._memo
        if memo is None:
            return self.backend.encode_batch(inputs, is_pretokenized=is_pretokenized)
        keys = [(is_pretokenized, _hashable(item)) for item in inputs]
        missing = [i for i, key in enumerate(keys) if key not in memo]
        if missing:
            encoded = self.backend.encode_batch([inputs[i] for i in missing],
                                                is_pretokenized=is_pretokenized)
            for i, encoding in zip(missing, encoded):
                memo[keys[i]] = encoding
        return [memo[key] for key in keys]

    @contextlib.contextmanager
    def reuse(self) -> Iterator[None]:
        """Within the block, ``encode`` answers inputs it has tokenized before from a memo,
        so that counting the tokens of rows and then encoding them in batches tokenizes each
        row once. The memo is dropped at the end of the outermost block."""
        outer = self._memo is None
        if outer:
            self._memo = {}
        try:
            yield
        finally:
            if outer:
                self._memo = None

    def encode_windows(self, texts: Sequence[str] | Sequence[list[str]],
                       pairs: Sequence[str] | None = None, *, stride: int,
                       is_pretokenized: bool = False) -> tuple[list[Encoding], list[int]]:
        """Tokenize inputs longer than ``max_length`` into overlapping windows.

        Each window holds at most ``max_length`` tokens (special tokens included) and repeats
        the last ``stride`` tokens of the window before it. With ``pairs``, only the second
        text (a QA context) is split; the first (the question) is in every window. Returns
        the windows and, for each, the index of the input it came from. Offsets and word ids
        of each window refer to the original input.
        """
        backend = self._window_backend(stride, "only_second" if pairs is not None
                                       else "longest_first")
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        windows: list[Encoding] = []
        owners: list[int] = []
        for i, encoding in enumerate(backend.encode_batch(inputs,
                                                          is_pretokenized=is_pretokenized)):
            for window in [encoding, *encoding.overflowing]:
                windows.append(window)
                owners.append(i)
        return windows, owners

    def _window_backend(self, stride: int, strategy: str) -> Backend:
        """A copy of the backend truncating with ``stride`` (the shared one stays as it is,
        so concurrent callers never see each other's settings)."""
        key = (stride, strategy)
        cache = self.__dict__.setdefault("_windows", {})
        if key not in cache:
            if not 0 <= stride < self.max_length // 2:
                raise ValueError(f"stride must be in [0, {self.max_length // 2}) for windows "
                                 f"of {self.max_length} tokens, got {stride}")
            backend = Backend.from_str(self.backend.to_str())
            backend.no_padding()
            backend.enable_truncation(self.max_length, stride=stride, strategy=strategy)
            cache[key] = backend
        return cache[key]

    def pad(self, encodings: Sequence[Encoding],
            names: Sequence[str] = FEATURES) -> dict[str, np.ndarray]:
        """Stack encodings into int64 arrays padded to the longest one."""
        length = max((len(e.ids) for e in encodings), default=0)
        batch = {name: np.zeros((len(encodings), length), dtype=np.int64) for name in names}
        if "input_ids" in batch:
            batch["input_ids"].fill(self.pad_id)
        for i, enc in enumerate(encodings):
            n = len(enc.ids)
            cols = slice(0, n) if self.padding_side == "right" else slice(length - n, length)
            if "input_ids" in batch:
                batch["input_ids"][i, cols] = enc.ids
            if "attention_mask" in batch:
                batch["attention_mask"][i, cols] = enc.attention_mask
            if "token_type_ids" in batch:
                batch["token_type_ids"][i, cols] = enc.type_ids
        return batch

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)


def _hashable(item: Any) -> Any:
    """A memo key for one input: a text, a (text, pair) tuple or a list of words."""
    if isinstance(item, list):
        return tuple(item)
    if isinstance(item, tuple):
        return tuple(_hashable(part) for part in item)
    return item


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelDirError(f"{path}: cannot read: {exc}")
    return data if isinstance(data, dict) else {}


def _chat_template(directory: Path, config: dict) -> str | None:
    """The chat template (jinja2 source): transformers 5 saves it to chat_template.jinja,
    older versions into tokenizer_config.json."""
    path = directory / "chat_template.jinja"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    template = config.get("chat_template")
    return template if isinstance(template, str) else None


def _special_tokens(config: dict) -> dict[str, str]:
    """``{"mask_token": "[MASK]", …}``: tasks that need a role's token (fill-mask) read it here."""
    out = {}
    for key, token in config.items():
        if isinstance(token, dict):
            token = token.get("content")
        if key.endswith("_token") and isinstance(token, str):
            out[key] = token
    return out


def _pad_id(backend: Backend, config: dict) -> int:
    token = config.get("pad_token")
    if isinstance(token, dict):
        token = token.get("content")
    if isinstance(token, str) and backend.token_to_id(token) is not None:
        return backend.token_to_id(token)
    padding = backend.padding
    if padding and padding.get("pad_id") is not None:
        return padding["pad_id"]
    return 0
