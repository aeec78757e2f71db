"""text-generation: fine-tune a decoder-only language model (GPT-2, Llama, …).

Train on raw text (``{"text"}``, packed into blocks), on prompt/completion pairs (loss on the
completion), or on conversations (``{"messages"}``, rendered with the tokenizer's chat
template, loss on the assistant turns). Evaluation is teacher-forced: perplexity of the
targets, the same number from PyTorch and from the ONNX export. Generation (``predict``) runs
the export's KV-cache graph through the runtime's search loop; ``prompt_features`` gives it
the left-padded prompts.

Built into nlpforge, found through the ``nlpforge`` entry-point group like any plugin. This
module imports no torch; the head is built inside ``build_model``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

import nlpforge
from nlpforge import IGNORE_INDEX, DataError, Field, ModelFamily, Option, Task, UsageError
from nlpforge_text_generation.chat import check_messages
from nlpforge_text_generation.features import chat_prompt, kind, pad_left, pad_right, sequences
from nlpforge_text_generation.scoring import perplexity, row_scores

NLPFORGE_PLUGIN_API = 1
TEXT_MODES = ("blocks", "truncate")


class TextGeneration(Task):
    """Causal-LM fine-tuning; perplexity; generation through the KV-cache export."""

    id = "text-generation"
    version = 1
    description = "Fine-tune a decoder LM on text, prompt/completion pairs or chats"
    family = ModelFamily.DECODER
    splits_rows = True  # long texts become several windows
    train_fields = (
        Field("text", str, required=False, description="raw text: every token is a target"),
        Field("prompt", str, required=False, description="the prompt of a prompt/completion pair"),
        Field("completion", str, required=False, description="what the model learns to write "
                                                             "after the prompt"),
        Field("messages", list, required=False, items=dict,
              description="a conversation: [{'role': 'user'|'assistant'|'system', 'content'}]"),
    )
    request_fields = (
        Field("prompt", str, required=False, description="the text to continue"),
        Field("messages", list, required=False, items=dict,
              description="a conversation the assistant answers (needs a chat template)"),
    )
    options = (
        Option("text_mode", "blocks", "text rows: 'blocks' concatenates a batch's texts (EOS "
                                      "between them) into blocks of --max-length tokens; "
                                      "'truncate' keeps each text's first --max-length tokens"),
    )
    primary_metric = "perplexity"
    checkpoint_heads = ("ForCausalLM", "LMHeadModel")
    greater_is_better = False
    default_max_length = 512
    #: Evaluation is teacher-forced (one forward pass), not generation.
    evaluate_by = "forward"

    def __init__(self, labels: Sequence[str] | None = None, **options: Any):
        super().__init__(labels, **options)
        if self.settings["text_mode"] not in TEXT_MODES:
            raise UsageError(f"task option text_mode must be one of {', '.join(TEXT_MODES)}, "
                             f"got {self.settings['text_mode']!r}")

    # -- data -------------------------------------------------------------------------------

    def check_row(self, row: dict, path: str | None = None, line: int | None = None,
                  training: bool = True) -> None:
        super().check_row(row, path, line, training)
        present = {k for k in ("text", "prompt", "completion", "messages")
                   if row.get(k) is not None}
        if "messages" in present:
            check_messages(row["messages"], path, line, need_assistant=training)
            extra = present - {"messages"}
            if extra:
                raise DataError(f"a row with 'messages' cannot also have "
                                f"{', '.join(sorted(extra))}", path, line, min(extra))
            return
        if not training:
            if "prompt" not in present:
                raise DataError("a request needs 'prompt' (text to continue) or 'messages'",
                                path, line)
            return
        if "completion" in present and "prompt" not in present:
            raise DataError("a 'completion' needs its 'prompt'", path, line, "prompt")
        if "prompt" in present and "completion" not in present:
            raise DataError("a 'prompt' needs its 'completion' (or train on 'text')",
                            path, line, "completion")
        if "text" in present and "prompt" in present:
            raise DataError("a row has either 'text' or 'prompt'/'completion', not both",
                            path, line, "text")
        if not present:
            raise DataError("a row needs 'text', 'prompt' and 'completion', or 'messages'",
                            path, line)

    # -- preprocessing (torch-free) ---------------------------------------------------------

    def encode(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        """Scoring features: right-padded windows with ``labels`` (targets, −100 elsewhere),
        ``position_ids`` and ``row_index`` (the row each window came from)."""
        ids, labels, owners = sequences(tokenizer, rows, tokenizer.max_length, blocks=False,
                                        windows=True)
        features = pad_right(ids, labels, tokenizer.pad_id)
        mask = features["attention_mask"]
        features["position_ids"] = np.where(mask == 0, 1, np.cumsum(mask, axis=1) - 1)
        features["row_index"] = np.asarray(owners, dtype=np.int64)
        return features

    def training_batch(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        blocks = self.settings["text_mode"] == "blocks"
        ids, labels, _ = sequences(tokenizer, rows, tokenizer.max_length, blocks=blocks,
                                   windows=False)
        return pad_right(ids, labels, tokenizer.pad_id)

    def prompt_features(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        """Requests → left-padded ``input_ids``/``attention_mask`` for generation. A long
        prompt keeps its last ``max_length`` tokens (the end is what gets continued)."""
        prompts = []
        for row in rows:
            if kind(row) == "messages":
                text = chat_prompt(tokenizer, row["messages"])
                (encoding,) = tokenizer.encode([text], truncate=False, add_special_tokens=False)
            else:
                text = row.get("prompt") or row.get("text") or ""
                (encoding,) = tokenizer.encode([text], truncate=False)
            prompts.append(encoding.ids)
        return pad_left([p[-tokenizer.max_length:] for p in prompts], tokenizer.pad_id)

    # -- head (torch) -----------------------------------------------------------------------

    def build_model(self, base: str, **kwargs: Any) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(base, **kwargs)

    def load_model(self, path: str, **kwargs: Any) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path, **kwargs)

    def compute_loss(self, model: Any, batch: dict[str, Any]) -> Any:
        """The head's token-averaged loss; zero (with a graph) when truncation left a batch
        without targets, where the head would return NaN."""
        if not bool((batch["labels"][:, 1:] != IGNORE_INDEX).any()):
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            return model(**inputs).logits.sum() * 0.0
        return model(**batch).loss

    def loss_units(self, batch: dict[str, Any]) -> int:
        """Target tokens: the head averages its loss over them."""
        return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())

    # -- outputs (torch-free) ---------------------------------------------------------------

    def postprocess(self, outputs: dict[str, np.ndarray], rows: Sequence[dict]) -> list[dict]:
        """Per row: the NLL sum of its targets, their number and the row's perplexity."""
        return row_scores(outputs["logits"], outputs["labels"], outputs["row_index"], len(rows))

    def metrics(self, predictions: Sequence[dict], rows: Sequence[dict]) -> dict[str, Any]:
        return perplexity(predictions)

    def example_request(self) -> dict[str, Any]:
        return {"prompt": "nlpforge export check"}


@nlpforge.hookimpl
def register_tasks(register):
    register(TextGeneration)
