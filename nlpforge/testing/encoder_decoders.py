"""Tiny encoder-decoder models (T5, mT5, UMT5, LongT5, Switch Transformers, BART, mBART, PLBART,
Marian, Pegasus, BigBird-Pegasus, Blenderbot, Blenderbot-small, M2M-100/NLLB, FSMT, bert2bert)
with tokenizers trained on the fly.

Each helper writes a complete base-model directory — ``config.json``, ``model.safetensors``,
``generation_config.json``, ``tokenizer.json`` and ``tokenizer_config.json`` — from a config
(hidden size 32, 2 layers), so tests never download anything. The tokenizers follow their
family: T5 and Marian use a sentencepiece-style Unigram model (``<pad>``, ``</s>``, ``<unk>``; T5
adds the ``<extra_id_N>`` sentinels at the end of the vocabulary, ``<extra_id_0>`` last, as
the real T5 vocabulary does), BART a byte-level BPE (``<s>``, ``<pad>``, ``</s>``, ``<unk>``,
``<mask>``). Needs the train extra (torch, transformers).

``TINY_ENCODER_DECODERS`` is the architecture matrix: one entry per architecture (or layout, as
T5 v1.1) that the encoder-decoder export is checked on, each with its maker and the config
overrides that make it differ from its family's defaults where caches are concerned (more
encoder than decoder layers, more decoder than encoder heads, untied embeddings).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

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


# -- the architecture matrix ------------------------------------------------------------------

#: Sizes of the BART-like configs (BART, mBART, Marian, Pegasus, Blenderbot-small).
_BART_SIZES = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                   decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                   max_position_embeddings=256, dropout=0.1, attention_dropout=0.0)
#: Sizes of the T5-like configs (T5, mT5).
_T5_SIZES = dict(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2,
                 relative_attention_num_buckets=8, relative_attention_max_distance=32,
                 dropout_rate=0.1)


def _train_bpe(corpus: list[str] | None, vocab_size: int, special: list[str]) -> Any:
    """A byte-level BPE whose first ids are ``special``, in order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.trainers import BpeTrainer

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = corpus or SEQ2SEQ_CORPUS
    backend.train_from_iterator(texts * 3 if len(texts) < 1000 else texts, trainer)
    return backend


def _save_tokenizer(backend: Any, directory: Path, **special: Any) -> dict[str, int]:
    """Save ``backend`` as a fast tokenizer with its special tokens; returns token → id of
    every special token."""
    from transformers import PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=512,
                            model_input_names=["input_ids", "attention_mask"],
                            **special).save_pretrained(directory)
    names = [t for v in special.values() for t in (v if isinstance(v, list) else [v])]
    return {t: backend.token_to_id(t) for t in names}


def _mbart_tokenizer(directory: Path, vocab_size: int, corpus: list[str] | None) -> dict[str, Any]:
    """mBART's layout: ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, language codes; a source
    is ``… </s> en_XX``; generation starts from ``</s>`` and forces the target language code."""
    from tokenizers import processors

    backend = _train_bpe(corpus, vocab_size, ["<s>", "<pad>", "</s>", "<unk>", "en_XX",
                                              "de_DE", "<mask>"])
    eos, en = backend.token_to_id("</s>"), backend.token_to_id("en_XX")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s> en_XX", pair="$A $B </s> en_XX",
        special_tokens=[("</s>", eos), ("en_XX", en)])
    ids = _save_tokenizer(backend, directory, bos_token="<s>", eos_token="</s>",
                          pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                          extra_special_tokens=["en_XX", "de_DE"])
    return dict(vocab_size=backend.get_vocab_size(), bos_token_id=ids["<s>"],
                pad_token_id=ids["<pad>"], eos_token_id=eos, decoder_start_token_id=eos,
                forced_bos_token_id=ids["de_DE"], forced_eos_token_id=eos)


