"""The Task base class: what a task plugin declares.

A task is a class. Class attributes declare identity and data; methods turn rows into model
features, build the head, and turn model outputs into predictions and metrics. Everything
except ``build_model``/``compute_loss`` must work without torch: the runtime calls
``encode`` and ``postprocess`` in processes where torch is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Hashable, Iterable, Sequence

import numpy as np

from nlpforge.errors import DataError, PluginError, UsageError
from nlpforge.families import ModelFamily


_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "list"}


@dataclass(frozen=True)
class Field:
    """One field of a data row or prediction request.

    ``type`` is the JSON type (str, int, float, bool or list); ``items`` the type of list items.
    A field with ``types`` accepts any of several types (e.g. a label that is a string or a list).
    """

    name: str
    type: type | tuple[type, ...] = str
    required: bool = True
    items: type | tuple[type, ...] | None = None
    description: str = ""

    def type_name(self) -> str:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)

    def check(self, row: dict, path: str | None, line: int | None) -> None:
        """Raise DataError when the row lacks this field or has it with the wrong type."""
        if self.name not in row or row[self.name] is None:
            if self.required:
                raise DataError(f"missing required field '{self.name}' ({self.type_name()})",
                                path, line)
            return
        value = row[self.name]
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        # bool is an int in Python; a JSON true is not a number here.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise DataError(f"expected {self.type_name()}, got {_json_type(value)} {value!r:.60}",
                            path, line, self.name)
        if self.items is not None and isinstance(value, list):
            item_types = self.items if isinstance(self.items, tuple) else (self.items,)
            for i, item in enumerate(value):
                if not isinstance(item, item_types) or isinstance(item, bool) and bool not in item_types:
                    names = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in item_types)
                    raise DataError(f"item {i}: expected {names}, got {_json_type(item)} {item!r:.60}",
                                    path, line, self.name)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for t, name in (
        (bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
        (list, "list"), (dict, "object"),
    ):
        if isinstance(value, t):
            return name
    return type(value).__name__


@dataclass(frozen=True)
class Option:
    """A task option users set with ``--option NAME=VALUE`` (saved in the manifest)."""

    name: str
    default: Any
    description: str = ""

    def parse(self, value: Any) -> Any:
        """Coerce a command-line string to the type of the default."""
        if not isinstance(value, str) or isinstance(self.default, str) or self.default is None:
            return value
        kind = type(self.default)
        try:
            if kind is bool:
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return kind(value)
        except ValueError:
            raise UsageError(f"task option '{self.name}': expected {kind.__name__}, got {value!r}")


@dataclass(frozen=True)
class Signature:
    """The ONNX interface of an exported model: input and output names with dynamic axes."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]


