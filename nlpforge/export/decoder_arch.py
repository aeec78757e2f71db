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


def _multi_query_heads(config: Any) -> int:
    """GPT-BigCode: one key/value head with ``multi_query`` (StarCoder, SantaCoder), one per
    query head without."""
    return 1 if getattr(config, "multi_query", True) else int(config.num_attention_heads)


def _one_head(config: Any) -> int:
    return 1


def _latent_dim(config: Any) -> int:
    """DeepSeek-V3's multi-head latent attention caches the compressed latent, shared by all
    heads, as a single-head "key" of ``kv_lora_rank`` …"""
    return int(config.kv_lora_rank)


def _latent_rope_dim(config: Any) -> int:
    """… and the rotated key part, shared by all heads, as a single-head "value" of
    ``qk_rope_head_dim``; the heads' keys and values are decompressed from them at each step."""
    return int(config.qk_rope_head_dim)


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


#: Why the recurrent, state-space and hybrid model types are refused: their generation cache
#: is not (only) a growing key/value tensor per layer, so the graph's
#: ``past_key_values.{i}.key/value`` in / ``present.{i}.*`` out layout cannot carry it.
RECURRENT = ("its cache is a fixed-size recurrent state per layer ({what}), not a key/value "
             "cache that grows with the sequence; the KV-cache export cannot carry it")
HYBRID = ("a hybrid of attention layers and {what} layers: the latter keep a fixed-size "
          "recurrent state, not a key/value cache, so the KV-cache export cannot carry the "
          "model's cache")
#: model_type → why the decoder export refuses it (every config of that type); a plugin may
#: still register an ``Architecture`` for one of these types, which then takes precedence.
REFUSED: dict[str, str] = {
    "mamba": RECURRENT.format(what="Mamba's convolution and SSM states"),
    "mamba2": RECURRENT.format(what="Mamba-2's convolution and SSM states"),
    "falcon_mamba": RECURRENT.format(what="Mamba convolution and SSM states"),
    "rwkv": RECURRENT.format(what="RWKV's time-mixing state"),
    "xlstm": RECURRENT.format(what="xLSTM's matrix memory"),
    "recurrent_gemma": HYBRID.format(what="RG-LRU recurrent"),
    "jamba": HYBRID.format(what="Mamba"),
    "bamba": HYBRID.format(what="Mamba-2"),
    "falcon_h1": HYBRID.format(what="Mamba-2 (in parallel with attention)"),
    "zamba": HYBRID.format(what="Mamba"),
    "zamba2": HYBRID.format(what="Mamba-2"),
    "granitemoehybrid": HYBRID.format(what="Mamba-2"),
    "nemotron_h": HYBRID.format(what="Mamba-2"),
    "lfm2": HYBRID.format(what="short gated convolution"),
    "lfm2_moe": HYBRID.format(what="short gated convolution"),
    "qwen3_next": HYBRID.format(what="Gated DeltaNet linear-attention"),
    "kimi_linear": HYBRID.format(what="Kimi Delta Attention linear-attention"),
    "minimax": HYBRID.format(what="lightning (linear) attention"),
    "olmo_hybrid": HYBRID.format(what="Gated DeltaNet linear-attention"),
    "gemma3": ("the multimodal Gemma 3 (Gemma3ForConditionalGeneration: images and text) is "
               "not a causal-LM checkpoint the text-generation export takes; its text decoder "
               "is the gemma3_text type (Gemma3ForCausalLM, as Gemma 3 270M and 1B are saved), "
               "which exports"),
    "internlm2": ("InternLM2's modeling code is not part of transformers (remote code only, "
                  "trust_remote_code=True), and the export supports the architectures "
                  "transformers implements itself; a checkpoint converted to the llama type "
                  "exports"),
}


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
    #: the value head size, where it differs from the key's (None: the key's)
    value_head_dim: Callable[[Any], int] | None = None
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
    #: equal to head_dim except where keys and values differ (DeepSeek-V3's latent cache)
    value_head_dim: int
    hidden_size: int
    vocab_size: int
    #: the smallest attention window of any layer; None when every layer attends to all keys
    sliding_window: int | None


