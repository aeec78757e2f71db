"""The optimum side of tools/optimum_check.py: runs in the separate optimum-onnx environment
(transformers 4.x), never in nlpforge's, and imports nothing from nlpforge.

    python tools/optimum_ort.py SPEC.json OUT.json

SPEC.json: {"cases": [{"name", "class", "dir", "load": {from_pretrained keywords},
"batches": [{feature name: nested int lists}], "generate": {generate() keywords} or absent,
"cache_inputs_by_layer": true to pair cache tensors with graph inputs by name (see by_layer)}],
"tokenizers": [{"dir", "texts"}]}. For each case OUT.json gets the class's outputs per batch
(``logits`` for ORTModelForSequenceClassification, ``sequences`` from a greedy ``generate()``
for the generative classes) or the error that stopped it; for each tokenizer dir, whether
``AutoTokenizer`` and ``PreTrainedTokenizerFast`` load it and the ids they give.
"""

from __future__ import annotations

import json
import sys
import traceback
from importlib import metadata


def versions() -> dict[str, str]:
    out = {}
    for name in ("optimum-onnx", "optimum", "transformers", "onnxruntime", "torch", "tokenizers",
                 "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def error_text(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {exc} (at {last.filename}:{last.lineno})"


def by_layer(model) -> None:
    """Make an ORTModelForSeq2SeqLM feed each cache tensor to the graph input of its name.

    optimum flattens the cache layer by layer (``0.decoder.key``, ``0.decoder.value``,
    ``0.encoder.key``, ``0.encoder.value``, ``1.decoder.key``…) and zips that with the graph's
    cache inputs in the graph's order, which is right only for graphs whose inputs are in
    that order (optimum's own exports). Sorting the input names the same way pairs them by
    name whatever the graph's order.
    """
    def layer_order(name: str) -> tuple:
        _, layer, part, kind = name.rsplit(".", 3)
        return int(layer), part != "decoder", kind != "key"

    for part in (getattr(model, "decoder", None), getattr(model, "decoder_with_past", None)):
        if part is not None and part.key_value_input_names:
            part.key_value_input_names = sorted(part.key_value_input_names, key=layer_order)


def run_case(case: dict) -> dict:
    import numpy as np
    import optimum.onnxruntime as ort_models
    import torch

    model_class = getattr(ort_models, case["class"])
    try:
        model = model_class.from_pretrained(case["dir"], **case.get("load", {}))
    except Exception as exc:  # noqa: BLE001 - the error is the result
        return {"loaded": False, "stage": "from_pretrained", "error": error_text(exc)}
    if case.get("cache_inputs_by_layer"):
        by_layer(model)
    result: dict = {"loaded": True, "model_class": type(model).__name__, "batches": []}
    parts = [model, *(getattr(model, name, None) for name in
                      ("encoder", "decoder", "decoder_with_past"))]
    # the ONNX files the model runs (ORT sessions keep their path)
    result["files"] = sorted({str(getattr(part, "path", "")).rsplit("/", 1)[-1]
                              for part in parts if getattr(part, "path", None)})
    try:
        for batch in case["batches"]:
            tensors = {k: torch.tensor(np.asarray(v, dtype=np.int64)) for k, v in batch.items()}
            if "generate" in case:
                with torch.inference_mode():
                    out = model.generate(**tensors, **case["generate"])
                result["batches"].append({"sequences": out.numpy().tolist()})
            else:
                out = model(**tensors)
                result["batches"].append({"logits": np.asarray(out.logits).tolist()})
    except Exception as exc:  # noqa: BLE001
        return {**result, "stage": "generate" if "generate" in case else "forward",
                "error": error_text(exc)}
    return result


def run_tokenizer(entry: dict) -> dict:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    out: dict = {}
    loaders = {
        "AutoTokenizer.from_pretrained": lambda: AutoTokenizer.from_pretrained(entry["dir"]),
        "PreTrainedTokenizerFast.from_pretrained":
            lambda: PreTrainedTokenizerFast.from_pretrained(entry["dir"]),
        "PreTrainedTokenizerFast(tokenizer_file=...)": lambda: PreTrainedTokenizerFast(
            tokenizer_file=f"{entry['dir']}/tokenizer.json"),
    }
    for name, load in loaders.items():
        try:
            tokenizer = load()
            ids = [tokenizer(text)["input_ids"] for text in entry["texts"]]
            out[name] = {"loaded": True, "class": type(tokenizer).__name__, "input_ids": ids}
        except Exception as exc:  # noqa: BLE001
            out[name] = {"loaded": False, "error": error_text(exc)}
    return out


def main() -> None:
    spec_path, out_path = sys.argv[1], sys.argv[2]
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    out = {"versions": versions(),
           "cases": {case["name"]: run_case(case) for case in spec["cases"]},
           "tokenizers": {t["dir"]: run_tokenizer(t) for t in spec.get("tokenizers", [])}}
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
