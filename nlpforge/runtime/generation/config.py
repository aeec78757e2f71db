"""GenerationConfig: how to generate, with defaults from the export and checked overrides.

The export's ``generation_config.json`` (written by ``save_pretrained``) gives the model's
defaults: its end-of-sequence ids, pad id, and whatever decoding settings it was published
with (``num_beams``, ``no_repeat_ngram_size``…). A caller (CLI flags, a server request's
``parameters``, keyword arguments) overrides them; every value is checked here, once, so a bad
one is a ``UsageError`` naming the parameter instead of a numpy error deep in the loop.

Defaults follow ``transformers``' ``GenerationConfig`` (``top_k=50`` when sampling,
``length_penalty=1.0``, ``early_stopping=False``) so that the same settings give the same
tokens as ``model.generate()``; the exception is the length: ``max_new_tokens`` defaults to
64 (transformers: ``max_length=20`` tokens in all, prompt included).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlpforge.errors import ModelDirError, UsageError

DEFAULT_MAX_NEW_TOKENS = 64

#: Other names callers use for a parameter (OpenAI / TGI style) → ours.
ALIASES = {"max_tokens": "max_new_tokens", "stop": "stop_strings", "beams": "num_beams",
           "stop_sequences": "stop_strings"}

#: Keys of generation_config.json that nlpforge reads; the rest (``transformers_version``,
#: ``_from_model_config``, ``max_length``…) are ignored.
_FROM_FILE = ("max_new_tokens", "min_new_tokens", "do_sample", "temperature", "top_k", "top_p",
              "num_beams", "length_penalty", "early_stopping", "num_return_sequences",
              "repetition_penalty", "no_repeat_ngram_size", "stop_strings", "eos_token_id",
              "pad_token_id", "decoder_start_token_id", "forced_bos_token_id",
              "forced_eos_token_id")


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings. Build one with :meth:`from_dir` and :meth:`with_overrides`."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    seed: int | None = None
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    stop_strings: tuple[str, ...] = ()
    eos_token_id: tuple[int, ...] | None = None  # None: the stepper's
    pad_token_id: int | None = None  # None: the stepper's
    decoder_start_token_id: int | None = None  # None: the stepper's
    forced_bos_token_id: int | None = None  # the first new token (BART, mBART, NLLB)
    forced_eos_token_id: tuple[int, ...] | None = None  # the last one when max_new_tokens is hit

    @classmethod
    def from_dir(cls, directory: str | Path) -> GenerationConfig:
        """Defaults from ``DIR/generation_config.json`` (plain defaults when there is none)."""
        path = Path(directory) / "generation_config.json"
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelDirError(f"{path}: cannot read: {exc}")
        if not isinstance(data, dict):
            raise ModelDirError(f"{path}: expected a JSON object")
        values = {k: data[k] for k in _FROM_FILE if data.get(k) is not None}
        try:
            return cls().with_overrides(values)
        except UsageError as exc:
            raise ModelDirError(f"{path}: {exc}")

    def with_overrides(self, overrides: Mapping[str, Any] | None = None,
                       where: str = "parameter") -> GenerationConfig:
        """A copy with ``overrides`` applied and checked; ``None`` values are ignored.

        ``where`` names the source in errors (``parameter``, ``option``…). Unknown names are
        an error, so a typo (``temprature``) is not silently ignored.
        """
        known = {f.name for f in dataclasses.fields(self)}
        values: dict[str, Any] = {}
        for key, value in (overrides or {}).items():
            name = ALIASES.get(key, key)
            if name not in known:
                raise UsageError(f"unknown generation {where} '{key}' (known: "
                                 f"{', '.join(sorted(known))})")
            if value is not None:
                values[name] = _check(name, value, where)
        config = dataclasses.replace(self, **values)
        config._check_combination(where)
        return config

    def _check_combination(self, where: str) -> None:
        if self.num_return_sequences > self.num_beams and not self.do_sample:
            raise UsageError(f"generation {where} num_return_sequences "
                             f"({self.num_return_sequences}) must not exceed num_beams "
                             f"({self.num_beams}) without sampling")
        if self.num_return_sequences > 1 and self.num_beams == 1:
            raise UsageError(f"generation {where} num_return_sequences > 1 needs beam search "
                             f"(num_beams >= num_return_sequences)")
        if self.min_new_tokens > self.max_new_tokens:
            raise UsageError(f"generation {where} min_new_tokens ({self.min_new_tokens}) "
                             f"exceeds max_new_tokens ({self.max_new_tokens})")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["stop_strings"] = list(self.stop_strings)
        for key in ("eos_token_id", "forced_eos_token_id"):
            if data[key] is not None:
                data[key] = list(data[key])
        return data


def _check(name: str, value: Any, where: str) -> Any:
    """The value of one parameter, converted, or a UsageError saying what is allowed."""
    what = f"generation {where} {name}"
    if name in ("max_new_tokens", "num_beams", "num_return_sequences"):
        return _int(value, what, low=1)
    if name in ("min_new_tokens", "no_repeat_ngram_size", "top_k"):
        return _int(value, what, low=0)
    if name == "seed":
        return _int(value, what, low=0)
    if name in ("pad_token_id", "decoder_start_token_id", "forced_bos_token_id"):
        return _int(value, what, low=0)
    if name in ("eos_token_id", "forced_eos_token_id"):
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_int(v, what, low=0) for v in items)
    if name == "do_sample":
        if not isinstance(value, bool):
            raise UsageError(f"{what} must be true or false, got {value!r}")
        return value
    if name == "temperature":
        return _float(value, what, low=0.0, low_open=True)
    if name == "top_p":
        number = _float(value, what, low=0.0, low_open=True)
        if number > 1.0:
            raise UsageError(f"{what} must be in (0, 1], got {value!r}")
        return number
    if name == "repetition_penalty":
        return _float(value, what, low=0.0, low_open=True)
    if name == "length_penalty":
        return _float(value, what)
    if name == "early_stopping":
        if isinstance(value, bool) or value == "never":
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise UsageError(f"{what} must be true, false or \"never\", got {value!r}")
    if name == "stop_strings":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(
                isinstance(s, str) and s for s in items):
            raise UsageError(f"{what} must be a non-empty string or a list of them, "
                             f"got {value!r}")
        return tuple(items)
    raise AssertionError(name)


def _int(value: Any, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(f"{what} must be an integer >= {low}, got {value!r}")
    try:
        number = int(value)
        if isinstance(value, float) and number != value:
            raise ValueError
    except ValueError:
        raise UsageError(f"{what} must be an integer >= {low}, got {value!r}")
    if number < low:
        raise UsageError(f"{what} must be an integer >= {low}, got {value!r}")
    return number


def _float(value: Any, what: str, low: float | None = None, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(number):
        raise UsageError(f"{what} must be a finite number, got {value!r}")
    if low is not None and (number < low or (low_open and number == low)):
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        raise UsageError(f"{what} must be {bound}, got {value!r}")
    return number