#: Model types with a plain key/value cache per layer. Each was checked by
#: tests/test_decoder_matrix.py: export, validation, greedy and beam-search tokens identical to
#: ``generate()``. Per type, what differs is handled by the model's own code under the
#: same wrapper: BLOOM's and MPT's alibi come from the attention mask or key positions;
#: Falcon's multi-query and new_decoder_architecture set ``num_key_value_heads``; GPT-J,
#: GPT-NeoX, CodeGen, Persimmon, Phi, GLM and Nemotron rotate part of each head; OPT adds its
#: position offset itself; Gemma-2/3, Cohere-2, OLMo-3, EXAONE-4 and gpt-oss alternate
#: sliding-window and global layers, Phi-3, Mistral and Starcoder2 keep a window (see the
#: module docstring); gpt-oss adds attention sinks; Mixtral, Qwen2/3-MoE, OLMoE, GraniteMoE,
#: gpt-oss and DeepSeek-V3 route to experts. Falcon with alibi is refused.
STANDARD = Architecture()
ARCHITECTURES: dict[str, Architecture] = {
    kind: STANDARD for kind in (
        "gpt2", "gpt_neox", "gptj", "opt", "bloom", "llama", "mistral", "mixtral", "qwen2",
        "qwen3", "phi", "phi3", "gemma", "gemma2", "gemma3_text", "stablelm", "olmo",
        "granite", "smollm3",
        # optimum-onnx 0.1.0's text-generation-with-past types
        "arcee", "codegen", "cohere", "glm", "gpt_oss", "helium", "mpt", "nemotron", "olmo2",
        "qwen3_moe",
        # further common ones
        "starcoder2", "cohere2", "olmo3", "olmoe", "granitemoe", "ernie4_5", "exaone4",
        "seed_oss", "hunyuan_v1_dense", "persimmon", "qwen2_moe")
}
ARCHITECTURES["gpt_neo"] = Architecture(windows=_gpt_neo_windows)
ARCHITECTURES["falcon"] = Architecture(refuse=_falcon_refusal)
#: one key/value head (multi_query) or one per query head, whatever num_key_value_heads says
ARCHITECTURES["gpt_bigcode"] = Architecture(kv_heads=_multi_query_heads)
#: latent attention: the cache holds the compressed latent and the rotated key part (one head)
ARCHITECTURES["deepseek_v3"] = Architecture(kv_heads=_one_head, head_dim=_latent_dim,
                                            value_head_dim=_latent_rope_dim)


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
    if kind not in ARCHITECTURES and kind in REFUSED:
        raise ExportError(f"decoder export does not support model type {kind!r}: "
                          f"{REFUSED[kind]} (supported: {', '.join(sorted(ARCHITECTURES))})")
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
    text = config.get_text_config(decoder=True)  # a multimodal config's text decoder
    normalized = _normalized(text)
    windows = [w for w in arch.windows(config) if w is not None]
    head_dim = arch.head_dim(text)
    return DecoderShape(
        model_type=str(config.model_type),
        num_layers=_read(text, normalized, "num_layers" if normalized is not None
                         else "num_hidden_layers"),
        num_heads=_read(text, normalized, "num_attention_heads"),
        kv_heads=arch.kv_heads(text), head_dim=head_dim,
        value_head_dim=arch.value_head_dim(text) if arch.value_head_dim else head_dim,
        hidden_size=_read(text, normalized, "hidden_size"),
        vocab_size=int(text.vocab_size), sliding_window=min(windows) if windows else None)


def prepare_model(model: Any) -> None:
    """Code paths a trace can follow for any input: mixture-of-experts layers compute each
    token's experts by indexing (``batched_mm``) instead of looping over the experts hit."""
    setter = getattr(model, "set_experts_implementation", None)
    can = getattr(model, "_can_set_experts_implementation", None)
    if setter is not None and can is not None and can():
        setter("batched_mm")
