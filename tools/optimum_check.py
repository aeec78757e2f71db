"""Check that Hugging Face optimum's ORTModel classes load nlpforge export dirs and compute
what nlpforge's own runtime computes.

    python tools/optimum_check.py [--report FILE] [--work DIR] [--env DIR]

optimum-onnx (the package with ``optimum.onnxruntime``) pins transformers<4.58 and nlpforge
needs transformers 5, so optimum runs in a virtual environment of its own, built once under
``build/optimum-venv`` (rebuilt when ``OPTIMUM_ENV`` below changes; torch's CPU wheel first).
In nlpforge's environment this script trains tiny models built from configs (nothing is
downloaded) for a few steps and exports them:

- ``text-classification``: a BERT, with the ``fp32``, ``optimized`` (extended) and ``int8``
  variants;
- ``text-generation``: a GPT-2 and a Llama-style model (rotary, grouped-query attention), with
  ``fp32`` and ``optimized``;
- ``text2text-generation``: a T5 and a BART, with ``fp32`` and ``optimized``.

Then ``tools/optimum_ort.py``, in the optimum environment, loads every variant of every export
with ``ORTModelForSequenceClassification`` / ``ORTModelForCausalLM`` / ``ORTModelForSeq2SeqLM``
``.from_pretrained(export_dir, file_name=...)`` (and once with no file names: what optimum picks
by default), runs padded batches, and this script compares: logits with ``nlpforge.load(dir,
variant=...)``'s, greedy ``generate()`` tokens with nlpforge's ``Generator`` (token for token,
up to the end-of-sequence token). Each seq2seq variant also runs with optimum feeding the
cache tensors to the graph inputs of their names (``*/cache-inputs-by-layer``, see
tools/optimum_ort.py). It also records whether transformers 4's ``AutoTokenizer`` and
``PreTrainedTokenizerFast`` load the export's tokenizer and give the ids of its
``tokenizer.json``. The report (JSON) goes to ``--report`` (else stdout), a line per case to
stderr; the exit status is 0 when every case matches, 3 when one does not.
tests/test_optimum_compat.py runs it (a slow test).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENV_DIR = ROOT / "build" / "optimum-venv"
#: Installed in this order into the optimum environment. torch comes first so that optimum's
#: bare ``torch`` requirement does not pull the multi-GB CUDA build; optimum-onnx 0.1.0 wants
#: optimum~=2.1.0 and transformers>=4.36,<4.58.
OPTIMUM_ENV = (
    ("torch==2.13.0",),
    ("optimum-onnx[onnxruntime]==0.1.0", "optimum==2.1.0", "transformers==4.57.6",
     "onnxruntime==1.32.0"),
)
STAMP = "nlpforge-requirements.txt"
#: Exit status when the check ran and some case failed (1 is a crash).
INCOMPATIBLE = 3

#: Export name → (family, ORTModel class, variants the export must have).
EXPORTS = {
    "bert-classifier": ("encoder", "ORTModelForSequenceClassification",
                        ("fp32", "optimized", "int8")),
    "gpt2": ("decoder", "ORTModelForCausalLM", ("fp32", "optimized")),
    "llama": ("decoder", "ORTModelForCausalLM", ("fp32", "optimized")),
    "t5": ("encoder-decoder", "ORTModelForSeq2SeqLM", ("fp32", "optimized")),
    "bart": ("encoder-decoder", "ORTModelForSeq2SeqLM", ("fp32", "optimized")),
}
#: Seq2seq cases run a second time with optimum pairing the cache tensors with the graph's
#: cache inputs by name, not by position (tools/optimum_ort.py by_layer).
BY_LAYER = "cache-inputs-by-layer"
#: Every case the check runs: "EXPORT/VARIANT", "EXPORT/default" (no file names given: what
#: optimum picks), "EXPORT/VARIANT/cache-inputs-by-layer".
CASES = [f"{name}/{variant}" for name, (_, _, variants) in EXPORTS.items()
         for variant in ("default", *variants)] + [
         f"{name}/{variant}/{BY_LAYER}" for name, (family, _, variants) in EXPORTS.items()
         if family == "encoder-decoder" for variant in variants]
#: logits: the same graph in two onnxruntime builds.
ATOL = 1e-4
MAX_NEW_TOKENS = 12

CLASSIFY_BATCHES = [["a lovely film", "the plot was dull and far too long, i left before the end",
                     "great"], ["an utterly boring waste of two hours"]]
PROMPT_BATCHES = [["the movie was", "once upon a time there was a little model", "hi"],
                  ["the quick brown fox"]]
SOURCE_BATCHES = [["the house number 3 is small", "hello",
                   "a man in a blue shirt is standing on a ladder near two dogs in the snow"],
                  ["zwei hunde spielen im schnee"]]


# -- the optimum environment -----------------------------------------------------------------

def env_python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


@contextlib.contextmanager
def _locked(path: Path):
    """One builder at a time (several test runs may share the checkout)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no lock
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str], what: str, timeout: int = 1800) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
        raise RuntimeError(f"{what} failed ({' '.join(command)}):\n{tail}")