def _language_code_tokenizer(codes: tuple[str, str], prefix: bool,
                             ) -> Callable[[Path, int, list[str] | None], dict[str, Any]]:
    """A BPE with BART's first ids and two language codes (source, target): a source is
    ``code … </s>`` (M2M-100, NLLB: ``prefix``) or ``… </s> code`` (PLBART); generation starts
    from ``</s>`` and forces the target code first."""
    def make(directory: Path, vocab_size: int, corpus: list[str] | None) -> dict[str, Any]:
        from tokenizers import processors

        source, target = codes
        backend = _train_bpe(corpus, vocab_size, ["<s>", "<pad>", "</s>", "<unk>", source,
                                                  target, "<mask>"])
        eos, code = backend.token_to_id("</s>"), backend.token_to_id(source)
        template = f"{source} $A </s>" if prefix else f"$A </s> {source}"
        backend.post_processor = processors.TemplateProcessing(
            single=template, pair=template.replace("$A", "$A $B"),
            special_tokens=[("</s>", eos), (source, code)])
        ids = _save_tokenizer(backend, directory, bos_token="<s>", eos_token="</s>",
                              pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                              extra_special_tokens=[source, target])
        return dict(vocab_size=backend.get_vocab_size(), bos_token_id=ids["<s>"],
                    pad_token_id=ids["<pad>"], eos_token_id=eos, decoder_start_token_id=eos,
                    forced_bos_token_id=ids[target], forced_eos_token_id=eos)
    return make


def _fsmt_tokenizer(directory: Path, vocab_size: int, corpus: list[str] | None) -> dict[str, Any]:
    """FSMT's layout (fairseq): ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3; a source is
    ``… </s>``; generation starts from ``</s>``. One vocabulary serves both sides here."""
    from tokenizers import processors

    backend = _train_bpe(corpus, vocab_size, ["<s>", "<pad>", "</s>", "<unk>"])
    eos = backend.token_to_id("</s>")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A $B </s>", special_tokens=[("</s>", eos)])
    ids = _save_tokenizer(backend, directory, bos_token="<s>", eos_token="</s>",
                          pad_token="<pad>", unk_token="<unk>")
    vocab = backend.get_vocab_size()
    return dict(src_vocab_size=vocab, tgt_vocab_size=vocab, langs=["en", "de"],
                bos_token_id=ids["<s>"], pad_token_id=ids["<pad>"], eos_token_id=eos,
                decoder_start_token_id=eos, forced_eos_token_id=eos)


def _bart_like_tokenizer(directory: Path, vocab_size: int,
                         corpus: list[str] | None) -> dict[str, Any]:
    """BART's layout (see :func:`train_bart_tokenizer`); generation starts from ``</s>``."""
    train_bart_tokenizer(directory, vocab_size, corpus)
    vocab = _vocab(directory)
    return dict(vocab_size=vocab.get_vocab_size(), bos_token_id=vocab.token_to_id("<s>"),
                pad_token_id=vocab.token_to_id("<pad>"), eos_token_id=vocab.token_to_id("</s>"),
                decoder_start_token_id=vocab.token_to_id("</s>"))


