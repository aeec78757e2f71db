"""DecoderStepper: a decoder-only ONNX export (``model.onnx`` with a KV cache) behind the
``Stepper`` protocol. No torch.

The cache the graph returns (``present.*``) is fed back as the next call's
``past_key_values.*`` as it is: on CUDA through ONNX Runtime's IO binding (it stays in GPU
memory), on the CPU as numpy arrays (``graph_io.py``). Only the last position's logits are
read.

Positions follow transformers' ``generate()``: prompts arrive left-padded, a token's position
is the number of real tokens before it (``cumsum(mask) − 1``), so a padded row and the same
prompt unpadded get the same positions and the same logits.
"""

from __future__ import annotations

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


@dataclass
class DecoderState:
    """What a decoder needs between steps: the cache (graph values, in input order), the
    attention mask over cache + next token, and each row's next position."""

    cache: list[Any]
    attention_mask: np.ndarray  # [batch, cached tokens]; ones are appended per step
    positions: np.ndarray  # [batch] position of the next token

    @property
    def batch_size(self) -> int:
        return int(self.attention_mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.attention_mask.shape[1])


def prompt_positions(attention_mask: np.ndarray) -> np.ndarray:
    """``cumsum(mask) − 1``; padding gets 1 (masked out anyway), as in transformers."""
    positions = np.cumsum(attention_mask, axis=-1) - 1
    return np.where(attention_mask == 0, 1, positions).astype(np.int64)


class DecoderStepper:
    """One decoder-only export, stepped token by token with its KV cache kept between calls."""

    is_encoder_decoder = False
    decoder_start_token_id = None

    def __init__(self, session: Any, io: dict[str, Any], binding: bool | None = None):
        self.session = session
        self.graph = GraphIO(session, binding)
        self.num_layers = int(io["num_layers"])
        self.kv_heads = int(io["num_kv_heads"])
        self.head_dim = int(io["head_dim"])
        # values may have their own head size (DeepSeek-V3's latent attention)
        self.value_head_dim = int(io.get("value_head_dim") or self.head_dim)
        self.vocab_size = int(io["vocab_size"])
        self.eos_token_ids = [int(e) for e in io.get("eos_token_ids", [])]
        self.pad_token_id = int(io.get("pad_token_id") or 0)
        self.bos_token_id = io.get("bos_token_id")
        self.past_names = [f"past_key_values.{i}.{k}" for i in range(self.num_layers)
                           for k in ("key", "value")]
        self.present_names = [f"present.{i}.{k}" for i in range(self.num_layers)
                              for k in ("key", "value")]
        self.takes_positions = bool(io.get("position_ids", True))
        self.outputs = ["logits", *self.present_names]

    @classmethod
    def load(cls, directory: Path, manifest: Manifest, device: str = "auto",
             threads: int | None = None, variant: str | None = None,
             binding: bool | None = None) -> "DecoderStepper":
        """The stepper of an export dir whose manifest (``nlpforge.json``) is ``manifest``;
        ``variant``: fp32 or optimized (None: the export's default); ``binding``: see
        ``GraphIO``."""
        directory = Path(directory)
        io = manifest.get("io") or {}
        missing = [k for k in ("num_layers", "num_kv_heads", "head_dim", "vocab_size")
                   if k not in io]
        if missing:
            raise ModelDirError(f"{directory}/nlpforge.json: field 'io' lacks "
                                f"{', '.join(missing)}; this is not a decoder export with a KV "
                                f"cache (re-export it with nlpforge export)")
        model = graph_file(manifest, "model", variant, directory)
        return cls(load_session(directory / model, device, threads), io, binding)

    # -- the Stepper protocol ---------------------------------------------------------------

    def start(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, DecoderState]:
        """Run the left-padded prompts through the graph with an empty cache."""
        input_ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        attention_mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape or not input_ids.size:
            raise DataError(f"prompts must be a non-empty [batch, length] array with a mask of "
                            f"the same shape, got {input_ids.shape} and {attention_mask.shape}")
        if (attention_mask[:, -1] == 0).any():
            raise DataError("prompts must be left-padded: the last token of a row is padding")
        batch = input_ids.shape[0]
        keys = np.zeros((batch, self.kv_heads, 0, self.head_dim), dtype=np.float32)
        values = np.zeros((batch, self.kv_heads, 0, self.value_head_dim), dtype=np.float32)
        cache = [self.graph.value(keys if name.endswith(".key") else values)
                 for name in self.past_names]
        positions = prompt_positions(attention_mask)
        logits, present = self._run(input_ids, attention_mask, positions, cache)
        state = DecoderState(present, attention_mask, positions[:, -1] + 1)
        return logits, state

    def step(self, state: DecoderState, tokens: np.ndarray) -> tuple[np.ndarray, DecoderState]:
        """Feed one token per row; the cache grows by one position."""
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1, 1)
        if tokens.shape[0] != state.batch_size:
            raise DataError(f"step() got {tokens.shape[0]} tokens for {state.batch_size} rows")
        mask = np.concatenate([state.attention_mask,
                               np.ones((state.batch_size, 1), dtype=np.int64)], axis=1)
        positions = state.positions.reshape(-1, 1)
        logits, present = self._run(tokens, mask, positions, state.cache)
        return logits, DecoderState(present, mask, state.positions + 1)

    def select(self, state: DecoderState, index: np.ndarray) -> DecoderState:
        """Keep, duplicate or reorder rows (beam search); the cache rows follow."""
        index = row_index(index, state.batch_size)
        if index is None:
            return state
        cache = [self.graph.take(value, index) for value in state.cache]
        return replace(state, cache=cache, attention_mask=state.attention_mask[index],
                       positions=state.positions[index])

    # -- ONNX Runtime -----------------------------------------------------------------------

    def _run(self, input_ids: np.ndarray, attention_mask: np.ndarray, positions: np.ndarray,
             cache: list[Any]) -> tuple[np.ndarray, list[Any]]:
        """One graph call: the last position's logits (numpy, float32) and the presents."""
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.takes_positions:
            feeds["position_ids"] = positions.astype(np.int64, copy=False)
        feeds = {name: self.graph.value(array) for name, array in feeds.items()}
        feeds.update(zip(self.past_names, cache))
        outputs = self.graph.run(self.session, feeds, self.outputs)
        return self.graph.last_logits(outputs[0]), list(outputs[1:])
