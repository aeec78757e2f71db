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
