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


#: Encoder architectures of the export matrix: ``model_type`` → config fields that make it tiny
#: (beside the common ones in ``make_tiny_encoder``). Every one is built from its config class.
TINY_ENCODERS: dict[str, dict] = {
    "bert": {},
    "roberta": {},
    "distilbert": {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64},
    "albert": {"embedding_size": 16},
    "electra": {"embedding_size": 16},
    "deberta-v2": {"relative_attention": True, "pos_att_type": ["p2c", "c2p"],
                   "position_buckets": 16, "max_relative_positions": 32},
    "xlm-roberta": {},
    "mpnet": {},
    "modernbert": {"global_attn_every_n_layers": 2, "local_attention": 16},
    "camembert": {},
    "mobilebert": {"embedding_size": 16, "intra_bottleneck_size": 16, "true_hidden_size": 16,
                   "num_feedforward_networks": 1},
    "convbert": {"embedding_size": 16},
    "roformer": {"embedding_size": 32},
    "longformer": {"attention_window": 8},
}
#: Heads an architecture of ``TINY_ENCODERS`` does not have in transformers (left out of the
#: matrix): ``model_type`` → the ``ENCODER_HEADS`` keys it lacks.
MISSING_HEADS: dict[str, tuple[str, ...]] = {}
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
    fields = {"vocab_size": vocab, "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 256,
              "pad_token_id": 0, "type_vocab_size": 2,
              **TINY_ENCODERS[model_type], **config_overrides}
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
