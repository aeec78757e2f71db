"""Which ONNX files an export dir runs: its variants (fp32, optimized, int8, fp16) as the
manifest records them, and the graph files of each. No torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nlpforge.errors import ModelDirError
from nlpforge.manifest import Manifest

#: The ``nlpforge export`` flag that makes each variant beside fp32.
EXPORT_FLAGS = {"optimized": "--optimize extended", "int8": "--quantize int8", "fp16": "--fp16"}


def variant_entry(manifest: Manifest, variant: str | None,
                  directory: Path) -> dict[str, Any]:
    """The manifest's record of ``variant`` (None: the export's default variant);
    ModelDirError naming the variants the export has when it lacks this one."""
    fp32 = manifest["io"].get("model", "model.onnx")
    variants = manifest.get("variants") or {"fp32": {"file": fp32}}
    name = variant or manifest.get("default_variant", "fp32")
    if name not in variants:
        raise ModelDirError(f"{directory}: has no {name} variant (it has "
                            f"{', '.join(variants)}); make it with nlpforge export "
                            f"{EXPORT_FLAGS.get(name, '')}".rstrip())
    return variants[name]


def model_file_of(manifest: Manifest, variant: str | None, directory: Path) -> str:
    """The ONNX file of ``variant`` (None: the export's default variant)."""
    return variant_entry(manifest, variant, directory)["file"]


def graph_file(manifest: Manifest, role: str, variant: str | None,
               directory: Any) -> str:
    """The file of graph ``role`` (``model``; ``encoder``, ``decoder``, ``decoder_with_past``)
    in ``variant`` (None: the export's default): ``io`` names the fp32 graphs, a variant of
    a KV-cache export maps them to its own files (``graphs``)."""
    fp32 = manifest["io"].get(role, f"{role}.onnx")
    return (variant_entry(manifest, variant, directory).get("graphs") or {}).get(fp32, fp32)
