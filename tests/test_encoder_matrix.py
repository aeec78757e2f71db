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
from nlpforge.testing.encoders import (ENCODER_HEADS, HEAD_LABELS, architecture_status,
                                       encoder_cases, make_tiny_encoder)

FAST = ("roberta token-classification", "distilbert question-answering",
        "deberta-v2 text-classification", "longformer fill-mask")
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