class Task:
    """Base class of every task. Subclass it in a plugin and register it in ``register_tasks``.

    Identity: ``id`` (lower-case, dashes), ``version`` (bump when saved models change meaning),
    ``description`` (one line), ``family``.
    Data: ``train_fields`` (a training or evaluation row), ``request_fields`` (a prediction
    request), ``options`` (task settings saved with the model).
    Metrics: ``primary_metric`` picks the best epoch; ``greater_is_better`` says which way.
    """

    id: ClassVar[str]
    version: ClassVar[int] = 1
    description: ClassVar[str] = ""
    family: ClassVar[ModelFamily]
    train_fields: ClassVar[tuple[Field, ...]] = ()
    request_fields: ClassVar[tuple[Field, ...]] = ()
    options: ClassVar[tuple[Option, ...]] = ()
    primary_metric: ClassVar[str] = "loss"
    greater_is_better: ClassVar[bool] = False
    #: Default maximum sequence length in tokens; users override it with --max-length.
    default_max_length: ClassVar[int] = 128
    #: ``encode`` may turn one row into several feature rows (windows over a long text). Core
    #: then sorts rows by characters rather than tokens and never splits a training batch.
    splits_rows: ClassVar[bool] = False
    #: How ``nlpforge evaluate`` scores an export of a generative family: ``"forward"`` (one
    #: teacher-forced pass per batch, e.g. perplexity) or ``"generate"`` (generated text
    #: against the references, e.g. ROUGE).
    evaluate_by: ClassVar[str] = "forward"
    #: Arrays of ``encode``'s output besides the token features that ``forward`` needs when
    #: PyTorch scores a batch (a seq2seq head's ``labels``, which feed its decoder).
    forward_extras: ClassVar[tuple[str, ...]] = ()
    #: Endings of the Hugging Face head classes this task exports as they are
    #: (``ForSequenceClassification``): ``nlpforge export CHECKPOINT`` picks the task whose
    #: ending ``config.json``'s ``architectures[0]`` has (see ``checkpoint_match``).
    checkpoint_heads: ClassVar[tuple[str, ...]] = ()

    def __init__(self, labels: Sequence[str] | None = None, **options: Any):
        known = {o.name: o for o in self.options}
        unknown = sorted(set(options) - set(known))
        if unknown:
            names = ", ".join(known) or "none"
            raise UsageError(f"task '{self.id}' has no option {', '.join(unknown)} "
                             f"(its options: {names})")
        self.settings = {name: o.parse(options.get(name, o.default)) for name, o in known.items()}
        self.labels: list[str] | None = list(labels) if labels is not None else None

    # -- saved state ------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What the manifest records to rebuild this task at run time."""
        return {"labels": self.labels, "options": dict(self.settings)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Task":
        return cls(labels=state.get("labels"), **state.get("options", {}))

    # -- checkpoints trained elsewhere (nlpforge export CHECKPOINT) -------------------------

    @classmethod
    def checkpoint_match(cls, config: dict[str, Any], directory: Path) -> int:
        """How a Hugging Face checkpoint (its ``config.json`` and its folder) fits this task:
        0 not at all; 1 it can be exported as this task when ``--task`` names it; 2 this is
        the task to pick when none is named. The default: 2 when ``architectures[0]`` ends
        with one of ``checkpoint_heads``. ``nlpforge export`` picks the single best match and
        lists the tied ones otherwise."""
        architectures = config.get("architectures") or []
        head = str(architectures[0]) if architectures else ""
        return 2 if head and head.endswith(tuple(cls.checkpoint_heads)) else 0

    @classmethod
    def from_pretrained_config(cls, config: dict[str, Any], tokenizer: Any,
                               directory: Path) -> "Task":
        """The task for a checkpoint trained elsewhere, from its ``config.json`` (a dict), its
        ``Tokenizer`` and its folder (for files such as ``generation_config.json``).

        The default: the options' defaults, and for a classification head (a
        ``checkpoint_heads`` ending in ``Classification``) the labels of ``id2label`` in id
        order. Override to read more (a tag scheme, ``problem_type``, a prompt prefix); raise
        ``UsageError`` naming the field when the checkpoint cannot serve the task.
        """
        if any(h.endswith("Classification") for h in cls.checkpoint_heads):
            return cls(labels=config_labels(config))
        return cls()

    # -- data -------------------------------------------------------------------------------

    def check_row(self, row: dict, path: str | None = None, line: int | None = None,
                  training: bool = True) -> None:
        """Validate one row; raise DataError naming file, line and field. Override to add rules."""
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, got {_json_type(row)}", path, line)
        for field in self.train_fields if training else self.request_fields:
            field.check(row, path, line)

    def fit(self, rows: Sequence[dict]) -> None:
        """Learn what the task needs from the training rows (e.g. the label set)."""

    # -- preprocessing (torch-free; shared by training and the runtime) ---------------------

    def encode(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        """Rows or requests → padded numpy features (``input_ids``, ``attention_mask``, …).

        A row may become several feature rows (windows over a long text); arrays the model
        does not take (e.g. which row a window came from, character offsets) may be returned
        too: runners feed the model its inputs only, and ``postprocess`` receives them all.
        """
        raise NotImplementedError

    def batch_key(self, row: dict) -> Hashable:
        """Which rows ``encode`` may see together: rows of different keys are never encoded
        in one batch (``predict_rows``, the ``Predictor``, the server's batches, the
        ``Generator``), so a row's prediction does not depend on the rows it is batched with.

        The default, ``None``, puts every row in one group: right for a task whose ``encode``
        treats each row on its own (padding aside). Return another key where a batch's rows
        change each other's features, e.g. whether a row has a target when ``encode`` adds
        ``labels`` only if every row has one.
        """
        return None

    def prompt_features(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray] | None:
        """Generative tasks: requests → the prompt's ``input_ids`` and ``attention_mask`` for
        the generation loop (chat templates, long prompts keeping their end). The default,
        None, lets the runtime use ``encode`` (encoder-decoder tasks that define it) or the
        first request field straight through the tokenizer."""
        return None

    def targets(self, rows: Sequence[dict]) -> dict[str, np.ndarray]:
        """Training rows → the label arrays the head's loss needs."""
        raise NotImplementedError

    def training_batch(self, rows: Sequence[dict], tokenizer: Any) -> dict[str, np.ndarray]:
        """Training rows → model features and targets in one dict (numpy).

        The default is ``encode`` + ``targets``. Override it when targets depend on the
        tokenization (labels aligned to sub-tokens or windows) or when training rows are
        transformed at random (dynamic masking: use ``numpy.random``, whose state
        checkpoints save and restore, so a resumed run draws the same masks). Return only
        what ``compute_loss`` uses: token features the model does not take are dropped, every
        other array is passed on.
        """
        return {**self.encode(rows, tokenizer), **self.targets(rows)}

    # -- head (torch) -----------------------------------------------------------------------

    def build_model(self, base: str, **kwargs: Any) -> Any:
        """Build the trainable model on a base checkpoint (path or hub id). May import torch."""
        raise NotImplementedError

    def load_model(self, path: str, **kwargs: Any) -> Any:
        """Load a model this task trained and saved with ``save_pretrained`` (or a checkpoint
        trained elsewhere); pass ``kwargs`` on to ``from_pretrained`` (``trust_remote_code``)."""
        raise NotImplementedError

    def compute_loss(self, model: Any, batch: dict[str, Any]) -> Any:
        """The mean training loss of one batch. The default uses the head's own loss."""
        return model(**batch).loss

    def loss_units(self, batch: dict[str, Any]) -> int:
        """How many terms ``compute_loss`` averages over: examples here, target tokens for
        token-level tasks. Gradient accumulation and distributed training weight each
        micro-batch by it, so N micro-batches give the gradient of one big batch."""
        labels = batch.get("labels")
        if labels is None:
            labels = next(iter(batch.values()))
        return int(labels.shape[0])

    def forward(self, model: Any, features: dict[str, Any]) -> dict[str, Any]:
        """Run the model on features; returns the tensors named in the export signature.

        The default returns the head's ``logits``, which fits every ``AutoModelFor…`` head.
        """
        return {"logits": model(**features).logits}

    # -- export -----------------------------------------------------------------------------

    def export_signature(self, model_inputs: Sequence[str]) -> Signature:
        """The ONNX interface; ``model_inputs`` are the feature names the model accepts.

        The default is the generic encoder signature: token features in, ``logits`` out.
        """
        if self.family is ModelFamily.ENCODER:
            return encoder_signature(model_inputs)
        raise NotImplementedError(f"task '{self.id}' must define export_signature()")

    # -- outputs (torch-free) ---------------------------------------------------------------

    def postprocess(self, outputs: dict[str, np.ndarray], rows: Sequence[dict]) -> list[dict]:
        """Model outputs (numpy) → one JSON-ready prediction per row.

        ``outputs`` holds the model's outputs and the arrays ``encode`` returned for the batch
        (an output of the same name as a feature wins).
        """
        raise NotImplementedError

    def metrics(self, predictions: Sequence[dict], rows: Sequence[dict]) -> dict[str, Any]:
        """Predictions and the reference rows → metric name → value."""
        raise NotImplementedError

    def report(self, predictions: Sequence[dict], rows: Sequence[dict],
               metrics: dict[str, Any]) -> list[Any]:
        """What ``nlpforge evaluate --report`` shows beside the metrics table: a list of
        ``nlpforge.ReportSection`` (a title, a figure drawn with ``nlpforge.report.plots``, a
        table, a note) that fit the task — a confusion matrix, scores per label. Default:
        nothing more."""
        return []

    def example_request(self) -> dict[str, Any]:
        """A valid request used to smoke-test a finished export. Override for rich requests."""
        return {f.name: "nlpforge export check" for f in self.request_fields
                if f.required and f.type is str}

    # -- helpers ----------------------------------------------------------------------------

    @classmethod
    def check_class(cls) -> None:
        """Raise PluginError when a subclass misses a required declaration."""
        for attr in ("id", "family"):
            if not hasattr(cls, attr):
                raise PluginError(f"task class {cls.__module__}.{cls.__qualname__} does not set '{attr}'")
        if not isinstance(cls.id, str) or not cls.id or cls.id != cls.id.strip().lower() \
                or " " in cls.id:
            raise PluginError(f"task class {cls.__qualname__}: id must be a lower-case name "
                              f"without spaces, got {cls.id!r}")
        if not isinstance(cls.family, ModelFamily):
            raise PluginError(f"task '{cls.id}': family must be a ModelFamily, got {cls.family!r}")
        if not isinstance(cls.version, int) or cls.version < 1:
            raise PluginError(f"task '{cls.id}': version must be a positive integer")
        if cls.evaluate_by not in EVALUATE_BY:
            raise PluginError(f"task '{cls.id}': evaluate_by must be one of "
                              f"{', '.join(EVALUATE_BY)}, got {cls.evaluate_by!r}")
        missing = [name for name in REQUIRED_METHODS if not cls.defines(name)]
        if not (cls.defines("targets") or cls.defines("training_batch")):
            missing.append("targets (or training_batch)")
        if missing:
            raise PluginError(f"task '{cls.id}' ({cls.__module__}.{cls.__qualname__}) does not "
                              f"implement {', '.join(missing)}; see docs/plugin-guide.md")

    @classmethod
    def defines(cls, method: str) -> bool:
        """Whether this class (or a base below ``Task``) overrides ``Task.method``."""
        return getattr(cls, method, None) is not getattr(Task, method)


#: The methods every task implements (``register()`` refuses a task that lacks one).
REQUIRED_METHODS = ("encode", "postprocess", "metrics", "build_model", "load_model")
EVALUATE_BY = ("forward", "generate")
#: The token features an encoder takes, in the order its ONNX graph does.
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def config_labels(config: dict[str, Any]) -> list[str] | None:
    """The labels of a Hugging Face ``config.json`` in id order (``id2label``), or None when
    it has none."""
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        pairs = sorted((int(i), str(name)) for i, name in id2label.items())
    except (TypeError, ValueError):
        return None
    if [i for i, _ in pairs] != list(range(len(pairs))):
        return None
    return [name for _, name in pairs]


def field_names(fields: Iterable[Field]) -> list[str]:
    return [f.name for f in fields]


def encoder_signature(model_inputs: Sequence[str], outputs: Sequence[str] = ("logits",),
                      per_token: bool = False) -> Signature:
    """Token features in (batch × sequence), ``outputs`` out (batch, or batch × sequence)."""
    inputs = tuple(name for name in ENCODER_INPUTS if name in model_inputs)
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in inputs}
    for name in outputs:
        axes[name] = {0: "batch_size", 1: "sequence_length"} if per_token else {0: "batch_size"}
    return Signature(inputs, tuple(outputs), axes)
