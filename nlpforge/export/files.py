"""ONNX files on disk: one file, or a file plus its external data when the weights are large."""

from __future__ import annotations

import collections
from pathlib import Path

import onnx

#: Protobuf cannot hold a model of 2 GB or more; bigger weights go to an external data file.
TWO_GB = 2 * 1024**3


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the model's initializers, inline or external."""
    total = 0
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            total += int({e.key: e.value for e in tensor.external_data}.get("length", 0))
        else:
            total += len(tensor.raw_data) or onnx.numpy_helper.to_array(tensor).nbytes
    return total


def tidy(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop shape annotations on initializers: the dynamo exporter writes some that onnx's
    shape inference (and so ONNX Runtime's quantizer) rejects once a tool rewrites the weights."""
    weights = {t.name for t in model.graph.initializer}
    keep = [v for v in model.graph.value_info if v.name not in weights]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    return model


def save(model: onnx.ModelProto, path: Path, threshold: int = TWO_GB) -> list[str]:
    """Write ``model`` to ``path``; weights of ``threshold`` bytes or more go to ``<name>.data``.

    Returns the names of the files written, the model file first.
    """
    path = Path(path)
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    if tensor_bytes(model) >= threshold:
        onnx.save_model(model, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data.name)
        return [path.name, data.name]
    onnx.save_model(model, str(path))
    return [path.name]


def load(path: Path) -> onnx.ModelProto:
    """The model with its external data loaded."""
    return onnx.load(str(path), load_external_data=True)


def model_files(path: Path) -> list[str]:
    """The model file and the external data files it refers to, relative to its folder."""
    model = onnx.load(str(path), load_external_data=False)
    external = {e.value for t in model.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL
                for e in t.external_data if e.key == "location"}
    return [Path(path).name, *sorted(external)]


def op_counts(path: Path) -> dict[str, int]:
    """How many nodes of each type the graph has (contrib ops as ``com.microsoft.Name``)."""
    model = onnx.load(str(path), load_external_data=False)
    counts = collections.Counter(
        f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        for n in model.graph.node)
    return dict(sorted(counts.items()))
