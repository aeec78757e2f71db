"""Helpers for testing nlpforge and its plugins: tiny models built on the fly, never downloaded,
temporary plugin registration, and the plugin contract check (``check_task``).

Importing this package does not import torch; the helpers that need it import it when called.
"""

from nlpforge.testing.contract import (ContractError, ContractReport, check_task,
                                       compare_predictions, predict_without_torch)
from nlpforge.testing.encoders import CORPUS, make_tiny_bert, train_wordpiece_tokenizer
from nlpforge.testing.registry import PluginRegistrar, temporary_plugins
from nlpforge.testing.tiny import (TinyModels, TinyModelUnavailable, make_tiny_model,
                                   wordpiece_tokenizer)

__all__ = [
    "CORPUS", "make_tiny_bert", "train_wordpiece_tokenizer",
    "check_task", "ContractError", "ContractReport", "compare_predictions",
    "predict_without_torch", "temporary_plugins", "PluginRegistrar",
    "make_tiny_model", "TinyModels", "TinyModelUnavailable", "wordpiece_tokenizer",
]
