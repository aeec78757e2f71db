"""EncoderDecoderStepper: an encoder-decoder ONNX export behind the ``Stepper`` protocol.
No torch.

``start`` runs ``encoder_model.onnx`` once and ``decoder_model.onnx`` on
``decoder_start_token_id``; that first step returns the self-attention cache and the
cross-attention cache (the encoder states projected by every decoder layer). ``step`` runs
``decoder_with_past_model.onnx`` with one token per row: the self-attention cache grows by one
position, the cross-attention cache is fed back unchanged, never recomputed.

Caches are fed back as the graphs return them: on CUDA through ONNX Runtime's IO binding
(they stay in GPU memory), on the CPU as numpy arrays (``graph_io.py``). Only the last
position's logits are read.

Beam search duplicates each prompt's row ``num_beams`` times after ``start`` and reorders rows
after every step. Rows of one prompt share the same cross-attention cache, so ``select`` only
copies it when the prompt behind some row changes (expansion, a finished prompt dropped), not
on the per-step reordering of beams within a prompt.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from nlpforge.errors import DataError, ModelDirError
from nlpforge.runtime.generation.graph_io import GraphIO
from nlpforge.runtime.generation.stepper import row_index
from nlpforge.runtime.providers import load_session
from nlpforge.runtime.variants import graph_file
from nlpforge.manifest import Manifest

REQUIRED_IO = ("encoder", "decoder", "decoder_with_past", "num_layers", "num_heads",
               "head_dim", "vocab_size", "decoder_start_token_id")


@dataclass
class EncoderDecoderState:
    """What the decoder needs between steps (caches as graph values, in input order)."""

    self_cache: list[Any]  # past_key_values.{i}.decoder.key/value; grows every step
    cross_cache: list[Any]  # past_key_values.{i}.encoder.key/value; fixed after start
    encoder_attention_mask: Any  # graph value [batch, encoder length]
    prompts: np.ndarray  # [batch] which prompt of the start() batch each row belongs to
    length: int  # decoder tokens in the cache

    @property
    def batch_size(self) -> int:
        return int(self.prompts.shape[0])


class EncoderDecoderStepper:
    """One encoder-decoder export, stepped token by token with both caches kept."""

    is_encoder_decoder = True

    def __init__(self, encoder: Any, decoder: Any, decoder_with_past: Any, io: dict[str, Any],
                 binding: bool | None = None):
        self.encoder, self.decoder, self.decoder_with_past = encoder, decoder, decoder_with_past
        self.graph = GraphIO(encoder, binding)
        self.num_layers = int(io["num_layers"])
        self.vocab_size = int(io["vocab_size"])
        self.decoder_start_token_id = int(io["decoder_start_token_id"])
        self.eos_token_ids = [int(e) for e in io.get("eos_token_ids", [])]
        self.pad_token_id = int(io.get("pad_token_id") or 0)
        forced = io.get("forced_bos_token_id")
        self.forced_bos_token_id = int(forced) if forced is not None else None
        layers = range(self.num_layers)
        self.self_past = [f"past_key_values.{i}.decoder.{k}" for i in layers
                          for k in ("key", "value")]
        self.cross_past = [f"past_key_values.{i}.encoder.{k}" for i in layers
                           for k in ("key", "value")]
        self.self_present = [n.replace("past_key_values.", "present.") for n in self.self_past]
        self.cross_present = [n.replace("past_key_values.", "present.") for n in self.cross_past]

    @classmethod
    def load(cls, directory: Path, manifest: Manifest, device: str = "auto",
             threads: int | None = None, variant: str | None = None,
             binding: bool | None = None) -> "EncoderDecoderStepper":
        """The stepper of an export dir whose manifest (``nlpforge.json``) is ``manifest``;
        ``variant``: fp32 or optimized (None: the export's default); ``binding``: see
        ``GraphIO``.

        The encoder and first-step decoder run once per batch, between many runs of the
        decoder with a cache: their threads do not spin (they would take the cores the
        next graph needs)."""
        directory = Path(directory)
        io = manifest.get("io") or {}
        missing = [k for k in REQUIRED_IO if k not in io]
        if missing:
            raise ModelDirError(f"{directory}/nlpforge.json: field 'io' lacks "
                                f"{', '.join(missing)}; this is not an encoder-decoder export "
                                f"(re-export it with nlpforge export)")
        sessions = [load_session(directory / graph_file(manifest, key, variant, directory), device,
                                 threads, spin=key == "decoder_with_past")
                    for key in ("encoder", "decoder", "decoder_with_past")]
        return cls(*sessions, io, binding)

    # -- the Stepper protocol ---------------------------------------------------------------

    def start(self, input_ids: np.ndarray,
              attention_mask: np.ndarray) -> tuple[np.ndarray, EncoderDecoderState]:
        """Encode the (right- or left-padded) inputs and run the first decoder step."""
        input_ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        attention_mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape or not input_ids.size:
            raise DataError(f"inputs must be a non-empty [batch, length] array with a mask of "
                            f"the same shape, got {input_ids.shape} and {attention_mask.shape}")
        if not attention_mask.any(axis=1).all():
            raise DataError("every input needs at least one token (a row of the attention "
                            "mask is all zeros)")
        batch = input_ids.shape[0]
        mask = self.graph.value(attention_mask)
        hidden = self.graph.run(self.encoder, {"input_ids": self.graph.value(input_ids),
                                               "attention_mask": mask}, ["last_hidden_state"])[0]
        first = np.full((batch, 1), self.decoder_start_token_id, dtype=np.int64)
        outputs = self.graph.run(self.decoder, {"input_ids": self.graph.value(first),
                                                "encoder_attention_mask": mask,
                                                "encoder_hidden_states": hidden},
                                 ["logits", *self.self_present, *self.cross_present])
        n = len(self.self_present)
        state = EncoderDecoderState(outputs[1:1 + n], outputs[1 + n:], mask,
                                    np.arange(batch, dtype=np.int64), 1)
        return self.graph.last_logits(outputs[0]), state

    def step(self, state: EncoderDecoderState,
             tokens: np.ndarray) -> tuple[np.ndarray, EncoderDecoderState]:
        """Feed one token per row; the self-attention cache grows by one position."""
        tokens = np.ascontiguousarray(np.asarray(tokens, dtype=np.int64).reshape(-1, 1))
        if tokens.shape[0] != state.batch_size:
            raise DataError(f"step() got {tokens.shape[0]} tokens for {state.batch_size} rows")
        feeds = {"input_ids": self.graph.value(tokens),
                 "encoder_attention_mask": state.encoder_attention_mask,
                 **dict(zip(self.self_past, state.self_cache)),
                 **dict(zip(self.cross_past, state.cross_cache))}
        outputs = self.graph.run(self.decoder_with_past, feeds, ["logits", *self.self_present])
        return self.graph.last_logits(outputs[0]), replace(state, self_cache=list(outputs[1:]),
                                                      length=state.length + 1)

    def select(self, state: EncoderDecoderState, index: np.ndarray) -> EncoderDecoderState:
        """Keep, duplicate or reorder rows (beam search); caches and masks follow."""
        index = row_index(index, state.batch_size)
        if index is None:
            return state
        prompts = state.prompts[index]
        self_cache = [self.graph.take(value, index) for value in state.self_cache]
        if np.array_equal(prompts, state.prompts):
            # beams reordered within their prompts: the cross-attention rows are identical
            return replace(state, self_cache=self_cache)
        return replace(state, self_cache=self_cache, prompts=prompts,
                       cross_cache=[self.graph.take(value, index) for value in state.cross_cache],
                       encoder_attention_mask=self.graph.take(state.encoder_attention_mask,
                                                              index))


def load_stepper(directory: str | os.PathLike, manifest: Manifest, device: str = "auto",
                 threads: int | None = None, variant: str | None = None,
                 binding: bool | None = None) -> EncoderDecoderStepper:
    """Alias of ``EncoderDecoderStepper.load`` for callers that dispatch by family."""
    return EncoderDecoderStepper.load(Path(directory), manifest, device, threads, variant,
                                      binding)
