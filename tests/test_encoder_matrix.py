"""The encoder architecture matrix: each (architecture, head) pair of ``encoder_cases()`` built
tiny from its config class, saved like a real checkpoint, exported with ``nlpforge export
CHECKPOINT``'s path (task detected from the head), validated against PyTorch on shapes the
trace never saw, and run once through the torch-free runtime. A pair whose status is a refusal
must be refused with that reason.

The full matrix is marked ``matrix`` (NLPFORGE_MATRIX=1 or ``-m matrix``; tools/test.sh runs it
in its own time-boxed step); the FAST pairs always run.
"""

from __future__ import annotations

import pytest

from nlpforge.errors import ExportError
from nlpforge.testing.encoders import (ENCODER_HEADS, HEAD_LABELS, TINY_ENCODERS,
                                       architecture_status, encoder_cases, make_tiny_encoder)

#: Always run (seconds each): an encoder per head, an encoder-decoder head that pools at the
#: end-of-sequence token, a decoder-only classifier that pools at the last real token, and a
#: refusal.
FAST = ("roberta token-classification", "distilbert question-answering",
        "deberta-v2 text-classification", "bart text-classification",
        "llama text-classification", "longformer fill-mask")
STATUS = architecture_status()


@pytest.mark.parametrize("name", [
    pytest.param(name, id=name.replace(" ", "-"), marks=() if name in FAST else pytest.mark.matrix)
    for name in encoder_cases()])
def test_encoder_architecture_exports_as_its_task(name, tmp_path):
    import nlpforge
    from nlpforge.export.onnx import export_model

    kind, head = encoder_cases()[name]
    task = ENCODER_HEADS[head]
    checkpoint = make_tiny_encoder(tmp_path / "checkpoint", kind, head)
    if STATUS[name] != "exports":
        reason = STATUS[name].removeprefix("refused: ")
        with pytest.raises(ExportError, match=f"{kind} cannot be exported"):
            export_model(str(checkpoint), str(tmp_path / "export"))
        assert reason in STATUS[name]
        assert not (tmp_path / "export").exists()
        return
    manifest = export_model(str(checkpoint), str(tmp_path / "export"))
    assert manifest["task"]["id"] == task
    assert manifest["validation"]["passed"] is True
    assert len(manifest["validation"]["cases"]) >= 3  # shapes beside the traced one
    assert manifest["task"]["state"]["labels"] == HEAD_LABELS.get(task)
    model = nlpforge.load(str(tmp_path / "export"))
    request = model.task.example_request()
    assert model.predict([request, request])[0] == model.predict([request])[0]


def test_every_status_is_exports_or_a_refusal():
    assert STATUS and all(s == "exports" or s.startswith("refused: ") for s in STATUS.values())


def test_the_matrix_has_every_head_transformers_gives_a_type():
    """``MISSING_HEADS`` is what transformers' auto mappings lack (or name so that no task's
    ``checkpoint_heads`` detects it): every other head of every type is in the matrix."""
    from transformers.models.auto import modeling_auto

    from nlpforge.plugins import get_plugin_manager

    manager = get_plugin_manager()
    endings = {head: manager.get_task(task).checkpoint_heads
               for head, task in ENCODER_HEADS.items()}
    names = {head: getattr(modeling_auto, "MODEL_FOR_%s_MAPPING_NAMES" % key)
             for head, key in (("AutoModelForSequenceClassification", "SEQUENCE_CLASSIFICATION"),
                               ("AutoModelForTokenClassification", "TOKEN_CLASSIFICATION"),
                               ("AutoModelForQuestionAnswering", "QUESTION_ANSWERING"),
                               ("AutoModelForMaskedLM", "MASKED_LM"))}
    for kind in TINY_ENCODERS:
        has = {head for head in ENCODER_HEADS
               if str(names[head].get(kind, "")).endswith(endings[head])}
        assert has == {h for n, (k, h) in encoder_cases().items() if k == kind}, kind


def test_types_needing_more_than_text_are_refused_saying_what_they_need():
    for kind in ("layoutlm", "layoutlmv3", "lilt", "markuplm"):
        statuses = [s for name, s in STATUS.items() if name.split()[0] == kind]
        assert statuses and all(
            s.startswith("refused: needs inputs a text task does not make (") for s in statuses)