def _blenderbot_tokenizer(directory: Path, vocab_size: int,
                          corpus: list[str] | None) -> dict[str, Any]:
    """Blenderbot's layout: ``<pad>``=0, ``<s>``=1 starts decoding, ``</s>``=2 ends inputs
    and outputs."""
    from tokenizers import processors

    backend = _train_bpe(corpus, vocab_size, ["<pad>", "<s>", "</s>", "<unk>", "<mask>"])
    eos = backend.token_to_id("</s>")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A $B </s>", special_tokens=[("</s>", eos)])
    ids = _save_tokenizer(backend, directory, bos_token="<s>", eos_token="</s>",
                          pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
    return dict(vocab_size=backend.get_vocab_size(), bos_token_id=ids["<s>"],
                pad_token_id=ids["<pad>"], eos_token_id=eos, decoder_start_token_id=ids["<s>"],
                forced_eos_token_id=eos)


def _pegasus_tokenizer(directory: Path, vocab_size: int,
                       corpus: list[str] | None) -> dict[str, Any]:
    """Pegasus's layout: a Unigram with ``<pad>``=0 (also the decoder start), ``</s>``=1
    appended to every input."""
    from tokenizers import processors

    backend = _train_unigram(corpus or SEQ2SEQ_CORPUS, vocab_size,
                             ["<pad>", "</s>", "<mask_1>", "<mask_2>", "<unk>"])
    eos = backend.token_to_id("</s>")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A $B </s>", special_tokens=[("</s>", eos)])
    ids = _save_tokenizer(backend, directory, eos_token="</s>", pad_token="<pad>",
                          unk_token="<unk>", mask_token="<mask_2>")
    return dict(vocab_size=backend.get_vocab_size(), pad_token_id=ids["<pad>"],
                eos_token_id=eos, decoder_start_token_id=ids["<pad>"], forced_eos_token_id=eos)


def _blenderbot_small_tokenizer(directory: Path, vocab_size: int,
                                corpus: list[str] | None) -> dict[str, Any]:
    """Blenderbot-small's layout: ``__null__``=0 pads, ``__start__``=1 starts decoding,
    ``__end__``=2 ends it; inputs get no special tokens."""
    backend = _train_bpe(corpus, vocab_size, ["__null__", "__start__", "__end__", "__unk__"])
    ids = _save_tokenizer(backend, directory, bos_token="__start__", eos_token="__end__",
                          pad_token="__null__", unk_token="__unk__")
    return dict(vocab_size=backend.get_vocab_size(), bos_token_id=ids["__start__"],
                pad_token_id=ids["__null__"], eos_token_id=ids["__end__"],
                decoder_start_token_id=ids["__start__"], forced_eos_token_id=ids["__end__"])


def _t5_like_tokenizer(directory: Path, vocab_size: int,
                       corpus: list[str] | None) -> dict[str, Any]:
    """T5's layout (see :func:`train_t5_tokenizer`), decoding starts from ``<pad>``."""
    train_t5_tokenizer(directory, vocab_size, corpus)
    vocab = _vocab(directory)
    pad, eos = vocab.token_to_id("<pad>"), vocab.token_to_id("</s>")
    return dict(vocab_size=vocab.get_vocab_size(), pad_token_id=pad, eos_token_id=eos,
                decoder_start_token_id=pad)


#: model_type → (tokenizer maker, sizes) for :func:`make_tiny_encoder_decoder`.
_RECIPES: dict[str, tuple[Callable[[Path, int, list[str] | None], dict[str, Any]],
                          dict[str, Any]]] = {
    "mt5": (_t5_like_tokenizer, dict(_T5_SIZES, feed_forward_proj="gated-gelu",
                                     tie_word_embeddings=False)),
    "mbart": (_mbart_tokenizer, dict(_BART_SIZES, scale_embedding=True)),
    "pegasus": (_pegasus_tokenizer, dict(_BART_SIZES, scale_embedding=True)),
    "blenderbot-small": (_blenderbot_small_tokenizer, dict(_BART_SIZES)),
    "umt5": (_t5_like_tokenizer, dict(_T5_SIZES, feed_forward_proj="gated-gelu",
                                      tie_word_embeddings=False)),
    "longt5": (_t5_like_tokenizer, dict(_T5_SIZES, encoder_attention_type="local",
                                        local_radius=3, global_block_size=4)),
    "switch_transformers": (_t5_like_tokenizer, dict(_T5_SIZES, num_experts=4,
                                                     num_sparse_encoder_layers=1,
                                                     num_sparse_decoder_layers=1,
                                                     expert_capacity=64)),
    "m2m_100": (_language_code_tokenizer(("__en__", "__de__"), prefix=True),
                dict(_BART_SIZES, scale_embedding=True)),
    "plbart": (_language_code_tokenizer(("__python__", "__java__"), prefix=False),
               dict(_BART_SIZES, scale_embedding=True)),
    "blenderbot": (_blenderbot_tokenizer, dict(_BART_SIZES)),
    "bigbird_pegasus": (_pegasus_tokenizer, dict(_BART_SIZES, attention_type="original_full",
                                                  scale_embedding=True)),
    "fsmt": (_fsmt_tokenizer, dict(_BART_SIZES, tie_word_embeddings=False)),
    "led": (_bart_like_tokenizer, dict(
        {k: v for k, v in _BART_SIZES.items() if k != "max_position_embeddings"},
        max_encoder_position_embeddings=256, max_decoder_position_embeddings=256,
        attention_window=4)),
    "prophetnet": (_bart_like_tokenizer, dict(
        hidden_size=32, encoder_ffn_dim=64, decoder_ffn_dim=64, num_encoder_layers=2,
        num_decoder_layers=2, num_encoder_attention_heads=2, num_decoder_attention_heads=2,
        max_position_embeddings=256, dropout=0.1, attention_dropout=0.0, ngram=2,
        num_buckets=8, relative_max_distance=32)),
}
#: The config fields that hold generation settings; they go to generation_config.json.
_GENERATION_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id",
                      "forced_bos_token_id", "forced_eos_token_id")


