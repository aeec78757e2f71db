"""Tiny decoder-only models of every architecture the export knows, built from configs, for
tests (train extra).

``make_tiny_causal_lm(directory, model_type)`` builds any type of ``TINY_DECODERS`` (the table
tests and docs iterate over); ``make_tiny_gpt2`` and ``make_tiny_llama`` are the two the rest
of the suite trains on. Each writes a directory ``from_pretrained`` can load, as a real
checkpoint is: ``config.json``, ``model.safetensors``, ``generation_config.json``,
``tokenizer.json`` and ``tokenizer_config.json`` (pad/eos/bos; the Llama one also has a chat
template). The tokenizer is a byte-level BPE trained on the fly, so any Unicode text encodes
without unknown tokens. Weights are drawn with a wider initializer than the default so that
logits are well separated: greedy decoding then does not hinge on float rounding between
PyTorch and ONNX Runtime.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nlpforge.testing.encoders import CORPUS

DECODER_CORPUS = CORPUS + [
    "once upon a time there was a little model that learnt to write",
    "to be, or not to be, that is the question",
    "the quick brown fox jumps over the lazy dog",
    "user: what is the weather like? assistant: it is sunny and warm today",
    "question: how many legs does a spider have? answer: eight",
    "numbers 0 1 2 3 4 5 6 7 8 9 and punctuation ! ? . , ; :",
]

#: A simple chat template (Zephyr-like): role markers are special tokens, each turn ends
#: with the end-of-sequence token so a fine-tuned model learns to stop after its answer.
LLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def train_byte_bpe_tokenizer(directory: str | os.PathLike, *, bos: str, eos: str, pad: str,
                             extra_special: tuple[str, ...] = (), add_bos: bool = False,
                             vocab_size: int = 384, corpus: list[str] | None = None,
                             chat_template: str | None = None,
                             model_max_length: int = 1024) -> Path:
    """Train a byte-level BPE tokenizer and save it with transformers' files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    special = list(dict.fromkeys([pad, bos, eos, *extra_special]))
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                         show_progress=False)
    backend.train_from_iterator((corpus or DECODER_CORPUS) * 3, trainer)
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B",
            special_tokens=[(bos, backend.token_to_id(bos))])
    else:
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
    extra: dict[str, Any] = {}
    if chat_template is not None:
        extra["chat_template"] = chat_template
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=pad,
        unk_token=None, model_max_length=model_max_length, padding_side="left",
        model_input_names=["input_ids", "attention_mask"], **extra)
    fast.save_pretrained(directory)
    if chat_template is not None:
        _keep_chat_template_in_config(directory, chat_template)
    return directory


def _keep_chat_template_in_config(directory: Path, template: str) -> None:
    """transformers 5 saves the template to chat_template.jinja; older tools (and optimum)
    read it from tokenizer_config.json, so it is written to both."""
    import json

    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["chat_template"] = template
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _token_ids(directory: Path, *tokens: str) -> list[int]:
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(str(directory / "tokenizer.json"))
    return [backend.token_to_id(t) for t in tokens] + [backend.get_vocab_size()]


#: Sizes of the Llama-like configs: 2 layers, hidden 32, 4 query heads.
_COMMON = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=64, max_position_embeddings=256)
_GQA = dict(_COMMON, num_key_value_heads=2)
#: The attention window of the sliding-window configs: shorter than the prompts plus the
#: new tokens of the tests, so the window is reached, not only configured.
TINY_WINDOW = 6

