"""Tiny models from configs with tokenizers trained on the fly (needs the train extra)."""

from __future__ import annotations

import os
from pathlib import Path

CORPUS = [
    "the movie was great and the acting was wonderful",
    "a terrible film with a boring plot and bad acting",
    "i loved the music, the story and the characters",
    "the service was slow and the food was cold",
    "an excellent book that i would happily read again",
    "the worst purchase i have ever made, it broke in a day",
    "friendly staff, clean rooms and a lovely view",
    "nothing works, support never answered my emails",
    "what a delightful surprise, highly recommended",
    "dull, predictable and far too long",
    "Unicode text: café, naïve, 東京, emoji 🙂",
]


def train_wordpiece_tokenizer(directory: str | os.PathLike, vocab_size: int = 400,
                              corpus: list[str] | None = None) -> Path:
    """Train a BERT-style WordPiece tokenizer and save it with transformers' files."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    trainer = WordPieceTrainer(vocab_size=vocab_size, special_tokens=special)
    backend.train_from_iterator((corpus or CORPUS) * 3, trainer)
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    fast.save_pretrained(directory)
    return directory


def make_tiny_bert(directory: str | os.PathLike, seed: int = 0, hidden: int = 32,
                   layers: int = 2, dropout: float = 0.1) -> Path:
    """A randomly initialised 2-layer BERT with its tokenizer: a base model for tests."""
    import torch
    from transformers import BertConfig, BertModel

    directory = Path(train_wordpiece_tokenizer(directory))
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(directory / "tokenizer.json")).get_vocab_size()
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=hidden * 2,
                        max_position_embeddings=256, pad_token_id=0,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        classifier_dropout=dropout)
    BertModel(config).save_pretrained(directory)
    return directory


#: The sizes every tiny model of the matrix shares (a type's entry in ``TINY_ENCODERS`` may
#: override them; configs that name them otherwise map these names through their
#: ``attribute_map``). One layer keeps the full matrix fast; a type whose layers differ (local
#: and global attention) declares two.
TINY_COMMON: dict[str, object] = {
    "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 64, "max_position_embeddings": 256, "pad_token_id": 0,
    "type_vocab_size": 2}
#: A ``TINY_ENCODERS`` value that leaves a ``TINY_COMMON`` field out of the config.
NOT_SET = object()
#: Sizes of the encoder-decoder types (BART-like): the classification head reads the decoder's
#: state at the last end-of-sequence token, which is the WordPiece tokenizer's [SEP] (id 3).
_SEQ2SEQ = {"encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
            "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
            "bos_token_id": 2, "eos_token_id": 3, "decoder_start_token_id": 3,
            "forced_eos_token_id": 3}
#: Sizes of the decoder-only types (Llama-like, grouped-query attention). ``pad_token_id``
#: (TINY_COMMON) is what their sequence classification finds the last real token by.
_DECODER = {"num_attention_heads": 4, "num_key_value_heads": 2}
_LOCAL_GLOBAL = {"num_hidden_layers": 2, "sliding_window": 6}

#: Architectures of the encoder export matrix: ``model_type`` → config fields that make it tiny
#: (beside ``TINY_COMMON`` and the vocabulary size). Every one is built from its config class
#: with each head of ``ENCODER_HEADS`` it has (``MISSING_HEADS``): encoders, encoder-decoders
#: whose classification/QA heads run in one pass, and decoder-only models with such heads.
TINY_ENCODERS: dict[str, dict] = {
    # -- encoders --------------------------------------------------------------------------
    "albert": {"embedding_size": 16},
    "bert": {},
    # block-sparse attention falls back to full attention below (5 + 2 * num_random_blocks) *
    # block_size tokens, and so does a trace on a short text: the tiny model is full-attention
    "big_bird": {"attention_type": "original_full"},
    "camembert": {},
    "canine": {"num_hash_buckets": 64, "num_hash_functions": 2, "local_transformer_stride": 8,
               "downsampling_rate": 2},
    "convbert": {"embedding_size": 16},
    "data2vec-text": {},
    "deberta": {"relative_attention": True, "pos_att_type": ["p2c", "c2p"],
                "max_relative_positions": 32},
    "deberta-v2": {"relative_attention": True, "pos_att_type": ["p2c", "c2p"],
                   "position_buckets": 16, "max_relative_positions": 32},
    "distilbert": {"dim": 32, "n_layers": 1, "n_heads": 2, "hidden_dim": 64},
    "electra": {"embedding_size": 16},
    "ernie": {},
    "esm": {"mask_token_id": 4, "position_embedding_type": "rotary"},
    "flaubert": {"emb_dim": 32, "n_layers": 1, "n_heads": 2, "pad_index": 0},
    "fnet": {},
    "funnel": {"num_hidden_layers": NOT_SET, "block_sizes": [1, 1], "num_decoder_layers": 1,
               "d_head": 16, "d_inner": 64},
    "ibert": {},
    "longformer": {"attention_window": 8},
    "luke": {"entity_vocab_size": 16, "entity_emb_size": 16},
    "megatron-bert": {},
    "mobilebert": {"embedding_size": 16, "intra_bottleneck_size": 16, "true_hidden_size": 16,
                   "num_feedforward_networks": 1},
    "modernbert": {"num_hidden_layers": 2, "global_attn_every_n_layers": 2,
                   "local_attention": 16},
    "mpnet": {},
    "mra": {},
    "nystromformer": {"segment_means_seq_len": 16, "num_landmarks": 4, "conv_kernel_size": 3},
    "rembert": {"input_embedding_size": 16, "output_embedding_size": 16},
    "roberta": {},
    "roberta-prelayernorm": {},
    "roc_bert": {"pronunciation_vocab_size": 16, "pronunciation_embed_dim": 8,
                 "shape_vocab_size": 16, "shape_embed_dim": 8},
    "roformer": {"embedding_size": 32},
    "splinter": {"question_token_id": 4},
    "squeezebert": {"embedding_size": 32},
    "xlm": {"emb_dim": 32, "n_layers": 1, "n_heads": 2, "pad_index": 0},
    "xlm-roberta": {},
    "xlm-roberta-xl": {},
    "xmod": {"languages": ["en_XX"], "default_language": "en_XX"},
    "yoso": {},
    # -- inputs beyond text ----------------------------------------------------------------
    "layoutlm": {},
    "layoutlmv3": {"input_size": 32, "patch_size": 16, "max_2d_position_embeddings": 64,
                   "coordinate_size": 8, "shape_size": 8, "rel_pos_bins": 8,
                   "max_rel_pos": 16, "rel_2d_pos_bins": 8, "max_rel_2d_pos": 16},
    "lilt": {"channel_shrink_ratio": 2},
    "markuplm": {"max_depth": 4, "max_xpath_tag_unit_embeddings": 16,
                 "max_xpath_subs_unit_embeddings": 16, "xpath_unit_hidden_size": 8},
    # its forward takes input_ids as the byte ids of its text preprocessor
    "perceiver": {"d_latents": 32, "num_latents": 8, "num_blocks": 1,
                  "num_self_attends_per_block": 1, "num_self_attention_heads": 2,
                  "num_cross_attention_heads": 2, "d_model": 32},
    # -- encoder-decoders --------------------------------------------------------------------
    "bart": dict(_SEQ2SEQ),
    "bigbird_pegasus": {**_SEQ2SEQ, "attention_type": "original_full"},
    "mbart": dict(_SEQ2SEQ),
    "mvp": dict(_SEQ2SEQ),
    "plbart": dict(_SEQ2SEQ),
    "led": {**_SEQ2SEQ, "attention_window": 8, "max_encoder_position_embeddings": 256,
            "max_decoder_position_embeddings": 256},
    # -- decoder-only models with classification / QA heads ---------------------------------
    "bloom": {},
    "falcon": {"num_attention_heads": 4, "new_decoder_architecture": False,
               "multi_query": True},
    "gemma": {**_DECODER, "head_dim": 16},
    "gemma2": {**_DECODER, **_LOCAL_GLOBAL, "head_dim": 16},
    "gemma3_text": {**_DECODER, **_LOCAL_GLOBAL, "head_dim": 16,
                    "layer_types": ["sliding_attention", "full_attention"]},
    "gemma3": {**_DECODER, **_LOCAL_GLOBAL, "head_dim": 16,
               "layer_types": ["sliding_attention", "full_attention"]},
    "gpt2": {"n_inner": 64},
    "gpt_bigcode": {"n_inner": 64},
    "gpt_neo": {"num_hidden_layers": 2, "attention_types": [[["global", "local"], 1]],
                "window_size": 6},
    "gpt_neox": {},
    "gptj": {"n_inner": 64, "rotary_dim": 4},
    "llama": dict(_DECODER),
    "mistral": {**_DECODER, "sliding_window": 6},
    "mixtral": {**_DECODER, "num_local_experts": 4, "num_experts_per_tok": 2},
    "mpt": {"expansion_ratio": 2},
    "opt": {"ffn_dim": 64, "word_embed_proj_dim": 32},
    "phi": {},
    "phi3": {**_DECODER, "sliding_window": 6},
    "qwen2": dict(_DECODER),
    "qwen2_moe": {**_DECODER, "num_experts": 4, "num_experts_per_tok": 2,
                  "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32},
    "qwen3": {**_DECODER, "head_dim": 16},
    "qwen3_moe": {**_DECODER, "head_dim": 16, "num_experts": 4, "num_experts_per_tok": 2,
                  "moe_intermediate_size": 32},
    "smollm3": {**_DECODER, "num_hidden_layers": 2, "no_rope_layers": [1, 0]},
    "stablelm": dict(_DECODER),
    "starcoder2": dict(_DECODER),
}
#: Types whose config nests the text model's (multimodal configs): the tiny fields go to
#: ``text_config``, and the other towers get the sizes here.
NESTED_CONFIGS: dict[str, dict] = {
    "gemma3": {"vision_config": {"hidden_size": 16, "intermediate_size": 32,
                                 "num_hidden_layers": 1, "num_attention_heads": 2,
                                 "image_size": 28, "patch_size": 14},
               "mm_tokens_per_image": 4},
}
#: Heads an architecture of ``TINY_ENCODERS`` does not have in transformers, or has under a
#: class name no task's ``checkpoint_heads`` matches (left out of the matrix): ``model_type``
#: → the ``ENCODER_HEADS`` keys it lacks (tests/test_encoder_matrix.py checks this against
#: transformers' auto mappings).
_SEQ, _TOK, _QA, _MLM = ("AutoModelForSequenceClassification", "AutoModelForTokenClassification",
                         "AutoModelForQuestionAnswering", "AutoModelForMaskedLM")
MISSING_HEADS: dict[str, tuple[str, ...]] = {
    **{kind: (_MLM,) for kind in ("canine", "layoutlmv3", "lilt", "markuplm", "bloom", "falcon",
                                  "gpt2", "gpt_neo", "gpt_neox", "llama", "mistral", "mixtral",
                                  "mpt", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "smollm3")},
    **{kind: (_QA, _MLM) for kind in ("gemma", "gemma2", "gpt_bigcode", "phi", "phi3",
                                      "stablelm", "starcoder2")},
    **{kind: (_TOK, _MLM) for kind in ("gptj", "opt", "bigbird_pegasus")},
    # their masked LM is the seq2seq ForConditionalGeneration (the seq2seq family's)
    **{kind: (_TOK, _MLM) for kind in ("bart", "mbart", "mvp")},
    "esm": (_QA,),
    # ForQuestionAnsweringSimple and WithLMHeadModel: names no checkpoint_heads match
    "flaubert": (_QA, _MLM),
    "xlm": (_QA, _MLM),
    "splinter": (_SEQ, _TOK, _MLM),
    "layoutlm": (_QA,),
    "perceiver": (_TOK, _QA),
    "plbart": (_TOK, _QA, _MLM),
    "led": (_SEQ, _TOK, _MLM),
    "gemma3_text": (_TOK, _QA, _MLM),
    "gemma3": (_TOK, _QA, _MLM),
}
#: The four encoder heads: ``transformers`` auto class → the nlpforge task it exports as.
ENCODER_HEADS = {"AutoModelForSequenceClassification": "text-classification",
                 "AutoModelForTokenClassification": "token-classification",
                 "AutoModelForQuestionAnswering": "question-answering",
                 "AutoModelForMaskedLM": "fill-mask"}
#: The labels the classification heads are saved with.
HEAD_LABELS = {"text-classification": ["negative", "positive"],
               "token-classification": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]}


def make_tiny_encoder(directory: str | os.PathLike, model_type: str,
                      head: str = "AutoModelForSequenceClassification", seed: int = 0,
                      **config_overrides: object) -> Path:
    """A checkpoint as ``save_pretrained`` writes it, of a tiny ``model_type`` encoder with the
    ``head`` auto class (``ENCODER_HEADS``), its labels, and a WordPiece tokenizer."""
    import torch
    import transformers
    from tokenizers import Tokenizer
    from transformers import AutoConfig

    directory = Path(train_wordpiece_tokenizer(directory))
    vocab = Tokenizer.from_file(str(directory / "tokenizer.json")).get_vocab_size()
    task = ENCODER_HEADS[head]
    labels = HEAD_LABELS.get(task)
    fields = {"vocab_size": vocab, **TINY_COMMON, **TINY_ENCODERS[model_type],
              **config_overrides}
    fields = {k: v for k, v in fields.items() if v is not NOT_SET}
    if model_type in NESTED_CONFIGS:
        fields = {"text_config": fields, **NESTED_CONFIGS[model_type]}
    if labels:
        fields.update(id2label=dict(enumerate(labels)),
                      label2id={label: i for i, label in enumerate(labels)})
    config = AutoConfig.for_model(model_type, **fields)
    torch.manual_seed(seed)
    model = getattr(transformers, head).from_config(config)
    model.save_pretrained(directory)
    return directory


def encoder_cases() -> dict[str, tuple[str, str]]:
    """``"model_type task"`` → (model_type, head) for every (architecture, head) pair of the
    encoder matrix."""
    return {f"{kind} {task}": (kind, head) for kind in TINY_ENCODERS
            for head, task in ENCODER_HEADS.items() if head not in MISSING_HEADS.get(kind, ())}


def architecture_status() -> dict[str, str]:
    """Each ``encoder_cases()`` pair → "exports", or why the encoder export refuses it
    (tests/test_encoder_matrix.py checks both against real exports; docs/architectures.md
    lists them)."""
    from nlpforge.export.onnx import UNTRACEABLE_ENCODERS

    return {name: (f"refused: {UNTRACEABLE_ENCODERS[kind]}" if kind in UNTRACEABLE_ENCODERS
                   else "exports")
            for name, (kind, _) in encoder_cases().items()}
