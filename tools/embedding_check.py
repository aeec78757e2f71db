"""The packaged all-MiniLM-L6-v2 exported by nlpforge against sentence-transformers: the cosine of
the two embeddings of every SST-2 dev sentence.

    python tools/embedding_check.py [--export DIR] [--quantize int8] [--out tools/out/embedding]

Reads ../shared/datasets/sst2/validation.jsonl (or $NLPFORGE_DATASETS/sst2); exits 0 with a
message when absent. Without ``--export`` it exports the model from its sentence-transformers
files, as ``nlpforge export FOLDER`` does; ``--quantize int8`` adds the int8 variant, its
quality gate checked on pairs of each dev sentence and the sentence with every third word left
out. Prints the min and median cosine of each variant of the export against
``SentenceTransformer.encode()`` (fp32). Speed belongs to tools/bench_inference.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from evidence import DATASETS, ROOT, minilm


def export_checkpoint(folder: str, output: Path, quantize: str, calibration: Path) -> None:
    """The sentence-transformers folder exported as it is (``nlpforge export FOLDER``)."""
    from nlpforge.export.onnx import export_model

    options = {"overwrite": True}
    if quantize == "int8":
        options.update(quantize="int8", calibration_data=str(calibration))
    export_model(folder, str(output), task="sentence-embedding", **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", help="an existing nlpforge export of all-MiniLM-L6-v2")
    parser.add_argument("--quantize", choices=("none", "int8"), default="none")
    parser.add_argument("--out", default=str(ROOT / "tools" / "out" / "embedding"))
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    data = DATASETS / "sst2" / "validation.jsonl"
    if not data.is_file():
        print(f"skipped: {data} not found (set NLPFORGE_DATASETS)")
        return
    sentences = [json.loads(line)["text"] for line in data.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    folder = minilm()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    export = Path(args.export) if args.export else out / "minilm"
    if not args.export:
        pairs = out / "pairs.jsonl"
        with pairs.open("w", encoding="utf-8") as f:
            for text in sentences:
                words = text.split()
                if len(words) >= 6:  # a near-duplicate: every third word left out
                    kept = [w for i, w in enumerate(words) if i % 3 != 2]
                    f.write(json.dumps({"text": text, "text_pair": " ".join(kept)},
                                       ensure_ascii=False) + "\n")
        export_checkpoint(folder, export, args.quantize, pairs)

    import nlpforge
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(folder, device="cpu").encode(
        sentences, batch_size=args.batch_size)
    manifest = json.loads((export / "nlpforge.json").read_text())
    results = {"sentences": len(sentences), "export": str(export), "variants": {}}
    for variant in manifest.get("variants", {"fp32": {}}):
        model = nlpforge.load(str(export), device="cpu", variant=variant,
                              batch_size=args.batch_size)
        got = np.array([p["embedding"] for p in model.predict([{"text": s} for s in sentences])])
        cos = (got * reference).sum(1) / np.linalg.norm(got, axis=1) \
            / np.linalg.norm(reference, axis=1)
        results["variants"][variant] = {
            "min_cosine": round(float(cos.min()), 9),
            "median_cosine": round(float(np.median(cos)), 9),
            "max_abs_diff": float(np.abs(got - reference).max())}
        print(f"{variant}: min cosine {cos.min():.6f}, median {np.median(cos):.6f} "
              f"({len(sentences)} SST-2 dev sentences)", file=sys.stderr)
    quality = (manifest.get("quantization") or {}).get("validation", {}).get("quality")
    if quality:
        results["int8_quality_gate"] = quality
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