#: model_type → config fields of its tiny model (the token ids, vocabulary size and
#: initializer are added by ``make_tiny_causal_lm``). What each exercises is in the comment.
TINY_DECODERS: dict[str, dict[str, Any]] = {
    # absolute positions, multi-head attention
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=256),
    # a global layer, then a local one masked to a window
    "gpt_neo": dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                    max_position_embeddings=256, attention_types=[[["global", "local"], 1]],
                    window_size=TINY_WINDOW),
    # partial rotary (a quarter of each head), parallel residual
    "gpt_neox": dict(_COMMON),
    # partial rotary of interleaved pairs
    "gptj": dict(n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=256, rotary_dim=4),
    # learnt positions with an offset of 2
    "opt": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                max_position_embeddings=256, word_embed_proj_dim=32),
    # alibi: positions from the attention mask, no position_ids
    "bloom": dict(hidden_size=32, n_layer=2, n_head=4),
    # multi-query attention: one key/value head
    "falcon": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   max_position_embeddings=256, new_decoder_architecture=False,
                   multi_query=True),
    # rotary, grouped-query attention
    "llama": dict(_GQA),
    # every layer within a sliding window
    "mistral": dict(_GQA, sliding_window=TINY_WINDOW),
    # mixture of experts (4 experts, 2 per token) and a sliding window
    "mixtral": dict(_GQA, num_local_experts=4, num_experts_per_tok=2,
                    sliding_window=TINY_WINDOW),
    # a full layer, then a sliding one (max_window_layers)
    "qwen2": dict(_GQA, use_sliding_window=True, sliding_window=TINY_WINDOW,
                  max_window_layers=1),
    # q/k norms, head_dim apart from hidden_size / heads
    "qwen3": dict(_GQA, head_dim=16),
    # partial rotary, parallel attention and MLP
    "phi": dict(_COMMON),
    # fused qkv, sliding window
    "phi3": dict(_GQA, sliding_window=TINY_WINDOW),
    # scaled embeddings, head_dim 16
    "gemma": dict(_GQA, head_dim=16),
    # local and global layers alternating, attention and final logit soft-capping
    "gemma2": dict(_GQA, head_dim=16, sliding_window=TINY_WINDOW),
    # local then global layer with their own rotary bases
    "gemma3_text": dict(_GQA, head_dim=16, sliding_window=TINY_WINDOW,
                        layer_types=["sliding_attention", "full_attention"]),
    # partial rotary, layer norms
    "stablelm": dict(_GQA),
    # non-parametric layer norms
    "olmo": dict(_GQA),
    # embedding, residual, attention and logit multipliers
    "granite": dict(_GQA, embedding_multiplier=2.0, logits_scaling=2.0),
    # a rotary layer, then one without positions (NoPE)
    "smollm3": dict(_GQA, no_rope_layers=[1, 0]),
    # -- optimum-onnx 0.1.0's other text-generation-with-past types --
    # Llama-like with a ReLU² MLP
    "arcee": dict(_GQA),
    # partial rotary of interleaved pairs, fused qkv
    "codegen": dict(n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=256, rotary_dim=4),
    # parallel attention and MLP, interleaved rotary, logit scale
    "cohere": dict(_GQA, logit_scale=0.5),
    # multi-head latent attention (a cache of the 16-wide latent and the 4-wide rotated key),
    # a dense layer then routed and shared experts in groups
    "deepseek_v3": dict(_COMMON, num_key_value_heads=4, kv_lora_rank=16, q_lora_rank=24,
                        qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8,
                        n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2,
                        moe_intermediate_size=16, first_k_dense_replace=1, n_group=2,
                        topk_group=1),
    # half of each head rotated, interleaved
    "glm": dict(_GQA, head_dim=8),
    # multi-query attention (one key/value head), absolute positions
    "gpt_bigcode": dict(n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=256,
                        multi_query=True),
    # attention sinks, sliding and full layers alternating, experts with a clamped SwiGLU
    "gpt_oss": dict(_GQA, head_dim=8, num_local_experts=4, num_experts_per_tok=2,
                    sliding_window=TINY_WINDOW,
                    layer_types=["sliding_attention", "full_attention"]),
    # Llama-like with attention biases off and its own norms
    "helium": dict(_GQA, head_dim=8),
    # alibi from key positions, no position_ids
    "mpt": dict(d_model=32, n_heads=4, n_layers=2, expansion_ratio=2, max_seq_len=256),
    # partial rotary, layer norm + 1, squared-ReLU MLP
    "nemotron": dict(_GQA, head_dim=8, partial_rotary_factor=0.5),
    # q/k norms over all heads, norms after attention and MLP
    "olmo2": dict(_GQA),
    # q/k norms and experts (4, 2 per token)
    "qwen3_moe": dict(_GQA, head_dim=16, num_experts=4, num_experts_per_tok=2,
                      moe_intermediate_size=16),
    # -- further common types --
    # sliding window, biases, layer norms
    "starcoder2": dict(_GQA, sliding_window=TINY_WINDOW),
    # sliding (rotary) then global (no positions) layers, parallel blocks
    "cohere2": dict(_GQA, sliding_window=TINY_WINDOW,
                    layer_types=["sliding_attention", "full_attention"]),
    # OLMo-2 with sliding and full layers alternating
    "olmo3": dict(_GQA, sliding_window=TINY_WINDOW,
                  layer_types=["sliding_attention", "full_attention"]),
    # experts (4, 2 per token), q/k norms
    "olmoe": dict(_GQA, num_experts=4, num_experts_per_tok=2),
    # experts and Granite's multipliers
    "granitemoe": dict(_GQA, num_local_experts=4, num_experts_per_tok=2,
                       embedding_multiplier=2.0, logits_scaling=2.0),
    # interleaved rotary, head_dim set apart
    "ernie4_5": dict(_GQA, head_dim=16),
    # sliding then global layers, q/k norms, norms after attention and MLP
    "exaone4": dict(_GQA, sliding_window=TINY_WINDOW,
                    layer_types=["sliding_attention", "full_attention"]),
    # Llama-like with attention biases
    "seed_oss": dict(_GQA, head_dim=16),
    # q/k norms after rotary
    "hunyuan_v1_dense": dict(_GQA, head_dim=16),
    # partial rotary, q/k layer norms, squared ReLU
    "persimmon": dict(_COMMON, qk_layernorm=True),
    # routed experts and a gated shared expert
    "qwen2_moe": dict(_GQA, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                      shared_expert_intermediate_size=32),
}