def make_tiny_encoder_decoder(model_type: str, directory: str | os.PathLike, seed: int = 0,
                              vocab_size: int = 400, corpus: list[str] | None = None,
                              **config_overrides: Any) -> Path:
    """A randomly initialised tiny ``model_type`` (a type of ``_RECIPES``: mt5, umt5, longt5,
    switch_transformers, mbart, plbart, m2m_100, pegasus, bigbird_pegasus, blenderbot,
    blenderbot-small, fsmt, led, prophetnet) with
    a tokenizer laid out as the family's (its special tokens, ids and input template), saved
    as a ``save_pretrained`` checkpoint whose ``generation_config.json`` holds the decoder
    start, EOS, pad and forced BOS/EOS ids. ``config_overrides`` go to the config class."""
    import torch
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, GenerationConfig

    if model_type not in _RECIPES:
        raise ValueError(f"no tiny recipe for {model_type!r} (known: {', '.join(_RECIPES)})")
    directory = Path(directory)
    tokenizer, sizes = _RECIPES[model_type]
    settings = {**sizes, **tokenizer(directory, vocab_size, corpus), **config_overrides}
    config = AutoConfig.for_model(model_type, **settings)
    torch.manual_seed(seed)
    model = AutoModelForSeq2SeqLM.from_config(config)
    model.generation_config = GenerationConfig(
        **{k: settings[k] for k in _GENERATION_FIELDS if settings.get(k) is not None})
    return _save(model, directory)


def make_tiny_bert2bert(directory: str | os.PathLike, seed: int = 0, vocab_size: int = 400,
                        corpus: list[str] | None = None, initializer_range: float = 0.02,
                        **config_overrides: Any) -> Path:
    """A randomly initialised ``EncoderDecoderModel`` (model type ``encoder-decoder``): a
    2-layer BERT encoder and a 2-layer BERT decoder with cross-attention, as bert2bert
    checkpoints are, with a BART-style tokenizer; decoding starts from ``<s>``.
    ``config_overrides`` go to the decoder's ``BertConfig``."""
    import torch
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, GenerationConfig

    directory = Path(directory)
    ids = _bart_like_tokenizer(directory, vocab_size, corpus)
    bert = dict(model_type="bert", vocab_size=ids["vocab_size"], hidden_size=32,
                num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=256, initializer_range=initializer_range,
                pad_token_id=ids["pad_token_id"])
    tokens = dict(decoder_start_token_id=ids["bos_token_id"], bos_token_id=ids["bos_token_id"],
                  pad_token_id=ids["pad_token_id"], eos_token_id=ids["eos_token_id"])
    config = AutoConfig.for_model(
        "encoder-decoder", encoder=bert,
        decoder={**bert, "is_decoder": True, "add_cross_attention": True, **config_overrides},
        vocab_size=ids["vocab_size"], **tokens)
    torch.manual_seed(seed)
    model = AutoModelForSeq2SeqLM.from_config(config)
    model.generation_config = GenerationConfig(**tokens)
    return _save(model, directory)


@dataclass(frozen=True)
class TinyEncoderDecoder:
    """One row of the architecture matrix."""

    model_type: str  #: config.model_type of the checkpoint the maker writes
    make: Callable[..., Path]  #: make(directory, seed=0, **config_overrides) → directory
    overrides: dict[str, Any] = field(default_factory=dict)  #: what this row changes
    #: why ``nlpforge export`` cannot reach this row's export yet ("" when it can)
    blocked: str = ""

    def build(self, directory: str | os.PathLike, seed: int = 0, **extra: Any) -> Path:
        return self.make(directory, seed=seed, **{**self.overrides, **extra})


def _generic(model_type: str) -> Callable[..., Path]:
    def make(directory: str | os.PathLike, seed: int = 0, **overrides: Any) -> Path:
        return make_tiny_encoder_decoder(model_type, directory, seed, **overrides)
    return make


