"""The torch-free runtime: ONNX Runtime sessions, tokenization, prediction."""

from nlpforge.runtime.predictor import Predictor
from nlpforge.runtime.tokenizer import Tokenizer

__all__ = ["Predictor", "Tokenizer"]