#: Variants of a ``TINY_DECODERS`` type whose export differs: name → (model_type, fields added
#: to its tiny config).
TINY_DECODER_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    # grouped key/value heads instead of multi-query (Falcon-40B/180B)
    "falcon (new_decoder_architecture)": ("falcon", dict(new_decoder_architecture=True,
                                                         num_kv_heads=2)),
    # alibi positions instead of rotary (Falcon-RW)
    "falcon (alibi)": ("falcon", dict(alibi=True)),
}


def tiny_decoder_cases() -> dict[str, tuple[str, dict[str, Any]]]:
    """Every tiny decoder the matrix builds: name → (model_type, config fields) for the types
    of ``TINY_DECODERS`` (named by their type) and ``TINY_DECODER_VARIANTS``."""
    cases = {kind: (kind, dict(settings)) for kind, settings in TINY_DECODERS.items()}
    for name, (kind, extra) in TINY_DECODER_VARIANTS.items():
        cases[name] = (kind, {**TINY_DECODERS[kind], **extra})
    return cases


def refused_decoder_config(model_type: str) -> Any:
    """The default config of a model type the decoder export refuses for every config
    (``decoder_arch.REFUSED``: recurrent, state-space and hybrid caches, remote-code types);
    a bare stand-in naming the type where transformers has no config class for it."""
    from types import SimpleNamespace

    from transformers import CONFIG_MAPPING, AutoConfig

    if model_type in CONFIG_MAPPING:
        return AutoConfig.for_model(model_type)
    return SimpleNamespace(model_type=model_type)


