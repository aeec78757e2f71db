"""Decoder-only architectures the KV-cache exporter knows: one table row per ``model_type``.

The exported graph is the same for every architecture (flat ``past_key_values.{i}.key/value``
in, ``present.{i}.key/value`` out, explicit ``position_ids``); what differs is only the shape
of one layer's cache and how the model wants it passed. Adding an architecture whose layers
keep a plain key/value cache of ``[batch, kv_heads, length, head_dim]`` is one line in
``ARCHITECTURES``; one with another layout gives its own ``Architecture`` functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from nlpforge.errors import ExportError


def _layers(config: Any) -> int:
    return int(config.num_hidden_layers)


def _kv_heads(config: Any) -> int:
    """Grouped-query attention keeps fewer key/value heads than query heads."""
    return int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)


def _head_dim(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def dynamic_cache(config: Any, past: Sequence[Any]) -> Any:
    """transformers 5's ``DynamicCache`` filled with flat ``(key, value)`` tensors per layer."""
    from transformers import DynamicCache

    pairs = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
    return DynamicCache(ddp_cache_data=pairs, config=config)


def flat_cache(cache: Any) -> list[Any]:
    """A ``Cache`` object → ``[key0, value0, key1, value1, …]``."""
    out = []
    for layer in cache.layers:
        out += [layer.keys, layer.values]
    return out


@dataclass(frozen=True)
class Architecture:
    """How one ``model_type`` lays out its KV cache.

    ``build_cache(config, flat)`` makes the object the model's forward takes as ``cache``;
    ``flatten(cache)`` turns the returned one back into flat tensors in the same order.
    """

    num_layers: Callable[[Any], int] = _layers
    kv_heads: Callable[[Any], int] = _kv_heads
    head_dim: Callable[[Any], int] = _head_dim
    build_cache: Callable[[Any, Sequence[Any]], Any] = dynamic_cache
    flatten: Callable[[Any], list[Any]] = flat_cache
    #: the model type whose fusions ONNX Runtime's transformer optimizer applies (--optimize)
    fusions: str = "gpt2"


#: Every architecture with a full-attention key/value cache per layer (no sliding window,
#: no recurrent state). GPT-2 names its sizes n_layer/n_head/n_embd; its config maps the
#: standard names onto them, so the defaults apply. Tested: gpt2, llama (GQA, rotary),
#: mistral and qwen2 (llama-like with their own model classes).
STANDARD = Architecture()
ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": STANDARD,
    "llama": STANDARD,
    "mistral": STANDARD,
    "qwen2": STANDARD,
}


def architecture(config: Any) -> Architecture:
    """The table row for ``config.model_type``; ExportError naming the supported ones."""
    kind = getattr(config, "model_type", None)
    if kind not in ARCHITECTURES:
        raise ExportError(f"decoder export does not support model type {kind!r} yet (supported: "
                          f"{', '.join(sorted(ARCHITECTURES))}); an architecture with a plain "
                          f"key/value cache is one line in nlpforge/export/decoder_arch.py")
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        # The cache of a sliding-window layer drops old entries: not a plain growing cache.
        raise ExportError(f"{kind} with sliding-window attention (sliding_window="
                          f"{config.sliding_window}) is not supported by the decoder export")
    return ARCHITECTURES[kind]
