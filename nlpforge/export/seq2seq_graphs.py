"""The three graphs of an encoder-decoder export, as PyTorch modules with flat tensor IO.

Layout, tensor names and the order of the cache tensors (layer by layer: each layer's
self-attention key and value, then its cross-attention key and value) are optimum's
``ORTModelForSeq2SeqLM``, which feeds and reads caches by position:

- ``encoder_model.onnx``: ``input_ids``, ``attention_mask`` → ``last_hidden_state``;
- ``decoder_model.onnx`` (the first step): ``input_ids``, ``encoder_attention_mask``,
  ``encoder_hidden_states`` → ``logits``, ``present.{i}.decoder.key/value`` (self-attention)
  and ``present.{i}.encoder.key/value`` (cross-attention, computed once here);
- ``decoder_with_past_model.onnx`` (every later step): ``input_ids`` (one token per row),
  ``encoder_attention_mask``, ``past_key_values.{i}.decoder.*`` and
  ``past_key_values.{i}.encoder.*`` → ``logits`` and ``present.{i}.decoder.*`` (the
  cross-attention cache does not change, so it is not returned).

Two decoder graphs rather than one merged graph: whether cross-attention keys are computed
or reused is a Python branch inside transformers, which a trace cannot keep; optimum's merged
graph wraps both traces in an ``If`` node, which buys nothing at run time.

Nothing here is specific to an architecture: the wrappers only use the
``AutoModelForSeq2SeqLM`` interface (``get_encoder()``, ``encoder_outputs``, an
``EncoderDecoderCache``), and the cache sizes are read from a PyTorch run
(:func:`cache_layout`), so T5 (v1.0 and v1.1), mT5, UMT5, LongT5, BART, mBART, PLBART, Marian,
Pegasus, BigBird-Pegasus, Blenderbot(-small), M2M-100, FSMT and bert2bert export through the
same code (``TINY_ENCODER_DECODERS`` in ``nlpforge.testing.encoder_decoders`` is the checked
list); two things are per architecture: ``REFUSED``/:func:`refusal` (types whose export cannot
be right, and why) and :func:`prepare_model` (Switch Transformers' experts, gathered by index
for the trace). A model that does not follow the interface is refused in
:func:`cache_layout` with an ``ExportError`` naming its type.

Why the layout is not read with optimum's ``NormalizedConfigManager``: for these model types
it returns a ``NormalizedTextConfig`` (not ``NormalizedSeq2SeqConfig``), whose layer count is
the encoder's and whose head size is ``hidden_size / num_attention_heads``. Both are wrong for
real checkpoints: T5's ``num_decoder_layers`` may differ from ``num_layers``, mT5-small has
``d_kv=64`` with 6 heads and ``d_model=512``, and BART-like decoders may have their own head
count. The shapes of the caches PyTorch returns are right by construction, for every type.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from nlpforge.errors import ExportError

ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model.onnx"
DECODER_WITH_PAST_FILE = "decoder_with_past_model.onnx"
KINDS = ("key", "value")


def past_names(num_layers: int, part: str) -> list[str]:
    """``past_key_values.{i}.{part}.key/value``; ``part`` is ``decoder`` or ``encoder``."""
    return [f"past_key_values.{i}.{part}.{k}" for i in range(num_layers) for k in KINDS]


def present_names(num_layers: int, part: str) -> list[str]:
    return [f"present.{i}.{part}.{k}" for i in range(num_layers) for k in KINDS]


def by_layer(prefix: str, num_layers: int) -> list[str]:
    """Both caches' names layer by layer, in the order optimum's ORTModelForSeq2SeqLM feeds
    them by position: ``{prefix}.{i}.decoder.key/value``, ``{prefix}.{i}.encoder.key/value``."""
    return [f"{prefix}.{i}.{part}.{k}" for i in range(num_layers)
            for part in ("decoder", "encoder") for k in KINDS]


@dataclass(frozen=True)
class GraphSignature:
    """Input and output names of one graph, with the labels of their dynamic axes."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]

    def axes_json(self) -> dict[str, dict[str, str]]:
        return {k: {str(a): n for a, n in v.items()} for k, v in self.dynamic_axes.items()}


def encoder_signature() -> GraphSignature:
    tokens = {0: "batch_size", 1: "encoder_sequence_length"}
    return GraphSignature(("input_ids", "attention_mask"), ("last_hidden_state",),
                          {"input_ids": tokens, "attention_mask": tokens,
                           "last_hidden_state": tokens})