def architecture_status() -> dict[str, str]:
    """Name of each ``tiny_decoder_cases()`` entry, then each model type the export refuses
    outright (``decoder_arch.REFUSED``) → "exports", or the ``ExportError`` message the
    decoder export refuses its config with (tests/test_decoder_matrix.py checks both;
    docs/architectures.md lists them)."""
    from transformers import AutoConfig

    from nlpforge.errors import ExportError
    from nlpforge.export.decoder_arch import REFUSED, architecture

    configs = [(name, lambda kind=kind, settings=settings: AutoConfig.for_model(kind, **settings))
               for name, (kind, settings) in tiny_decoder_cases().items()]
    configs += [(kind, lambda kind=kind: refused_decoder_config(kind)) for kind in REFUSED]
    status = {}
    for name, config in configs:
        try:
            architecture(config())
            status[name] = "exports"
        except ExportError as exc:
            status[name] = str(exc)
    return status


def make_tiny_causal_lm(directory: str | os.PathLike, model_type: str, seed: int = 0, *,
                        tokenizer: dict[str, Any] | None = None,
                        **config_overrides: Any) -> Path:
    """A randomly initialised tiny ``model_type`` (a key of ``TINY_DECODERS``, or any causal
    LM type given its sizes in ``config_overrides``) with a byte-level BPE tokenizer, saved
    as a ``save_pretrained`` checkpoint with its ``generation_config.json``.

    ``<s>``, ``</s>`` and ``<pad>`` are BOS, EOS and padding unless ``tokenizer`` (arguments of
    ``train_byte_bpe_tokenizer``) names others; the vocabulary size is the tokenizer's. Keyword
    arguments override the config's fields.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    tokens = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "model_max_length": 256,
              **(tokenizer or {})}
    directory = train_byte_bpe_tokenizer(directory, **tokens)
    pad, bos, eos, vocab = _token_ids(directory, tokens["pad"], tokens["bos"], tokens["eos"])
    settings = dict(TINY_DECODERS.get(model_type, {}), vocab_size=vocab, bos_token_id=bos,
                    eos_token_id=eos, pad_token_id=pad, initializer_range=0.2)
    settings.update(config_overrides)
    config = AutoConfig.for_model(model_type, **settings)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id,
                                               eos_token_id=config.eos_token_id,
                                               pad_token_id=config.pad_token_id)
    model.save_pretrained(directory)
    return directory


def make_tiny_gpt2(directory: str | os.PathLike, seed: int = 0, **config_overrides: Any) -> Path:
    """A randomly initialised 2-layer GPT-2 (hidden 32, 2 heads) with a byte-level BPE
    tokenizer.

    ``<|endoftext|>`` is BOS and EOS (as in GPT-2); ``<|pad|>`` pads. Keyword arguments
    override ``GPT2Config`` fields (e.g. ``n_layer=3``).
    """
    settings = dict(n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    settings.update(config_overrides)
    return make_tiny_causal_lm(
        directory, "gpt2", seed, **settings,
        tokenizer=dict(bos="<|endoftext|>", eos="<|endoftext|>", pad="<|pad|>",
                       model_max_length=1024))


def make_tiny_llama(directory: str | os.PathLike, seed: int = 0, **config_overrides: Any) -> Path:
    """A randomly initialised 2-layer Llama (hidden 32, 4 query heads sharing 2 KV heads,
    rotary positions) with a byte-level BPE tokenizer that adds ``<s>`` and has a chat
    template. Keyword arguments override ``LlamaConfig`` fields."""
    settings = dict(tie_word_embeddings=False, rope_theta=10000.0)
    settings.update(config_overrides)
    return make_tiny_causal_lm(
        directory, "llama", seed, **settings,
        tokenizer=dict(extra_special=("<|system|>", "<|user|>", "<|assistant|>"), add_bos=True,
                       chat_template=LLAMA_CHAT_TEMPLATE, model_max_length=1024))
