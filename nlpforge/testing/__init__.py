"""Helpers for testing nlpforge and its plugins: tiny models built on the fly, never downloaded."""

from nlpforge.testing.models import CORPUS, make_tiny_bert, train_wordpiece_tokenizer

__all__ = ["CORPUS", "make_tiny_bert", "train_wordpiece_tokenizer"]
