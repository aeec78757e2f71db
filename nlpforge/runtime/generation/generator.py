"""Generator: an exported generative model (decoder-only or encoder-decoder) that writes text.

``Generator.load(dir)`` reads the manifest, picks the stepper of the export's family, and
loads the tokenizer and the generation defaults. Then::

    generator.generate(["Once upon a time"], max_new_tokens=20)   # → ["...", …]
    for piece in generator.stream("Once upon a time"): print(piece, end="")
    generator.predict(["Once upon a time"])   # → [{"generated_text": "..."}]

Prompts go through the task: its ``prompt_features(rows, tokenizer)`` when it gives some (a
decoder task: chat templates, long prompts keeping their end), else, for an encoder-decoder,
its ``encode`` (a seq2seq task may add a prefix such as "summarize: "); without a task,
straight through the tokenizer.
Decoder-only prompts are left-padded, so every row's last prompt token is in the last
column and one step feeds one new token per row. The generated text is the continuation
only, decoded without special tokens and cut before the first stop string.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nlpforge.errors import DataError, ModelDirError, UsageError
from nlpforge.json_files import read_json_object
from nlpforge.runtime.batching import batch_groups
from nlpforge.runtime.generation.config import GenerationConfig
from nlpforge.runtime.generation.search import SearchResult, generate, sample_steps
from nlpforge.runtime.generation.stepper import Stepper
from nlpforge.runtime.generation.stream import StopStrings, TextStream
from nlpforge.runtime.tokenizer import Tokenizer

class Generator:
    """Text generation with an export dir's stepper, tokenizer and generation defaults."""

    def __init__(self, stepper: Stepper, tokenizer: Tokenizer,
                 config: GenerationConfig | None = None, task: Any = None,
                 directory: Path | None = None, manifest: dict[str, Any] | None = None,
                 max_positions: int | None = None, batch_size: int = 8):
        self.stepper = stepper
        self.tokenizer = tokenizer
        self.config = config or GenerationConfig()
        self.task = task
        self.directory = directory
        self.manifest = manifest or {}
        self.max_positions = max_positions
        self.batch_size = batch_size
        # Decoder-only rows end in their last prompt token; encoder inputs keep the
        # tokenizer's usual right padding.
        tokenizer.padding_side = "right" if stepper.is_encoder_decoder else "left"

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto", threads: int | None = None,
             batch_size: int = 8, variant: str | None = None) -> Generator:
        """Load a generative export dir. ``device``: auto, cpu, cuda or cuda:N."""
        from nlpforge.families import family
        from nlpforge.manifest import read_manifest, task_from_manifest

        directory = Path(path)
        manifest = read_manifest(directory, kind="export")
        spec = family(manifest["family"])
        if not spec.generates:
            raise ModelDirError(f"{directory}: a {spec.value} model does not generate text; use "
                                f"'nlpforge predict {directory}'")
        task = task_from_manifest(manifest, str(directory))
        stepper_class = spec.load("stepper")
        try:
            stepper = stepper_class.load(directory, manifest, device, threads, variant)
        except Exception as exc:
            if type(exc).__module__.startswith("nlpforge"):
                raise
            raise ModelDirError(f"{directory}: cannot load the {spec.value} model: {exc}")
        tok = manifest["tokenizer"]
        tokenizer = Tokenizer.from_dir(directory, max_length=tok["max_length"],
                                       pad_id=tok.get("pad_id"))
        model_config = read_json_object(directory / "config.json")
        positions = (model_config.get("n_positions") or model_config.get("max_position_embeddings")
                     if not stepper.is_encoder_decoder else None)
        return cls(stepper, tokenizer, GenerationConfig.from_dir(directory), task, directory,
                   manifest, int(positions) if positions else None, batch_size)

    # -- settings ---------------------------------------------------------------------------

    def config_for(self, parameters: dict[str, Any] | None = None,
                   where: str = "parameter") -> GenerationConfig:
        """The export's defaults with ``parameters`` applied; UsageError for bad ones."""
        return self.config.with_overrides(parameters or {}, where)

    def check_parameters(self, parameters: dict[str, Any] | None) -> None:
        """Raise UsageError when a request's generation parameters are wrong (the server
        calls this before it starts a stream)."""
        self.config_for(parameters)

    # -- prompts ----------------------------------------------------------------------------

    @property
    def prompt_field(self) -> str:
        fields = getattr(self.task, "request_fields", None)
        return fields[0].name if fields else "text"

    def as_rows(self, inputs: Sequence[str | dict]) -> list[dict]:
        """Strings become requests of the task's first request field; requests are checked."""
        rows = []
        for i, item in enumerate(inputs):
            row = {self.prompt_field: item} if isinstance(item, str) else item
            if self.task is not None:
                self.task.check_row(row, f"inputs[{i}]", None, training=False)
            elif not isinstance(row.get(self.prompt_field), str):
                raise DataError(f"inputs[{i}]: expected a string or a request with a "
                                f"'{self.prompt_field}' string")
            rows.append(row)
        return rows

    def encode(self, rows: Sequence[dict], config: GenerationConfig,
               positions: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Requests → (input_ids, attention_mask), left-aligned for decoder-only models.
        ``positions``: where the rows stand in the caller's list, for error messages
        (default: 0, 1, …)."""
        at = range(len(rows)) if positions is None else positions
        features = None if self.task is None else self.task.prompt_features(rows, self.tokenizer)
        if features is None and self.task is not None and self.stepper.is_encoder_decoder \
                and self.task.defines("encode"):
            features = self.task.encode(rows, self.tokenizer)
        if features is None:
            texts = [row[self.prompt_field] for row in rows]
            features = self.tokenizer.pad(self.tokenizer.encode(texts),
                                          ("input_ids", "attention_mask"))
        ids = np.asarray(features["input_ids"], dtype=np.int64)
        mask = np.asarray(features.get("attention_mask", ids != self.tokenizer.pad_id),
                          dtype=np.int64)
        lengths = mask.sum(axis=1)
        for i in np.flatnonzero(lengths == 0):
            raise UsageError(f"prompt {at[i] + 1} is empty: nothing to continue")
        if not self.stepper.is_encoder_decoder:
            ids, mask = _left_align(ids, mask, self.tokenizer.pad_id)
            if self.max_positions and ids.shape[1] + config.max_new_tokens > self.max_positions:
                longest = int(lengths.argmax())
                raise UsageError(f"prompt {at[longest] + 1} has {ids.shape[1]} tokens; "
                                 f"with max_new_tokens={config.max_new_tokens} that exceeds the "
                                 f"model's {self.max_positions} positions; shorten the prompt "
                                 f"or lower max_new_tokens")
        return ids, mask

    # -- generation -------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str | dict], checked: bool = False,
                 **parameters: Any) -> list[str]:
        """Generated text for each prompt (``num_return_sequences`` texts per prompt, best
        first), in prompt order. ``checked``: the prompts are rows the caller validated
        already (labelled rows for ``nlpforge evaluate``).

        A batch holds prompts of one ``Task.batch_key`` only, so that the prompts beside a
        prompt do not change how the task encodes it."""
        if isinstance(prompts, (str, dict)):
            raise UsageError("generate() takes a list of prompts, not a single one")
        config = self.config_for(parameters)
        rows = list(prompts) if checked else self.as_rows(prompts)
        count = config.num_return_sequences
        texts: list[str] = [""] * (len(rows) * count)
        groups = [list(range(len(rows)))] if self.task is None \
            else batch_groups(self.task, rows)
        for group in groups:
            for start in range(0, len(group), self.batch_size):
                index = group[start:start + self.batch_size]
                out = self._generate_batch([rows[i] for i in index], config, index)
                for k, i in enumerate(index):
                    texts[i * count:(i + 1) * count] = out[k * count:(k + 1) * count]
        return texts

    def search(self, rows: Sequence[dict], config: GenerationConfig,
               positions: Sequence[int] | None = None) -> SearchResult:
        """The token-level result for a batch of requests (one search, no splitting: the
        caller keeps the rows of one ``Task.batch_key`` together)."""
        ids, mask = self.encode(rows, config, positions)
        return generate(self.stepper, ids, mask, config, self._stop_check(config))

    def _generate_batch(self, rows: Sequence[dict], config: GenerationConfig,
                        positions: Sequence[int] | None = None) -> list[str]:
        result = self.search(rows, config, positions)
        stops = StopStrings(config.stop_strings)
        decoded = self.tokenizer.decode_batch(
            [result.new_tokens(i).tolist() for i in range(len(result.lengths))],
            skip_special_tokens=True)
        return [stops.cut(text) for text in decoded]

    def predict(self, inputs: Sequence[str | dict], checked: bool = False,
                **parameters: Any) -> list[dict]:
        """``[{"generated_text": ...}]``, one per input (with ``num_return_sequences`` > 1,
        also ``"generated_texts"``: all of them, best first)."""
        texts = self.generate(inputs, checked=checked, **parameters)
        count = self.config_for(parameters).num_return_sequences
        if count == 1:
            return [{"generated_text": t} for t in texts]
        return [{"generated_text": texts[i], "generated_texts": texts[i:i + count]}
                for i in range(0, len(texts), count)]

    def stream(self, prompt: str | dict, **parameters: Any) -> Iterator[str]:
        """Yield the generated text of one prompt piece by piece as it is decoded.

        Pieces end at word boundaries (never inside a UTF-8 character or a word that the
        next token may extend) and never contain the start of a stop string. Beam search
        knows its best sequence only at the end: with ``num_beams`` > 1 the whole text comes
        as one piece.
        """
        config = self.config_for(parameters)
        rows = self.as_rows([prompt])
        if config.num_beams > 1:
            yield self._generate_batch(rows, config)[0]
            return
        ids, mask = self.encode(rows, config)
        stops = StopStrings(config.stop_strings)
        decoder = TextStream(lambda tokens: self.tokenizer.decode(tokens))
        steps = sample_steps(self.stepper, ids, mask, config, self._stop_check(config))
        text, given = "", 0
        eos = set(config.eos_token_id if config.eos_token_id is not None
                  else self.stepper.eos_token_ids)
        for step in steps:
            token = int(step.tokens[0])
            if not step.alive[0] or token in eos:
                break
            text += decoder.push([token])
            at = stops.find(text)
            if at is not None:
                if at > given:
                    yield text[given:at]
                return
            safe = stops.safe_length(text)
            if safe > given:
                yield text[given:safe]
                given = safe
        text = stops.cut(text + decoder.flush())
        if len(text) > given:
            yield text[given:]

    def generate_stream(self, text_input: str, parameters: dict[str, Any]) -> Iterator[str]:
        """The server's streaming hook (see ``nlpforge.serving.generation``)."""
        return self.stream(text_input, **(parameters or {}))

    def _stop_check(self, config: GenerationConfig):
        stops = StopStrings(config.stop_strings)
        if not stops:
            return None
        window = stops.token_window()
        decode_batch = self.tokenizer.decode_batch

        def check(sequences: np.ndarray, start: int) -> np.ndarray:
            tail = sequences[:, max(start, sequences.shape[1] - window):]
            texts = decode_batch(tail.tolist(), skip_special_tokens=True)
            return np.fromiter((stops.find(t) is not None for t in texts), dtype=bool,
                               count=len(texts))

        return check

    # -- what it is -------------------------------------------------------------------------

    @property
    def labels(self) -> None:
        return None

    def __repr__(self) -> str:
        task = getattr(self.task, "id", None)
        return f"Generator({str(self.directory)!r}, task={task!r}, " \
               f"family={self.manifest.get('family')!r})"


def _left_align(ids: np.ndarray, mask: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Move each row's tokens to the right end (left padding); a no-op when they are."""
    if _is_left_padded(mask):
        return ids, mask
    width = ids.shape[1]
    out_ids = np.full_like(ids, pad_id)
    out_mask = np.zeros_like(mask)
    for i in range(len(ids)):
        tokens = ids[i][mask[i] != 0]
        if len(tokens):
            out_ids[i, width - len(tokens):] = tokens
            out_mask[i, width - len(tokens):] = 1
    return out_ids, out_mask


def _is_left_padded(mask: np.ndarray) -> bool:
    """Every row is zeros then ones."""
    return bool((np.diff(mask, axis=1) >= 0).all())