#: Matrix row → tiny model. Overrides widen the initial weights (so greedy output of a random
#: model is not one token repeated) and give some rows more encoder layers than decoder
#: layers or more decoder heads than encoder heads, so a cache sized from the wrong one fails.
TINY_ENCODER_DECODERS: dict[str, TinyEncoderDecoder] = {
    "t5": TinyEncoderDecoder("t5", make_tiny_t5, {"initializer_factor": 1.5}),
    "t5-v1.1": TinyEncoderDecoder("t5", make_tiny_t5, {
        "initializer_factor": 1.5, "feed_forward_proj": "gated-gelu",
        "tie_word_embeddings": False, "num_layers": 3, "num_decoder_layers": 2}),
    "mt5": TinyEncoderDecoder("mt5", _generic("mt5"), {"initializer_factor": 1.5, "d_kv": 8}),
    "bart": TinyEncoderDecoder("bart", make_tiny_bart, {"init_std": 0.3}),
    "mbart": TinyEncoderDecoder("mbart", _generic("mbart"), {
        "init_std": 0.3, "encoder_layers": 3, "decoder_attention_heads": 4}),
    "marian": TinyEncoderDecoder("marian", make_tiny_marian, {"init_std": 0.3}),
    "pegasus": TinyEncoderDecoder("pegasus", _generic("pegasus"), {
        "init_std": 0.3, "decoder_layers": 3}),
    "blenderbot-small": TinyEncoderDecoder("blenderbot-small", _generic("blenderbot-small"),
                                           {"init_std": 0.3, "decoder_attention_heads": 4}),
    # -- optimum-onnx 0.1.0's other text2text-generation-with-past types --
    "blenderbot": TinyEncoderDecoder("blenderbot", _generic("blenderbot"), {
        "init_std": 0.3, "decoder_layers": 3}),
    "bigbird_pegasus": TinyEncoderDecoder("bigbird_pegasus", _generic("bigbird_pegasus"), {
        "init_std": 0.3, "decoder_attention_heads": 4}),
    "encoder-decoder": TinyEncoderDecoder("encoder-decoder", make_tiny_bert2bert, {
        "initializer_range": 0.3}),
    "longt5": TinyEncoderDecoder("longt5", _generic("longt5"), {"initializer_factor": 1.5}),
    "m2m_100": TinyEncoderDecoder("m2m_100", _generic("m2m_100"), {
        "init_std": 0.3, "encoder_layers": 3}),
    # -- further types --
    "umt5": TinyEncoderDecoder("umt5", _generic("umt5"), {"initializer_factor": 1.5,
                                                          "d_kv": 8}),
    "plbart": TinyEncoderDecoder("plbart", _generic("plbart"), {"init_std": 0.3}),
    "fsmt": TinyEncoderDecoder("fsmt", _generic("fsmt"), {"init_std": 0.3}),
    "switch_transformers": TinyEncoderDecoder("switch_transformers",
                                              _generic("switch_transformers"),
                                              {"initializer_factor": 1.5}),
}

#: Encoder-decoder types (or configs: "type (what)") the export refuses, with the tiny config
#: that shows it (sizes only).
REFUSED_ENCODER_DECODERS: dict[str, dict[str, Any]] = {
    "prophetnet": dict(_RECIPES["prophetnet"][1], vocab_size=100),
    "led": dict(_RECIPES["led"][1], vocab_size=100),
    "bigbird_pegasus (block_sparse)": dict(_BART_SIZES, vocab_size=100,
                                           attention_type="block_sparse"),
}


def refusal(name: str) -> str:
    """The ``ExportError`` message a tiny row of ``REFUSED_ENCODER_DECODERS`` is refused with
    ("" when it is not refused)."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    from nlpforge.errors import ExportError
    from nlpforge.export.seq2seq_graphs import cache_layout

    config = AutoConfig.for_model(name.split(" (")[0], **REFUSED_ENCODER_DECODERS[name])
    try:
        cache_layout(AutoModelForSeq2SeqLM.from_config(config).eval())
    except ExportError as exc:
        return str(exc)
    return ""


def architecture_status() -> dict[str, str]:
    """model_type → "exports" (a row of ``TINY_ENCODER_DECODERS``, checked by
    tests/test_seq2seq_matrix.py), why ``nlpforge export`` cannot reach a row yet (its
    ``blocked``), or the reason the export refuses it; refused configs of a type that exports
    are named "type (what)"."""
    status = {row.model_type: row.blocked or "exports" for row in TINY_ENCODER_DECODERS.values()}
    status.update({name: refusal(name) or "exports" for name in REFUSED_ENCODER_DECODERS})
    return status
