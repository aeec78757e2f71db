"""Decoder-only architectures the KV-cache exporter knows: one ``Architecture`` per ``model_type``.

The exported graph is the same for every architecture (flat ``past_key_values.{i}.key/value``
in, ``present.{i}.key/value`` out, explicit ``position_ids`` where the model takes them);
what differs is read from the config here, in one place: ``describe(config)`` gives the
sizes the exporter, the validation and the manifest use (``DecoderShape``).

Where the sizes come from. optimum's ``NormalizedConfigManager`` knows the attribute names
of most of these model types, and it is used for what it covers well — the number of layers,
attention heads and the hidden size (the arguments of ONNX Runtime's fusions) — with the
plain config as the fallback for model types it does not list (gemma2, gemma3_text,
stablelm). It is not used for the cache's shape: it has no head size (Gemma, Qwen3 set
``head_dim`` apart from ``hidden_size / heads``), and it lists qwen2, qwen3, falcon, olmo and
smollm3 without their key/value head count (grouped-query and multi-query attention), so it
would give the query head count there. transformers 5's configs answer
``num_key_value_heads`` and ``head_dim`` themselves (Falcon's multi-query included), and those
are what the model's cache is made of; the export's dummy cache is built from them, so a
wrong answer fails the trace rather than passing silently.

Sliding-window attention. A layer with a window attends only to its last ``window`` keys;
transformers' generation cache (``DynamicSlidingWindowLayer``) drops the older ones. The
export keeps a full cache per layer instead and lets the model's sliding-window mask hide
what lies outside the window: the same numbers, for any length, at the cost of memory for
keys the mask hides. A window of the config's size is therefore not a reason to refuse
(Mistral's 4096, Phi-3's, Gemma-2/3's alternating local layers); the validation adds a case
longer than the window when the window is short enough to run (``decoder_cases.py``), and
the manifest records the window (``io.sliding_window``).

Mixture-of-experts layers (Mixtral) are exported with transformers' ``batched_mm`` experts
code: its default loops over the experts a batch happens to hit, which a trace would freeze.

A plugin adds an architecture with ``register_architecture(model_type, Architecture(...))``
(docs/export.md); ``architecture(config)`` refuses any other model type with an
``ExportError`` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from nlpforge.errors import ExportError


def _normalized(config: Any) -> Any:
    """optimum's attribute-name mapping for ``config``'s model type; the config itself when
    optimum does not list it."""
    from optimum.utils import NormalizedConfigManager

    try:
        factory = NormalizedConfigManager.get_normalized_config_class(config.model_type)
    except (KeyError, ValueError):
        return None
    return factory(config)


def _read(config: Any, normalized: Any, name: str) -> int:
    if normalized is not None and normalized.has_attribute(name):
        return int(getattr(normalized, name))
    return int(getattr(config, name))


def _kv_heads(config: Any) -> int:
    """Grouped-query (and multi-query) attention keeps fewer key/value heads than query heads."""
    return int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)


def _head_dim(config: Any) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def layer_windows(config: Any) -> list[int | None]:
    """Each layer's attention window (None: full attention), as transformers' cache sees it
    (``layer_types`` or a ``sliding_window`` set on the config)."""
    from transformers.cache_utils import get_layer_types_and_kwargs

    types, kwargs = get_layer_types_and_kwargs(config.get_text_config(decoder=True))
    return [args.get("sliding_window") if kind in ("sliding_attention", "chunked_attention")
            else None for kind, args in zip(types, kwargs)]


def _gpt_neo_windows(config: Any) -> list[int | None]:
    """GPT-Neo names its layers ``global``/``local`` and masks local ones to ``window_size``."""
    return [int(config.window_size) if kind == "local" else None
            for kind in config.attention_layers]


def full_cache(config: Any, past: Sequence[Any]) -> Any:
    """transformers 5's ``DynamicCache`` of plain growing layers, filled with flat
    ``(key, value)`` tensors per layer. No sliding-window layers: those drop old keys, the
    export keeps them and relies on the attention mask (see the module docstring)."""
    from transformers import DynamicCache

    pairs = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
    return DynamicCache(ddp_cache_data=pairs)


def flat_cache(cache: Any) -> list[Any]:
    """A ``Cache`` object → ``[key0, value0, key1, value1, …]``."""
    out = []
    for layer in cache.layers:
        out += [layer.keys, layer.values]
    return out


def _no_refusal(config: Any) -> str | None:
    return None


def _falcon_refusal(config: Any) -> str | None:
    if getattr(config, "alibi", False):
        return ("alibi=true (e.g. Falcon-RW): the traced alibi computation has a complex-typed "
                "Cast that ONNX Runtime refuses to load; Falcon models with rotary positions "
                "(alibi=false: Falcon-7B/40B/180B) export")
    return None


@dataclass(frozen=True)
class Architecture:
    """What one ``model_type`` needs from the exporter. The defaults fit every architecture
    whose layers keep a ``[batch, kv_heads, length, head_dim]`` key/value cache.

    ``build_cache(config, flat)`` makes the object the model's forward takes as its cache;
    ``flatten(cache)`` turns the returned one back into flat tensors in the same order.
    ``refuse(config)`` returns why this config cannot be exported (None: it can).
    """

    kv_heads: Callable[[Any], int] = _kv_heads
    head_dim: Callable[[Any], int] = _head_dim
    #: each layer's attention window, None for full attention
    windows: Callable[[Any], list[int | None]] = layer_windows
    build_cache: Callable[[Any, Sequence[Any]], Any] = full_cache
    flatten: Callable[[Any], list[Any]] = flat_cache
    refuse: Callable[[Any], str | None] = _no_refusal
    #: the model type whose fusions ONNX Runtime's transformer optimizer applies (--optimize);
    #: every pass is validated against PyTorch, a pass that changes the numbers is refused
    fusions: str = "gpt2"


@dataclass(frozen=True)
class DecoderShape:
    """The sizes of one decoder config, as the export, its validation and its manifest use them."""

    model_type: str
    num_layers: int
    num_heads: int
    kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    #: the smallest attention window of any layer; None when every layer attends to all keys
    sliding_window: int | None


#: Model types with a plain key/value cache per layer. Each was checked by
#: tests/test_decoder_matrix.py: export, validation, greedy and beam-search tokens identical to
#: ``generate()``. Per type, what differs is handled by the model's own code under the
#: same wrapper: BLOOM's alibi comes from the attention mask; Falcon's multi-query and
#: new_decoder_architecture set ``num_key_value_heads``; GPT-J and GPT-NeoX rotate part of
#: each head; OPT adds its position offset itself; Gemma-2 and Phi-3 cap logits or keep a
#: window (see the module docstring); Mixtral routes to experts. Falcon with alibi is refused.
STANDARD = Architecture()
ARCHITECTURES: dict[str, Architecture] = {
    kind: STANDARD for kind in (
        "gpt2", "gpt_neox", "gptj", "opt", "bloom", "llama", "mistral", "mixtral", "qwen2",
        "qwen3", "phi", "phi3", "gemma", "gemma2", "gemma3_text", "stablelm", "olmo",
        "granite", "smollm3")
}
ARCHITECTURES["gpt_neo"] = Architecture(windows=_gpt_neo_windows)
ARCHITECTURES["falcon"] = Architecture(refuse=_falcon_refusal)


def register_architecture(model_type: str, arch: Architecture, replace: bool = False) -> None:
    """Teach the decoder export a ``model_type`` (a plugin's own architecture). ``replace``
    overrides nlpforge's entry for a type it already knows; without it that is an error."""
    if not isinstance(arch, Architecture):
        raise TypeError(f"register_architecture({model_type!r}, …) needs an Architecture, got "
                        f"{type(arch).__name__}")
    if model_type in ARCHITECTURES and not replace:
        raise ValueError(f"decoder architecture {model_type!r} is already registered; pass "
                         f"replace=True to override it")
    ARCHITECTURES[model_type] = arch


def architecture(config: Any) -> Architecture:
    """The ``Architecture`` of ``config.model_type``; ExportError naming the supported ones,
    or why this config of a supported type cannot be exported."""
    kind = getattr(config, "model_type", None)
    if kind not in ARCHITECTURES:
        raise ExportError(f"decoder export does not support model type {kind!r} yet (supported: "
                          f"{', '.join(sorted(ARCHITECTURES))}); an architecture with a plain "
                          f"key/value cache can be added with "
                          f"nlpforge.export.decoder_arch.register_architecture")
    arch = ARCHITECTURES[kind]
    reason = arch.refuse(config)
    if reason:
        raise ExportError(f"decoder export cannot export this {kind} model: {reason}")
    return arch


def describe(config: Any, arch: Architecture | None = None) -> DecoderShape:
    """The sizes of ``config`` (see the module docstring for where each comes from)."""
    arch = arch or architecture(config)
    normalized = _normalized(config)
    windows = [w for w in arch.windows(config) if w is not None]
    return DecoderShape(
        model_type=str(config.model_type),
        num_layers=_read(config, normalized, "num_layers" if normalized is not None
                         else "num_hidden_layers"),
        num_heads=_read(config, normalized, "num_attention_heads"),
        kv_heads=arch.kv_heads(config), head_dim=arch.head_dim(config),
        hidden_size=_read(config, normalized, "hidden_size"),
        vocab_size=int(config.vocab_size), sliding_window=min(windows) if windows else None)


def prepare_model(model: Any) -> None:
    """Code paths a trace can follow for any input: mixture-of-experts layers compute each
    token's experts by indexing (``batched_mm``) instead of looping over the experts hit."""
    setter = getattr(model, "set_experts_implementation", None)
    can = getattr(model, "_can_set_experts_implementation", None)
    if setter is not None and can is not None and can():
        setter("batched_mm")
