"""Tiny encoder-decoder models (T5, BART, Marian) with tokenizers trained on the fly.

Each helper writes a complete base-model directory — ``config.json``, ``model.safetensors``,
``generation_config.json``, ``tokenizer.json`` and ``tokenizer_config.json`` — from a config
(hidden size 32, 2 layers), so tests never download anything. The tokenizers follow their
family: T5 and Marian use a sentencepiece-style Unigram model (``<pad>``, ``</s>``, ``<unk>``; T5
adds the ``<extra_id_N>`` sentinels at the end of the vocabulary, ``<extra_id_0>`` last, as
the real T5 vocabulary does), BART a byte-level BPE (``<s>``, ``<pad>``, ``</s>``, ``<unk>``,
``<mask>``). Needs the train extra (torch, transformers).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nlpforge.testing.encoders import CORPUS

#: Short parallel-ish sentences so the tokenizers know both English and German words.
SEQ2SEQ_CORPUS = CORPUS + [
    "summarize: the meeting moved to friday because the room was booked",
    "translate English to German: the house is small and the garden is big",
    "das haus ist klein und der garten ist groß",
    "a man in a blue shirt is standing on a ladder",
    "ein mann in einem blauen hemd steht auf einer leiter",
    "two dogs are playing in the snow near a red car",
    "zwei hunde spielen im schnee neben einem roten auto",
    "#Person1#: hello, how are you? #Person2#: fine, thanks.",
]
#: How many ``<extra_id_N>`` sentinels the tiny T5 vocabulary has (the real one: 100).
T5_SENTINELS = 32


def _train_unigram(corpus: list[str], vocab_size: int, special: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.trainers import UnigramTrainer

    backend = Tokenizer(models.Unigram())
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(),
                                               normalizers.Replace(r"\s+", " ")])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = UnigramTrainer(vocab_size=vocab_size, special_tokens=special, unk_token="<unk>",
                             shrinking_factor=0.75)
    # a tiny corpus is repeated so the trainer sees enough counts; a real one is not
    backend.train_from_iterator(corpus * 3 if len(corpus) < 1000 else corpus, trainer)
    return backend


def train_t5_tokenizer(directory: str | os.PathLike, vocab_size: int = 300,
                       corpus: list[str] | None = None, sentinels: int = T5_SENTINELS) -> Path:
    """A T5-style tokenizer: Unigram, ``<pad>``=0, ``</s>``=1, ``<unk>``=2, ``</s>`` appended
    to every input, sentinels ``<extra_id_{sentinels-1}>`` … ``<extra_id_0>`` at the end."""
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    backend = _train_unigram(corpus or SEQ2SEQ_CORPUS, vocab_size, ["<pad>", "</s>", "<unk>"])
    extra = [f"<extra_id_{i}>" for i in reversed(range(sentinels))]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in extra])
    eos = backend.token_to_id("</s>")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        extra_special_tokens=list(reversed(extra)), model_max_length=512,
        model_input_names=["input_ids", "attention_mask"])
    fast.save_pretrained(directory)
    return directory


def train_bart_tokenizer(directory: str | os.PathLike, vocab_size: int = 400,
                         corpus: list[str] | None = None) -> Path:
    """A BART-style byte-level BPE: ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3,
    ``<mask>``; inputs are wrapped as ``<s> … </s>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=vocab_size,
                         special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = corpus or SEQ2SEQ_CORPUS
    backend.train_from_iterator(texts * 3 if len(texts) < 1000 else texts, trainer)
    bos, eos = backend.token_to_id("<s>"), backend.token_to_id("</s>")
    backend.post_processor = processors.RobertaProcessing(("</s>", eos), ("<s>", bos),
                                                          trim_offsets=False,
                                                          add_prefix_space=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>",
        model_max_length=512, model_input_names=["input_ids", "attention_mask"])
    fast.save_pretrained(directory)
    return directory


def _vocab(directory: Path) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(directory / "tokenizer.json"))


def _save(model: Any, directory: Path) -> Path:
    """Save weights, config and generation config."""
    model.save_pretrained(directory)
    return directory