def ensure_env(env_dir: Path = ENV_DIR, log=print) -> Path:
    """The optimum environment's python, building the environment when it is missing or was
    built from other requirements."""
    env_dir = Path(env_dir)
    python = env_python(env_dir)
    wanted = "".join(f"{r}\n" for group in OPTIMUM_ENV for r in group)
    stamp = env_dir / STAMP
    with _locked(env_dir.with_name(env_dir.name + ".lock")):
        if python.is_file() and stamp.is_file() and stamp.read_text() == wanted:
            return python
        log(f"building the optimum environment in {env_dir} (once)")
        if env_dir.exists():
            shutil.rmtree(env_dir)
        _run([sys.executable, "-m", "venv", str(env_dir)], "creating the venv")
        for group in OPTIMUM_ENV:
            _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  *group], f"pip install {' '.join(group)}")
        _run([str(python), "-c", "import optimum.onnxruntime"], "importing optimum.onnxruntime")
        stamp.write_text(wanted)
    return python


# -- the exports (nlpforge's environment) ----------------------------------------------------

def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_exports(work: Path) -> dict[str, Path]:
    """Train each tiny model for a few steps and export it with its variants."""
    from nlpforge.export.onnx import export_run
    from nlpforge.testing import make_tiny_bert
    from nlpforge.testing.decoders import make_tiny_gpt2, make_tiny_llama
    from nlpforge.testing.encoder_decoders import make_tiny_bart, make_tiny_t5
    from nlpforge.training.loop import TrainConfig, train

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    sentiment = ROOT / "examples" / "sentiment"
    lm_rows = _write_jsonl(work / "lm.jsonl", [
        {"text": "the quick brown fox jumps over the lazy dog, again and again"},
        {"prompt": "question: how many legs does a spider have?", "completion": " eight"},
        {"text": "to be, or not to be, that is the question"}] * 3)
    pairs = _write_jsonl(work / "pairs.jsonl", [
        {"source": f"the house number {i} is small", "target": f"das haus {i} ist klein"}
        for i in range(16)])
    # (task, base maker, train file, TrainConfig extras, export extras)
    plans = {
        "bert-classifier": ("text-classification", make_tiny_bert,
                            sentiment / "train.jsonl", {"max_steps": 5},
                            {"quantize": "int8",
                             "calibration_data": str(sentiment / "validation.jsonl")}),
        "gpt2": ("text-generation", make_tiny_gpt2, lm_rows,
                 {"max_steps": 2, "batch_size": 4, "lr": 1e-3, "max_length": 32}, {}),
        "llama": ("text-generation", make_tiny_llama, lm_rows,
                  {"max_steps": 2, "batch_size": 4, "lr": 1e-3, "max_length": 32}, {}),
        # wider initial weights, so greedy output is not one token repeated
        "t5": ("text2text-generation", lambda d: make_tiny_t5(d, initializer_factor=1.5),
               pairs, {"max_steps": 1, "batch_size": 8, "lr": 1e-4}, {}),
        "bart": ("text2text-generation", lambda d: make_tiny_bart(d, init_std=0.3),
                 pairs, {"max_steps": 1, "batch_size": 8, "lr": 1e-4}, {}),
    }
    out = {}
    for name, (task, maker, data, train_extra, export_extra) in plans.items():
        base = maker(work / f"{name}-base")
        run = work / f"{name}-run"
        train(TrainConfig(task=task, model=str(base), train=str(data), output=str(run),
                          progress=False, device="cpu", **train_extra))
        out[name] = work / f"{name}-export"
        export_run(str(run), str(out[name]), overwrite=True, optimize="extended",
                   **export_extra)
    return out


def _variant_graphs(manifest: dict, variant: str) -> dict[str, str]:
    """The variant's file of each of optimum's graph names (model.onnx, encoder_model.onnx…)."""
    entry = manifest["variants"][variant]
    if "graphs" in entry:
        return dict(entry["graphs"])
    if manifest["family"] == "encoder-decoder":
        return {f: f for f in entry["files"] if not f.endswith(".data")}
    return {"model.onnx": entry["file"]}


