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
from nlpforge.runtime.truncation import Prefixes

FEATURES = ("input_ids", "attention_mask", "token_type_ids")


class Tokenizer:
    """The tokenizer a task receives (``nlpforge.Tokenizer``): a ``tokenizers.Tokenizer`` with
    nlpforge's padding and truncation, and the lookups tasks need (special tokens, vocabulary).

    Fixed padding stored in ``tokenizer.json`` (some models pad every input to 128 tokens) is
    turned off: each batch is padded to its own longest row. The members plugins use are
    listed in docs/plugins.md.
    """

    def __init__(self, backend: Backend, pad_id: int, max_length: int,
                 padding_side: str = "right"):
        #: The ``tokenizers.Tokenizer`` underneath, truncating to ``max_length``: for core and
        #: advanced use. Plugins use this class's methods, which keep its settings intact.
        self.backend = backend
        self.backend.no_padding()
        self.backend.enable_truncation(max_length, strategy="longest_first")
        #: The id that pads ``input_ids``.
        self.pad_id = int(pad_id)
        #: The most tokens ``encode`` returns for one input (special tokens included).
        self.max_length = int(max_length)
        #: ``"right"`` or ``"left"`` (generation pads prompts on the left).
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
               is_pretokenized: bool = False, *, add_special_tokens: bool = True,
               truncate: bool = True) -> list[Encoding]:
        """Tokenize with the model's special tokens, truncated to ``max_length`` (longest
        first for pairs).

        With ``is_pretokenized``, each text is a list of words (``Encoding.word_ids`` maps
        tokens back to them). ``add_special_tokens=False`` leaves out the special tokens
        (``[CLS]``, ``</s>``…); ``truncate=False`` keeps every token, for tasks that cut long
        texts themselves.

        Truncating, only a prefix of a long text is tokenized (``runtime/truncation.py``), so
        the cost of a text is bounded by ``max_length``, not by its size; the tokens kept are
        the whole text's (``Encoding.overflowing`` holds the rest of the prefix only).
        """
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        options = {"is_pretokenized": is_pretokenized, "add_special_tokens": add_special_tokens}
        memo = self._memo
        if memo is None:
            return self._encode_batch(inputs, truncate, options)
        keys = [(is_pretokenized, add_special_tokens, truncate, _hashable(item))
                for item in inputs]
        missing = [i for i, key in enumerate(keys) if key not in memo]
        if missing:
            encoded = self._encode_batch([inputs[i] for i in missing], truncate, options)
            for i, encoding in zip(missing, encoded):
                memo[keys[i]] = encoding
        return [memo[key] for key in keys]

    def _encode_batch(self, inputs: list, truncate: bool, options: dict) -> list[Encoding]:
        if not truncate:
            return self._untruncated_backend().encode_batch(inputs, **options)
        return self._prefixes().encode(self.backend, inputs, **options)

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
        cache = self.__dict__.setdefault("_copies", {})
        if key not in cache:
            if not 0 <= stride < self.max_length // 2:
                raise ValueError(f"stride must be in [0, {self.max_length // 2}) for windows "
                                 f"of {self.max_length} tokens, got {stride}")
            backend = Backend.from_str(self.backend.to_str())
            backend.no_padding()
            backend.enable_truncation(self.max_length, stride=stride, strategy=strategy)
            cache[key] = backend
        return cache[key]

    def _untruncated_backend(self) -> Backend:
        """A copy of the backend that neither truncates nor pads (made once)."""
        cache = self.__dict__.setdefault("_copies", {})
        if "untruncated" not in cache:
            backend = Backend.from_str(self.backend.to_str())
            backend.no_truncation()
            backend.no_padding()
            cache["untruncated"] = backend
        return cache["untruncated"]

    def _prefixes(self) -> Prefixes:
        """Truncated encodings from bounded prefixes (made once)."""
        cache = self.__dict__.setdefault("_copies", {})
        if "prefixes" not in cache:
            cache["prefixes"] = Prefixes(self.backend)
        return cache["prefixes"]

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
        """The text of token ids, without the special tokens unless told otherwise."""
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def decode_batch(self, sequences: Sequence[Sequence[int]] | np.ndarray,
                     skip_special_tokens: bool = True) -> list[str]:
        """``decode`` of each sequence of token ids (rows of a 2-D array or lists)."""
        rows = sequences.tolist() if isinstance(sequences, np.ndarray) \
            else [list(ids) for ids in sequences]
        return self.backend.decode_batch(rows, skip_special_tokens=skip_special_tokens)

    # -- the vocabulary ----------------------------------------------------------------------

    def token_to_id(self, token: str) -> int | None:
        """The id of a token of the vocabulary (``"<extra_id_0>"``, ``"[MASK]"``), or None."""
        return self.backend.token_to_id(token)

    def special_token_id(self, role: str) -> int | None:
        """The id of the special token of ``role`` as tokenizer_config.json names it
        (``"eos_token"``, ``"bos_token"``, ``"mask_token"``…); None when the config names no
        such token or the vocabulary lacks it."""
        token = self.special_tokens.get(role)
        return self.backend.token_to_id(token) if token else None

    def special_ids(self) -> list[int]:
        """The ids of the vocabulary's special tokens (``[CLS]``, ``[SEP]``, ``[PAD]``,
        ``[MASK]``, ``</s>``…), ascending."""
        return sorted(i for i, token in self.backend.get_added_tokens_decoder().items()
                      if token.special)

    @property
    def mask_token(self) -> str | None:
        """The masked-LM mask token: tokenizer_config.json's ``mask_token`` when the vocabulary
        has it, else the one special token whose text says mask (``[MASK]``, ``<mask>``); None
        when there is none, or several."""
        token = self.special_tokens.get("mask_token")
        if token is not None and self.backend.token_to_id(token) is not None:
            return token
        found = [t.content for t in self.backend.get_added_tokens_decoder().values()
                 if t.special and "mask" in t.content.lower()]
        return found[0] if len(found) == 1 else None

    @property
    def vocab_size(self) -> int:
        """How many token ids there are, added tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def num_special_tokens(self, pair: bool = False) -> int:
        """How many special tokens ``encode`` adds to one text, or to a pair of texts."""
        return self.backend.num_special_tokens_to_add(pair)


class LengthProbe(Tokenizer):
    """A tokenizer for length checks (the server's ``truncate=false``): ``encode_windows``
    returns each input's first window only, tokenized from a bounded prefix, so that checking
    a long text costs what checking a short one does. ``encode`` truncates as ever."""

    def encode_windows(self, texts: Sequence[str] | Sequence[list[str]],
                       pairs: Sequence[str] | None = None, *, stride: int,
                       is_pretokenized: bool = False) -> tuple[list[Encoding], list[int]]:
        """The first window of each input (what ``Tokenizer.encode_windows`` returns first),
        and for each, its input's index."""
        backend = self._window_backend(stride, "only_second" if pairs is not None
                                       else "longest_first")
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        windows = self._prefixes().encode(backend, inputs, is_pretokenized=is_pretokenized,
                                          add_special_tokens=True)
        return windows, list(range(len(windows)))


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