def decoder_signature(num_layers: int) -> GraphSignature:
    self_out, cross_out = present_names(num_layers, "decoder"), present_names(num_layers,
                                                                              "encoder")
    enc = {0: "batch_size", 1: "encoder_sequence_length"}
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch_size", 1: "decoder_sequence_length"},
        "encoder_attention_mask": enc, "encoder_hidden_states": enc,
        "logits": {0: "batch_size", 1: "decoder_sequence_length"}}
    axes.update({n: {0: "batch_size", 2: "decoder_sequence_length"} for n in self_out})
    axes.update({n: {0: "batch_size", 2: "encoder_sequence_length"} for n in cross_out})
    return GraphSignature(("input_ids", "encoder_attention_mask", "encoder_hidden_states"),
                          ("logits", *by_layer("present", num_layers)), axes)


def decoder_with_past_signature(num_layers: int) -> GraphSignature:
    self_in, cross_in = past_names(num_layers, "decoder"), past_names(num_layers, "encoder")
    self_out = present_names(num_layers, "decoder")
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch_size"},
        "encoder_attention_mask": {0: "batch_size", 1: "encoder_sequence_length"},
        "logits": {0: "batch_size"}}
    axes.update({n: {0: "batch_size", 2: "past_decoder_sequence_length"} for n in self_in})
    axes.update({n: {0: "batch_size", 2: "encoder_sequence_length"} for n in cross_in})
    axes.update({n: {0: "batch_size", 2: "past_decoder_sequence_length + 1"} for n in self_out})
    return GraphSignature(("input_ids", "encoder_attention_mask",
                           *by_layer("past_key_values", num_layers)), ("logits", *self_out), axes)


def _cache_arg(model: Any) -> str:
    """transformers ≥ 5.2x calls the cache argument ``cache``; earlier 5.x ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else \
        "past_key_values"


def _returned_cache(out: Any) -> Any:
    cache = out.get("cache")
    return cache if cache is not None else out.get("past_key_values")


def _encoded(hidden: torch.Tensor) -> Any:
    """The encoder's states as the model's forward takes ``encoder_outputs``: a model output,
    not a tuple (ProphetNet reads ``.last_hidden_state``, Switch Transformers also
    ``.router_logits``; the others index it). The MoE output has every field they read."""
    from transformers.modeling_outputs import MoEModelOutput

    return MoEModelOutput(last_hidden_state=hidden)


def _flatten(cache: Any, num_layers: int, part: str) -> list[torch.Tensor]:
    inner = cache.self_attention_cache if part == "decoder" else cache.cross_attention_cache
    flat: list[torch.Tensor] = []
    for i in range(num_layers):
        layer = inner.layers[i]
        flat += [layer.keys, layer.values]
    return flat


class EncoderGraph(torch.nn.Module):
    """``input_ids``, ``attention_mask`` → the encoder's ``last_hidden_state``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.signature = encoder_signature()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor]:
        out = self.model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
        return (out.last_hidden_state,)