def _load_args(family: str, graphs: dict[str, str] | None) -> dict[str, Any]:
    """from_pretrained keywords that pick the variant's files (none: optimum's choice)."""
    if family == "encoder-decoder":
        args: dict[str, Any] = {"use_cache": True}
        if graphs is not None:
            args.update(use_merged=False, encoder_file_name=graphs["encoder_model.onnx"],
                        decoder_file_name=graphs["decoder_model.onnx"],
                        decoder_with_past_file_name=graphs["decoder_with_past_model.onnx"])
        return args
    args = {"use_cache": True} if family == "decoder" else {}
    if graphs is not None:
        args["file_name"] = graphs["model.onnx"]
    return args


def _reference(directory: Path, family: str, variant: str) -> list[dict[str, Any]]:
    """nlpforge's features and results per batch: logits, or greedy tokens."""
    import numpy as np

    import nlpforge

    runtime = nlpforge.load(str(directory), device="cpu", variant=variant)
    out = []
    if family == "encoder":
        for texts in CLASSIFY_BATCHES:
            rows = runtime.as_rows(texts)
            features = runtime.task.encode(rows, runtime.tokenizer)
            feeds = {k: np.asarray(features[k]) for k in runtime.input_names if k in features}
            logits = runtime.run(feeds)["logits"]
            out.append({"features": feeds, "logits": logits,
                        "labels": [p.get("label") for p in runtime.predict(texts)]})
        return out
    config = runtime.config_for({"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False,
                                 "num_beams": 1})
    for texts in (PROMPT_BATCHES if family == "decoder" else SOURCE_BATCHES):
        rows = runtime.as_rows(texts)
        ids, mask = runtime.encode(rows, config)
        result = runtime.search(rows, config)
        out.append({"features": {"input_ids": ids, "attention_mask": mask},
                    "prompt_length": result.prompt_length,
                    "sequences": result.sequences,
                    "new_tokens": [result.new_tokens(i).tolist()
                                   for i in range(len(result.lengths))],
                    "eos": sorted(int(t) for t in (config.eos_token_id
                                                   or runtime.stepper.eos_token_ids))})
    return out