def make_tiny_t5(directory: str | os.PathLike, seed: int = 0, vocab_size: int = 300,
                 corpus: list[str] | None = None, embeddings: int | None = None,
                 **config_overrides: Any) -> Path:
    """A randomly initialised 2-layer T5 (``T5ForConditionalGeneration``) with its tokenizer.

    ``vocab_size`` is what the tokenizer trainer aims for (a small corpus gives fewer);
    ``embeddings`` sets the model's vocabulary rows when they should outnumber the
    tokenizer's, as real T5 pads 32,100 tokens to 32,128. ``config_overrides`` go to
    ``T5Config`` (e.g. ``feed_forward_proj="gated-gelu"`` for a T5 v1.1-style model,
    ``tie_word_embeddings=False``).
    """
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    directory = train_t5_tokenizer(directory, vocab_size, corpus)
    vocab = _vocab(directory)
    settings = dict(vocab_size=max(vocab.get_vocab_size(), embeddings or 0), d_model=32,
                    d_kv=16, d_ff=64,
                    num_layers=2, num_decoder_layers=2, num_heads=2,
                    relative_attention_num_buckets=8, relative_attention_max_distance=32,
                    dropout_rate=0.1, pad_token_id=vocab.token_to_id("<pad>"),
                    eos_token_id=vocab.token_to_id("</s>"),
                    decoder_start_token_id=vocab.token_to_id("<pad>"))
    settings.update(config_overrides)
    torch.manual_seed(seed)
    return _save(T5ForConditionalGeneration(T5Config(**settings)), directory)


def make_tiny_bart(directory: str | os.PathLike, seed: int = 0, vocab_size: int = 400,
                   corpus: list[str] | None = None, **config_overrides: Any) -> Path:
    """A randomly initialised 2+2-layer BART (``BartForConditionalGeneration``) with its
    byte-level BPE tokenizer; ``config_overrides`` go to ``BartConfig``."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    directory = train_bart_tokenizer(directory, vocab_size, corpus)
    vocab = _vocab(directory)
    settings = dict(vocab_size=vocab.get_vocab_size(), d_model=32, encoder_layers=2,
                    decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                    encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=256,
                    dropout=0.1, attention_dropout=0.0, bos_token_id=vocab.token_to_id("<s>"),
                    pad_token_id=vocab.token_to_id("<pad>"),
                    eos_token_id=vocab.token_to_id("</s>"),
                    decoder_start_token_id=vocab.token_to_id("</s>"),
                    forced_bos_token_id=None, forced_eos_token_id=None)
    settings.update(config_overrides)
    torch.manual_seed(seed)
    return _save(BartForConditionalGeneration(BartConfig(**settings)), directory)


def make_tiny_marian(directory: str | os.PathLike, seed: int = 0, vocab_size: int = 300,
                     corpus: list[str] | None = None, **config_overrides: Any) -> Path:
    """A randomly initialised 2+2-layer Marian (sinusoidal positions, decoding starts from
    ``<pad>``) with a Unigram tokenizer (``</s>`` appended, as Marian's sentencepiece one)."""
    import torch
    from tokenizers import processors
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    backend = _train_unigram(corpus or SEQ2SEQ_CORPUS, vocab_size, ["</s>", "<unk>", "<pad>"])
    eos = backend.token_to_id("</s>")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A $B </s>", special_tokens=[("</s>", eos)])
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>",
                            pad_token="<pad>", model_max_length=512,
                            model_input_names=["input_ids", "attention_mask"]
                            ).save_pretrained(directory)
    pad = backend.token_to_id("<pad>")
    settings = dict(vocab_size=backend.get_vocab_size(), d_model=32, encoder_layers=2,
                    decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                    encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=256,
                    dropout=0.1, pad_token_id=pad, eos_token_id=eos,
                    decoder_start_token_id=pad, forced_eos_token_id=None)
    settings.update(config_overrides)
    torch.manual_seed(seed)
    model = MarianMTModel(MarianConfig(**settings))
    model.generation_config.bad_words_ids = None  # Marian bans <pad>; keep plain greedy
    return _save(model, directory)