class DecoderGraph(torch.nn.Module):
    """The first decoder step: no cache in; logits, self- and cross-attention caches out."""

    def __init__(self, model: torch.nn.Module, num_layers: int):
        super().__init__()
        self.model, self.num_layers = model, num_layers
        self.cache_arg = _cache_arg(model)
        self.signature = decoder_signature(num_layers)

    def forward(self, input_ids: torch.Tensor, encoder_attention_mask: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache, EncoderDecoderCache

        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        out = self.model(decoder_input_ids=input_ids, attention_mask=encoder_attention_mask,
                         encoder_outputs=_encoded(encoder_hidden_states), use_cache=True,
                         **{self.cache_arg: cache})
        returned = _returned_cache(out)
        own = _flatten(returned, self.num_layers, "decoder")
        cross = _flatten(returned, self.num_layers, "encoder")
        layers = [t for i in range(self.num_layers)
                  for t in (*own[2 * i:2 * i + 2], *cross[2 * i:2 * i + 2])]
        return (out.logits, *layers)


class DecoderWithPastGraph(torch.nn.Module):
    """Later steps: one token per row and both caches in; logits and the grown self-attention
    cache out. The encoder's hidden states are not needed: the cross-attention cache holds
    their projections (a zero placeholder of the right shape is passed to the model)."""

    def __init__(self, model: torch.nn.Module, num_layers: int, hidden_size: int):
        super().__init__()
        self.model, self.num_layers, self.hidden_size = model, num_layers, hidden_size
        self.cache_arg = _cache_arg(model)
        self.signature = decoder_with_past_signature(num_layers)

    def forward(self, input_ids: torch.Tensor, encoder_attention_mask: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache, EncoderDecoderCache

        self_cache, cross_cache = DynamicCache(), DynamicCache()
        for i in range(self.num_layers):  # by layer: own key, value, cross key, value
            self_cache.update(past[4 * i], past[4 * i + 1], i)
            cross_cache.update(past[4 * i + 2], past[4 * i + 3], i)
        cache = EncoderDecoderCache(self_cache, cross_cache)
        placeholder = torch.zeros(*encoder_attention_mask.shape, self.hidden_size,
                                  dtype=past[0].dtype)
        out = self.model(decoder_input_ids=input_ids, attention_mask=encoder_attention_mask,
                         encoder_outputs=_encoded(placeholder), use_cache=True,
                         **{self.cache_arg: cache})
        return (out.logits, *_flatten(_returned_cache(out), self.num_layers, "decoder"))


#: model_type → why the encoder-decoder export refuses it (every config of that type)
REFUSED: dict[str, str] = {
    "prophetnet": ("transformers' own cached generation of ProphetNet fails (generate() with "
                   "use_cache=True raises \"`position_ids` are incorrect\" in its n-gram "
                   "self-attention once a cache is passed), so there is no cached decoder step "
                   "to export or to check the export against"),
    "led": ("LED's encoder pads its input to a multiple of attention_window and lays out its "
            "sliding-window attention from sizes computed in Python, which a trace freezes at "
            "the dummy input's length: the encoder graph fails on any other length (as "
            "Longformer's)"),
}


def refusal(config: Any) -> str | None:
    """Why ``config`` cannot be exported as an encoder-decoder (None: it can)."""
    kind = getattr(config, "model_type", None)
    if kind in REFUSED:
        return REFUSED[kind]
    if kind == "bigbird_pegasus" and getattr(config, "attention_type", None) == "block_sparse":
        return ("attention_type='block_sparse': the encoder's block-sparse attention lays out "
                "its blocks from the input length, and below (5 + 2 * num_random_blocks) * "
                "block_size tokens falls back to full attention, choices a trace freezes at "
                "the dummy input's length; set attention_type to 'original_full' in "
                "config.json to export full attention (PyTorch's own numbers up to that length)")
    return None


def prepare_model(model: torch.nn.Module) -> None:
    """Code paths a trace can follow for any input: mixture-of-experts layers compute each
    token's expert by indexing rather than by looping over the experts a batch hits (which a
    trace would freeze): transformers' ``batched_mm`` where the model offers it, and the same
    gather for Switch Transformers' top-1 experts."""
    from nlpforge.export.decoder_arch import prepare_model as prepare_experts

    prepare_experts(model)
    for module in model.modules():
        if type(module).__name__ == "SwitchTransformersExperts":
            module.forward = _gathered_top1_experts(module)


def _gathered_top1_experts(experts: torch.nn.Module) -> Any:
    """Switch Transformers' experts (``wi`` → act → ``wo`` each, no biases) applied to each
    token through its own expert's stacked weights; a token routed nowhere (over capacity)
    gets zeros, as in transformers' loop."""
    blocks = [experts[f"expert_{i}"] for i in range(experts.num_experts)]
    act = blocks[0].act

    def forward(hidden_states: torch.Tensor, selected_experts: torch.Tensor,
                routing_weights: torch.Tensor) -> torch.Tensor:
        wi = torch.stack([b.wi.weight for b in blocks])  # [experts, ff, d]
        wo = torch.stack([b.wo.weight for b in blocks])  # [experts, d, ff]
        chosen = selected_experts[:, 0, :]  # [tokens, experts], one-hot or all zeros
        index = chosen.argmax(dim=-1)
        inner = act(torch.bmm(wi[index], hidden_states.unsqueeze(-1)).squeeze(-1))
        out = torch.bmm(wo[index], inner.unsqueeze(-1)).squeeze(-1)
        weight = routing_weights[:, 0] * chosen.sum(dim=-1).to(out.dtype)
        return (out * weight.unsqueeze(-1)).to(hidden_states.dtype)

    return forward


@dataclass(frozen=True)
class CacheLayout:
    """What a loader needs to allocate and name the caches."""

    num_layers: int
    num_heads: int  # self-attention
    head_dim: int
    cross_num_heads: int
    cross_head_dim: int
    hidden_size: int
    vocab_size: int

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


def cache_layout(model: torch.nn.Module) -> CacheLayout:
    """Sizes read from one PyTorch decoder step on a dummy batch: the caches' own shapes are
    the one place the layout comes from, for every architecture. ExportError naming the
    model type when the model does not follow the interface the graphs use."""
    from transformers import DynamicCache, EncoderDecoderCache

    kind = getattr(model.config, "model_type", type(model).__name__)
    reason = refusal(model.config)
    if reason:
        raise ExportError(f"model type {kind!r} cannot be exported as an encoder-decoder: "
                          f"{reason}")
    ids = torch.full((1, 2), 4, dtype=torch.long)
    mask = torch.ones_like(ids)
    try:
        with torch.inference_mode():
            encoded = model.get_encoder()(input_ids=ids, attention_mask=mask)
            hidden = getattr(encoded, "last_hidden_state", None)
            if not isinstance(hidden, torch.Tensor):
                raise ValueError(f"its encoder returns {type(encoded).__name__}, not a model "
                                 f"output with last_hidden_state")
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            out = model(decoder_input_ids=ids[:, :1], attention_mask=mask,
                        encoder_outputs=_encoded(hidden), use_cache=True,
                        **{_cache_arg(model): cache})
        returned = _returned_cache(out)
        if not isinstance(returned, EncoderDecoderCache) or \
                not returned.cross_attention_cache.layers:
            raise ValueError(f"its decoder returns {type(returned).__name__} as cache, not an "
                             f"EncoderDecoderCache with self- and cross-attention keys/values")
    except Exception as exc:
        raise ExportError(f"model type {kind!r} cannot be exported as an encoder-decoder "
                          f"(encoder, decoder, decoder-with-past graphs): {exc}") from None
    layers = len(returned.self_attention_cache.layers)
    self_key = returned.self_attention_cache.layers[0].keys
    cross_key = returned.cross_attention_cache.layers[0].keys
    return CacheLayout(num_layers=layers, num_heads=int(self_key.shape[1]),
                       head_dim=int(self_key.shape[3]), cross_num_heads=int(cross_key.shape[1]),
                       cross_head_dim=int(cross_key.shape[3]),
                       hidden_size=int(hidden.shape[-1]), vocab_size=int(out.logits.shape[-1]))


def graphs(model: torch.nn.Module, layout: CacheLayout) -> dict[str, torch.nn.Module]:
    """File name → wrapper, in export order."""
    return {ENCODER_FILE: EncoderGraph(model).eval(),
            DECODER_FILE: DecoderGraph(model, layout.num_layers).eval(),
            DECODER_WITH_PAST_FILE: DecoderWithPastGraph(model, layout.num_layers,
                                                         layout.hidden_size).eval()}


def run_graph(wrapper: torch.nn.Module, features: dict[str, Any],
              dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Run a wrapper on numpy features in PyTorch; named numpy outputs (float32).

    ``dtype=torch.float64``: the model's weights and the float inputs are converted for this
    run and the weights converted back after it (float32 → float64 → float32 is exact); the
    outputs stay float64 — the yardstick of float32 rounding in validation."""
    import numpy as np

    names: Sequence[str] = wrapper.signature.inputs
    model = wrapper.model
    original = next(model.parameters()).dtype
    args = [torch.from_numpy(np.ascontiguousarray(features[n])) for n in names]
    if dtype != torch.float32:
        args = [a.to(dtype) if a.is_floating_point() else a for a in args]
        model.to(dtype)
    try:
        with torch.inference_mode():
            out = wrapper(*args)
        return {n: (t.float() if dtype == torch.float32 else t).numpy()
                for n, t in zip(wrapper.signature.outputs, out)}
    finally:
        if dtype != torch.float32:
            model.to(original)


def run_nudged(wrapper: torch.nn.Module, features: dict[str, Any]) -> dict[str, Any]:
    """``run_graph`` in float32 with every weight and float input one unit in the last place
    off, up or down at random (a fixed seed): a second float32 computation as valid as the
    first, whose distance from float64 shows how far float32 rounding reaches on this model
    and input when one run happens to land close. The flips are undone exactly after it."""
    import numpy as np

    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    params = [p for p in wrapper.model.parameters() if p.dtype == torch.float32]
    masks = [torch.randint(0, 2, p.shape, generator=generator, dtype=torch.int32)
             for p in params]
    nudged = {n: _flip_last_bit(v, rng) for n, v in features.items()}
    with torch.no_grad():
        for p, mask in zip(params, masks):
            p.view(torch.int32).bitwise_xor_(mask)
        try:
            return run_graph(wrapper, nudged)
        finally:
            for p, mask in zip(params, masks):
                p.view(torch.int32).bitwise_xor_(mask)


def _flip_last_bit(value: Any, rng: Any) -> Any:
    """A float32 array with its last mantissa bit flipped at random places; others as given."""
    import numpy as np

    if not isinstance(value, np.ndarray) or value.dtype != np.float32:
        return value
    flipped = np.ascontiguousarray(value).copy()
    flipped.view(np.int32)[...] ^= rng.integers(0, 2, value.shape, dtype=np.int32)
    return flipped