def _cache_inputs(path: Path) -> dict[str, Any]:
    """The cache inputs of a decoder_with_past graph, and whether they come layer by layer
    (``past_key_values.0.decoder.key``, ``.0.decoder.value``, ``.0.encoder.key``,
    ``.0.encoder.value``, ``.1.decoder.key``…), the order optimum feeds them in."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    names = [i.name for i in graph.input if i.name.startswith("past_key_values.")]
    layers = len(names) // 4
    optimum = [f"past_key_values.{i}.{part}.{kind}" for i in range(layers)
               for part in ("decoder", "encoder") for kind in ("key", "value")]
    return {"inputs": names, "layer_by_layer": names == optimum}


def _cut(tokens: list[int], eos: list[int], limit: int) -> list[int]:
    """New tokens up to and including the first end-of-sequence token."""
    tokens = tokens[:limit]
    for i, token in enumerate(tokens):
        if token in eos:
            return tokens[:i + 1]
    return tokens


def _compare(family: str, reference: list[dict], theirs: dict) -> dict[str, Any]:
    import numpy as np

    if not theirs.get("loaded") or "error" in theirs:
        return {"ok": False, "error": theirs.get("error"), "stage": theirs.get("stage"),
                "files": theirs.get("files")}
    details = []
    ok = True
    for ours, got in zip(reference, theirs["batches"], strict=True):
        if family == "encoder":
            logits = np.asarray(got["logits"], dtype=np.float32)
            diff = (float(np.abs(logits - ours["logits"]).max())
                    if logits.shape == ours["logits"].shape else float("inf"))
            same = diff <= ATOL
            details.append({"max_abs_diff": diff, "shape": list(logits.shape),
                            "labels": ours["labels"]})
        else:
            sequences = got["sequences"]
            start = ours["prompt_length"]
            mine = ours["new_tokens"]
            other = [_cut(row[start:], ours["eos"], MAX_NEW_TOKENS) for row in sequences]
            prefix_same = all(row[:start] == list(map(int, ref[:start]))
                              for row, ref in zip(sequences, ours["sequences"].tolist()))
            same = prefix_same and other == mine
            details.append({"nlpforge": mine, "optimum": other, "prefix_same": prefix_same})
        ok = ok and same
    return {"ok": ok, "files": theirs.get("files"), "batches": details}


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in ("nlpforge", "transformers", "torch", "onnxruntime", "onnxruntime-gpu",
                 "tokenizers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def run_check(work: Path, env_dir: Path = ENV_DIR, log=print) -> dict[str, Any]:
    """Build the exports under ``work``, run optimum on them, compare; returns the report."""
    from tokenizers import Tokenizer

    start = time.perf_counter()
    python = ensure_env(env_dir, log)
    log("training and exporting the tiny models")
    exports = make_exports(Path(work) / "exports")
    cases, references, families = [], {}, {}
    tokenizer_texts = [t for batch in CLASSIFY_BATCHES + PROMPT_BATCHES + SOURCE_BATCHES
                       for t in batch]
    tokenizers, expected_ids, cache_inputs = [], {}, {}
    for name, directory in exports.items():
        family, model_class, variants = EXPORTS[name]
        manifest = json.loads((directory / "nlpforge.json").read_text())
        if sorted(manifest["variants"]) != sorted(variants):
            raise RuntimeError(f"{name}: variants {sorted(manifest['variants'])}, "
                               f"expected {sorted(variants)}")
        for variant in ("default", *variants):
            graphs = None if variant == "default" else _variant_graphs(manifest, variant)
            reference = _reference(directory, family, "fp32" if variant == "default" else variant)
            spec = {"class": model_class, "dir": str(directory),
                    "load": _load_args(family, graphs),
                    "batches": [{k: v.tolist() for k, v in b["features"].items()}
                                for b in reference]}
            if family != "encoder":
                spec["generate"] = {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False,
                                    "num_beams": 1}
            variant_cases = {f"{name}/{variant}": spec}
            if family == "encoder-decoder" and variant != "default":
                variant_cases[f"{name}/{variant}/{BY_LAYER}"] = {**spec,
                                                                 "cache_inputs_by_layer": True}
            for case, case_spec in variant_cases.items():
                references[case], families[case] = reference, family
                cases.append({"name": case, **case_spec})
        if family == "encoder-decoder":
            cache_inputs[name] = _cache_inputs(directory / "decoder_with_past_model.onnx")
        tokenizers.append({"dir": str(directory), "texts": tokenizer_texts})
        backend = Tokenizer.from_file(str(directory / "tokenizer.json"))
        expected_ids[str(directory)] = [e.ids for e in backend.encode_batch(tokenizer_texts)]
    spec_path = Path(work) / "optimum-spec.json"
    out_path = Path(work) / "optimum-out.json"
    spec_path.write_text(json.dumps({"cases": cases, "tokenizers": tokenizers}))
    log(f"running optimum on {len(cases)} cases")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([str(python), str(ROOT / "tools" / "optimum_ort.py"),
                             str(spec_path), str(out_path)], capture_output=True, text=True,
                            env=env, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"tools/optimum_ort.py failed:\n{result.stderr[-4000:]}")
    theirs = json.loads(out_path.read_text())
    report: dict[str, Any] = {
        "versions": {"nlpforge_env": _versions(), "optimum_env": theirs["versions"]},
        "cases": {}, "tokenizers": {}, "seq2seq_cache_inputs": cache_inputs}
    for case in CASES:
        report["cases"][case] = {"family": families[case],
                                 **_compare(families[case], references[case],
                                            theirs["cases"][case])}
    for name, directory in exports.items():
        entry = {}
        for loader, got in theirs["tokenizers"][str(directory)].items():
            if got["loaded"]:
                entry[loader] = {"loaded": True, "class": got["class"],
                                 "same_ids": got["input_ids"] == expected_ids[str(directory)]}
            else:
                entry[loader] = {"loaded": False, "error": got["error"]}
        report["tokenizers"][name] = entry
    report["ok"] = all(c["ok"] for c in report["cases"].values())
    report["seconds"] = round(time.perf_counter() - start, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", help="write the JSON report here (default: stdout)")
    parser.add_argument("--work", help="folder for the runs and exports (default: a temp dir)")
    parser.add_argument("--env", default=str(ENV_DIR), help="the optimum environment's folder")
    args = parser.parse_args()
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        report = run_check(Path(args.work or tmp), Path(args.env), log)
    text = json.dumps(report, indent=1)
    if args.report:
        Path(args.report).write_text(text + "\n")
    else:
        print(text)
    for case, result in report["cases"].items():
        log(f"{case}: {'ok' if result['ok'] else 'FAILED ' + str(result.get('error') or '')}")
    for name, entry in report["tokenizers"].items():
        log(f"{name} tokenizer: " + ", ".join(
            f"{loader} {'same ids' if r.get('same_ids') else r.get('error') or 'other ids'}"
            for loader, r in entry.items()))
    sys.exit(0 if report["ok"] else INCOMPATIBLE)


if __name__ == "__main__":
    main()
