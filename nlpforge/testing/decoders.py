"""Tiny decoder-only models (GPT-2, Llama-style) built from configs, for tests (train extra).

Each maker writes a directory ``from_pretrained`` can load: ``config.json``,
``model.safetensors``, ``generation_config.json``, ``tokenizer.json`` and
``tokenizer_config.json`` (pad/eos/bos; the Llama one also has a chat template). The
tokenizer is a byte-level BPE trained on the fly, so any Unicode text encodes without
unknown tokens. Weights are drawn with a wider initializer than the default so that logits
are well separated: greedy decoding then does not hinge on float rounding between PyTorch
and ONNX Runtime.
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


def make_tiny_gpt2(directory: str | os.PathLike, seed: int = 0, **config_overrides: Any) -> Path:
    """A randomly initialised 2-layer GPT-2 (hidden 32) with a byte-level BPE tokenizer.

    ``<|endoftext|>`` is BOS and EOS (as in GPT-2); ``<|pad|>`` pads. Keyword arguments
    override ``GPT2Config`` fields (e.g. ``n_layer=3``).
    """
    import torch
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    directory = train_byte_bpe_tokenizer(directory, bos="<|endoftext|>", eos="<|endoftext|>",
                                         pad="<|pad|>")
    pad, eos, vocab = _token_ids(directory, "<|pad|>", "<|endoftext|>")
    settings = dict(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_inner=64,
                    n_positions=256, bos_token_id=eos, eos_token_id=eos, pad_token_id=pad,
                    initializer_range=0.2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    settings.update(config_overrides)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**settings))
    model.generation_config = GenerationConfig(bos_token_id=settings["bos_token_id"],
                                               eos_token_id=settings["eos_token_id"],
                                               pad_token_id=settings["pad_token_id"])
    model.save_pretrained(directory)
    return directory


def make_tiny_llama(directory: str | os.PathLike, seed: int = 0, **config_overrides: Any) -> Path:
    """A randomly initialised 2-layer Llama (hidden 32, 4 query heads sharing 2 KV heads,
    rotary positions) with a byte-level BPE tokenizer that adds ``<s>`` and has a chat
    template. Keyword arguments override ``LlamaConfig`` fields."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    directory = train_byte_bpe_tokenizer(
        directory, bos="<s>", eos="</s>", pad="<pad>",
        extra_special=("<|system|>", "<|user|>", "<|assistant|>"), add_bos=True,
        chat_template=LLAMA_CHAT_TEMPLATE)
    pad, bos, eos, vocab = _token_ids(directory, "<pad>", "<s>", "</s>")
    settings = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    max_position_embeddings=256, bos_token_id=bos, eos_token_id=eos,
                    pad_token_id=pad, initializer_range=0.2, tie_word_embeddings=False,
                    rope_theta=10000.0)
    settings.update(config_overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**settings))
    model.generation_config = GenerationConfig(bos_token_id=settings["bos_token_id"],
                                               eos_token_id=settings["eos_token_id"],
                                               pad_token_id=settings["pad_token_id"])
    model.save_pretrained(directory)
    return directory
