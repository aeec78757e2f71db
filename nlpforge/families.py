"""Model families: everything a family implies, in one table.

A task declares its family (``Task.family``); everything downstream asks this module what
that means: which exporter writes the export dir, which runtime class ``nlpforge.load``
returns, how ``nlpforge evaluate`` scores teacher-forced, which stepper the generation loop
drives, which adapter ``nlpforge serve`` wraps around the model, which tiny model a plugin's
tests train on and what the plugin contract check compares with PyTorch.

Code is named by ``"module:attr"`` references (``nlpforge.lazy``), imported when used, so this
module imports no torch and nothing that imports it back. Adding a family is one
``ModelFamily`` member and one ``Family`` entry here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from nlpforge.errors import ManifestError, ModelDirError
from nlpforge.lazy import Unavailable, import_object


class ModelFamily(str, enum.Enum):
    """The transformer families nlpforge fine-tunes (the manifest's ``family`` values)."""

    ENCODER = "encoder"
    DECODER = "decoder"
    ENCODER_DECODER = "encoder-decoder"


@dataclass(frozen=True)
class Family:
    """What one model family implies. Fields ending in a reference are ``"module:attr"``."""

    #: The ``ModelFamily`` member (its value is what manifests record).
    member: ModelFamily
    #: ``function(run_dir, output, opts, manifest, task, model, tokenizer) -> manifest``:
    #: writes and validates the export dir.
    exporter: str
    #: The class ``nlpforge.load`` returns: ``load(path, device, threads, batch_size, variant)``
    #: with ``predict(inputs, checked=False)``.
    runtime: str
    #: The class that scores an export teacher-forced, with one forward pass per batch
    #: (``Task.evaluate_by == "forward"``; same ``load`` as ``runtime``), or None.
    scorer: str | None
    #: The generation loop's ``Stepper`` class for this family's exports, or None.
    stepper: str | None
    #: The served-model adapter of ``nlpforge serve``: ``load(name, path, device, threads,
    #: variant)`` → a ``ServedModel``.
    served: str
    #: The tiny model (``nlpforge.testing.tiny``) a task of this family trains on in tests.
    tiny_model: str
    #: ``function(run_dir, export_dir, requests, predictions, atol) -> dict[str, float]``: what
    #: the plugin contract check compares between the export and the PyTorch run dir.
    contract_check: str
    #: Training labels are decoder tokens: a batch costs its source plus its target tokens.
    labels_are_decoder_tokens: bool = False

    @property
    def value(self) -> str:
        return self.member.value

    @property
    def generates(self) -> bool:
        """Exports of this family write text (the runtime is a ``Generator``)."""
        return self.stepper is not None

    def load(self, field: str) -> Any:
        """The object ``field`` refers to; ModelDirError when this nlpforge lacks it."""
        ref = getattr(self, field)
        if ref is None:
            raise ModelDirError(f"a {self.value} model has no {field.replace('_', ' ')}")
        try:
            return import_object(ref)
        except Unavailable as exc:
            raise ModelDirError(f"this nlpforge cannot handle {self.value} models ({exc}); "
                                f"upgrade nlpforge") from exc


_GENERATOR = "nlpforge.runtime.generation.generator:Generator"
_GENERATOR_MODEL = "nlpforge.serving.generating:GeneratorModel"
_COMPARE_GENERATION = "nlpforge.testing.contract:compare_generation"

FAMILIES: dict[str, Family] = {f.value: f for f in (
    Family(ModelFamily.ENCODER,
           exporter="nlpforge.export.onnx:export_encoder",
           runtime="nlpforge.runtime.predictor:Predictor",
           scorer="nlpforge.runtime.predictor:Predictor",
           stepper=None,
           served="nlpforge.serving.predicting:PredictorModel",
           tiny_model="bert",
           contract_check="nlpforge.testing.contract:compare_outputs"),
    Family(ModelFamily.DECODER,
           exporter="nlpforge.export.decoder:export_decoder",
           runtime=_GENERATOR,
           scorer="nlpforge.runtime.generation.scoring:DecoderScorer",
           stepper="nlpforge.runtime.generation.decoder:DecoderStepper",
           served=_GENERATOR_MODEL,
           tiny_model="gpt2",
           contract_check=_COMPARE_GENERATION),
    Family(ModelFamily.ENCODER_DECODER,
           exporter="nlpforge.export.seq2seq:export_encoder_decoder",
           runtime=_GENERATOR,
           scorer=None,
           stepper="nlpforge.runtime.generation.seq2seq:EncoderDecoderStepper",
           served=_GENERATOR_MODEL,
           tiny_model="t5",
           contract_check=_COMPARE_GENERATION,
           labels_are_decoder_tokens=True),
)}


def family(value: str | ModelFamily) -> Family:
    """The ``Family`` of a ``ModelFamily`` or of a manifest's ``family`` value."""
    key = value.value if isinstance(value, ModelFamily) else value
    found = FAMILIES.get(key)  # type: ignore[arg-type]
    if found is None:
        raise ManifestError(f"unknown model family {key!r} (families: {', '.join(FAMILIES)})")
    return found
