"""Which ONNX files an export dir runs: its variants (fp32, optimized, int8, fp16) as the
manifest records them, and the graph files of each. No torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nlpforge.errors import ModelDirError
from nlpforge.manifest import Manifest
from nlpforge.runtime.host import describe, same_cpu

#: The ``nlpforge export`` flag that makes each variant beside fp32.
EXPORT_FLAGS = {"optimized": "--optimize extended", "int8": "--quantize int8", "fp16": "--fp16",
                "tuned": "--optimize auto (or nlpforge tune DIR)"}


def choose_variant(manifest: Manifest, variant: str | None = None) -> tuple[str, str]:
    """The variant to run and why: the one asked for; else the variant ``nlpforge tune``
    measured fastest, when it was measured on this CPU; else the export's default."""
    default = manifest.get("default_variant", "fp32")
    if variant:
        return variant, "asked for"
    tuning = manifest.get("tuning")
    if not tuning:
        return default, "the export's default (not tuned: nlpforge tune measures the variants " \
                        "on this machine)"
    if same_cpu(tuning.get("cpu")) and tuning.get("variant") in (manifest.get("variants") or {}):
        return tuning["variant"], (f"tuned on this CPU: {tuning['speedup_vs_fp32']:.2f}x fp32 "
                                   f"({tuning['objective']})")
    return default, (f"the export's default: it was tuned on another CPU "
                     f"({describe(tuning.get('cpu') or {})}); run nlpforge tune here")


def variant_entry(manifest: Manifest, variant: str | None,
                  directory: Path) -> dict[str, Any]:
    """The manifest's record of ``variant`` (None: ``choose_variant``'s); ModelDirError
    naming the variants the export has when it lacks this one."""
    fp32 = manifest["io"].get("model", "model.onnx")
    variants = manifest.get("variants") or {"fp32": {"file": fp32}}
    name = choose_variant(manifest, variant)[0]
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
