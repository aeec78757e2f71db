"""The report of tools/bench_inference.py: its tables (ratios labelled by what they compare),
the targets as met or missed with their numbers, and the plot, from results.json."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench_common import write_markdown

#: Accuracy a contender may lose against PyTorch fp32 and still count (points).
MAX_DROP = 0.5


def model_flops(config: dict, seq: int) -> float:
    """Multiply-add FLOPs of one sequence through a BERT encoder + classifier."""
    h, inner, layers = config["hidden_size"], config["intermediate_size"], \
        config["num_hidden_layers"]
    per_layer = 8 * seq * h * h + 4 * seq * h * inner + 4 * seq * seq * h
    return layers * per_layer + 2 * h * h + 2 * h * len(config.get("id2label", {0: 0, 1: 1}))


def torch_names(results: dict) -> list[str]:
    """The PyTorch contenders of this run (PyTorch itself and the pipeline)."""
    return [n for n in results["contenders"] if n in results["pytorch_contenders"]]


def drop(results: dict, name: str) -> float:
    """Accuracy points ``name`` loses against PyTorch fp32 (negative: it gains)."""
    e2e = results["contenders"]
    return e2e["pytorch-fp32"]["end_to_end"]["accuracy"] - e2e[name]["end_to_end"]["accuracy"]


def best_torch(results: dict, measure: str) -> tuple[str, float]:
    """The best PyTorch contender on ``measure``: ``e2e`` (sentences/s, highest) or ``b1``
    (batch-1 latency at 128 tokens, lowest)."""
    c = results["contenders"]
    if measure == "e2e":
        name = max(torch_names(results), key=lambda n: c[n]["end_to_end"]["sentences_per_s"])
        return name, c[name]["end_to_end"]["sentences_per_s"]
    name = min(torch_names(results), key=lambda n: c[n]["latency_ms"]["128"])
    return name, c[name]["latency_ms"]["128"]


def ratio(value: float) -> str:
    return f"{value:.2f}x"


def describe(results: dict) -> list[str]:
    rounds, rows = results.get("rounds", "?"), results["rows"]
    lines = [f"{results['threads']} threads per contender, {rounds} rounds, {rows} SST-2 "
             f"validation rows. Medians; every contender in its own process, in turns. "
             f"Load average before/after: {results['load_before']} / {results['load_after']}."]
    if results.get("device") == "cuda":
        return lines + [f"GPU: {results['gpu']}.", "",
                        "Every end-to-end loop does the same work: tokenize, sort the rows by "
                        "token count, batches of 32 padded to their own longest row, the model, "
                        "argmax, labels in input order. `pytorch-*`: "
                        "AutoModelForSequenceClassification on the GPU in inference mode (fp16: "
                        "`model.half()`), inputs copied to the GPU and logits back like ONNX "
                        "Runtime's; `nlpforge-*`: `nlpforge.load(EXPORT, device=\"cuda\", "
                        "variant=...)` on ONNX Runtime's CUDA provider (fp16: the export's "
                        "`--fp16` variant)."]
    lines += ["", "Every end-to-end loop but the pipeline's does the same work: tokenize, sort "
              "the rows by token count, batches of 32 padded to their own longest row, the "
              "model, argmax, labels in input order. `pytorch-*`: "
              "AutoModelForSequenceClassification in inference mode (bf16: "
              "`torch.autocast(\"cpu\", dtype=torch.bfloat16)`; int8: `quantize_dynamic` of "
              "the Linear layers to qint8; fp16: `model.half()`); `hf-pipeline`: "
              "`pipeline(\"text-classification\", model=RUN)`, `batch_size=32` (its batch-1 "
              "figures include tokenizing the text); `onnxruntime-*`: plain onnxruntime + "
              "tokenizers + numpy written by hand on the export's graphs with nlpforge's "
              "session settings; `nlpforge-*`: `nlpforge.load(EXPORT, variant=...)` (`tuned`: "
              "no variant, the export's own choice), `.run` on fixed shapes, `.predict` end to "
              "end. \"Best PyTorch contender\": the fastest of the PyTorch ones and the "
              "pipeline on that measure."]
    for name, why in results.get("skipped", {}).items():
        lines += ["", f"Skipped `{name}`: {why}."]
    return lines


def shapes_table(results: dict) -> list[str]:
    c, seqs = results["contenders"], results["seqs"]
    base = c["pytorch-fp32"]["latency_ms"]["128"] if "pytorch-fp32" in c else None
    best_name, best = best_torch(results, "b1") if torch_names(results) else ("", None)
    lines = ["## Latency at batch 1 (ms) and throughput at batch 32 (sequences/s)", "",
             "| contender | " + " | ".join(f"b1 s{s} ms" for s in seqs) + " | "
             + " | ".join(f"b{results['batch']} s{s} seq/s" for s in seqs)
             + " | b1 s128 vs PyTorch fp32 | b1 s128 vs best PyTorch contender |",
             "| --- |" + " ---: |" * (2 * len(seqs) + 2)]
    for name, r in c.items():
        ms = r["latency_ms"]["128"]
        lines.append(f"| {name} | " + " | ".join(f"{r['latency_ms'][str(s)]:.2f}" for s in seqs)
                     + " | " + " | ".join(f"{r['throughput'][str(s)]:.1f}" for s in seqs)
                     + f" | {ratio(base / ms) if base else '-'} | "
                     f"{ratio(best / ms) if best else '-'} |")
    if best:
        lines += ["", f"Best PyTorch contender at batch 1, 128 tokens: {best_name}."]
    return lines


def end_to_end_table(results: dict) -> list[str]:
    c = results["contenders"]
    base = c["pytorch-fp32"]["end_to_end"] if "pytorch-fp32" in c else None
    best_name, best = best_torch(results, "e2e") if torch_names(results) else ("", None)
    lines = [f"## End to end: {results['rows']} SST-2 validation sentences, batch 32", "",
             "| contender | sentences/s | vs PyTorch fp32 | vs best PyTorch contender | "
             "accuracy % | accuracy vs PyTorch fp32 (points) | variant |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, r in c.items():
        e = r["end_to_end"]
        lines.append(
            f"| {name} | {e['sentences_per_s']:.1f} | "
            f"{ratio(e['sentences_per_s'] / base['sentences_per_s']) if base else '-'} | "
            f"{ratio(e['sentences_per_s'] / best) if best else '-'} | {e['accuracy']:.2f} | "
            f"{e['accuracy'] - base['accuracy'] if base else float('nan'):+.2f} | "
            f"{r.get('variant', '')} |")
    if best:
        lines += ["", f"Best PyTorch contender end to end: {best_name}."]
    if c.get("nlpforge-tuned", {}).get("variant_reason"):
        tuned = c["nlpforge-tuned"]
        lines += ["", f"`nlpforge-tuned` ran the {tuned['variant']} variant: "
                      f"{tuned['variant_reason']}."]
    return lines


def overhead_table(results: dict) -> list[str]:
    c = results["contenders"]
    variants = [v for v in ("fp32", "int8")
                if f"nlpforge-{v}" in c and f"onnxruntime-{v}" in c]
    if not variants:
        return []
    lines = ["## What the runtime adds", "",
             "Tokenize, pad, run a stub instead of the model, postprocess: all "
             f"{results['rows']} sentences, batch 32 (ms).", "",
             "| loop | " + " | ".join(variants) + " |", "| --- |" + " ---: |" * len(variants)]
    for kind, label in (("nlpforge", "nlpforge predict"),
                        ("onnxruntime", "hand-written onnxruntime loop")):
        lines.append(f"| {label} | " + " | ".join(f"{c[f'{kind}-{v}']['overhead_ms']:.1f}"
                                                  for v in variants) + " |")
    return lines


def compute_table(results: dict, config: dict) -> list[str]:
    c, peak = results["contenders"], results.get("peak")
    if not peak:
        return []
    batch = results["batch"]
    flops = model_flops(config, 128) * batch
    lines = ["## Compute", "",
             f"Matrix-multiply peak ({peak['n']}x{peak['n']} fp32, {results['threads']} "
             f"threads): PyTorch {peak['torch_gflops']:.1f} GFLOP/s, ONNX Runtime "
             f"{peak['onnxruntime_gflops']:.1f} GFLOP/s; peak = {peak['peak_gflops']:.1f} (best "
             f"of the rounds: {peak['rounds']}). ONNX Runtime's uint8 x int8 kernel, same size: "
             f"{peak['int8_gops']:.1f} GOP/s, "
             f"{peak['int8_gops'] / peak['onnxruntime_gflops']:.2f}x its fp32 one: the most an "
             f"int8 model can gain over fp32 on this CPU, before quantizing activations and the "
             f"layers that stay fp32.", "",
             "Paired: the model at batch 32 / seq 128 and ONNX Runtime's fp32 peak measured in "
             "turns within the contender's process, 5 pairs per round; the median share over "
             "all pairs.", "",
             "| fp32 contender | GFLOP/s at batch 32, seq 128 | share of the best peak | "
             "paired share |",
             "| --- | ---: | ---: | ---: |"]
    for name in ("pytorch-fp32", "onnxruntime-fp32", "nlpforge-fp32", "nlpforge-optimized"):
        if name not in c:
            continue
        achieved = flops * c[name]["throughput"]["128"] / batch / 1e9
        paired = c[name].get("paired")
        lines.append(f"| {name} | {achieved:.1f} | {100 * achieved / peak['peak_gflops']:.1f}% | "
                     + (f"{100 * statistics.median(paired['shares']):.1f}% "
                        f"(peak {paired['peak_gflops']:.1f}) |" if paired else "- |"))
    return lines


def report(results: dict, config: dict) -> str:
    lines = describe(results) + [""] + shapes_table(results) + [""] + end_to_end_table(results)
    for section in (overhead_table(results), compute_table(results, config)):
        if section:
            lines += [""] + section
    if results.get("device", "cpu") == "cpu":
        lines += ["", "## Targets", ""] + [f"- {t}" for t in targets(results, config)]
    return "\n".join(lines) + "\n"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def subject(results: dict) -> tuple[str, str]:
    """The nlpforge contender the targets judge: ``nlpforge-tuned`` (what ``nlpforge.load``
    gives) where it ran, else the fastest nlpforge contender end to end within ``MAX_DROP``
    points of PyTorch fp32; and a note naming the fastest such one where it differs."""
    c = results["contenders"]
    ours = [n for n in c if n.startswith("nlpforge-") and drop(results, n) <= MAX_DROP]
    fastest = max(ours, key=lambda n: c[n]["end_to_end"]["sentences_per_s"], default=None)
    name = "nlpforge-tuned" if "nlpforge-tuned" in c else fastest
    if name is None:
        raise KeyError("no nlpforge contender within the accuracy bound")
    label = f"{name} (variant {c[name]['variant']})" if "variant" in c[name] else name
    note = ""
    if fastest and fastest != name:
        rate = c[fastest]["end_to_end"]["sentences_per_s"] / best_torch(results, "e2e")[1]
        note = (f"; the fastest nlpforge contender within {MAX_DROP} points, {fastest}, "
                f"{ratio(rate)}")
    return label, note


def targets(results: dict, config: dict) -> list[str]:
    """Each target as met or missed, with the numbers; "not measured" where this run lacks
    the contenders it needs (``--only``)."""
    c = results["contenders"]
    lines = []

    def line(text: str, build: Any) -> None:
        try:
            lines.append(build())
        except (KeyError, ValueError, TypeError) as exc:
            lines.append(f"{text}: not measured in this run ({exc})")

    def e2e_target() -> str:
        label, note = subject(results)
        name = label.split()[0]
        torch_name, torch_rate = best_torch(results, "e2e")
        speed = c[name]["end_to_end"]["sentences_per_s"] / torch_rate
        lost = drop(results, name)
        return (f"predict end to end, {label}: {ratio(speed)} vs best PyTorch contender "
                f"({torch_name}, {torch_rate:.1f} sentences/s) with {lost:+.2f} points of "
                f"accuracy lost vs PyTorch fp32 (target >= 2x with <= {MAX_DROP}){note}: "
                f"{verdict(speed >= 2 and lost <= MAX_DROP)}")

    def latency_target() -> str:
        label, _ = subject(results)
        name = label.split()[0]
        ms = c[name]["latency_ms"]["128"]
        fp32 = c["pytorch-fp32"]["latency_ms"]["128"] / ms
        torch_name, torch_ms = best_torch(results, "b1")
        best = torch_ms / ms
        return (f"batch 1 x 128 tokens, {label}: {ms:.2f} ms, {ratio(fp32)} vs PyTorch fp32 "
                f"(target >= 2.5x) and {ratio(best)} vs best PyTorch contender ({torch_name}, "
                f"{torch_ms:.2f} ms; target >= 1.5x): {verdict(fp32 >= 2.5 and best >= 1.5)}")

    def runtime_target() -> str:
        variants = [v for v in ("fp32", "int8") if f"nlpforge-{v}" in c]
        cost = {v: 100 * (c[f"nlpforge-{v}"]["end_to_end"]["seconds"]
                          / c[f"onnxruntime-{v}"]["end_to_end"]["seconds"] - 1)
                for v in variants}
        if not cost:
            raise KeyError("nlpforge-fp32/int8 with onnxruntime-fp32/int8")
        parts = ", ".join(f"{v} {cost[v]:+.1f}%" for v in variants)
        stub = ""
        if "overhead_ms" in c.get("nlpforge-fp32", {}) and "onnxruntime-fp32" in c:
            stub = (f"; without the model: nlpforge {c['nlpforge-fp32']['overhead_ms']:.0f} ms "
                    f"vs the hand loop {c['onnxruntime-fp32']['overhead_ms']:.0f} ms per "
                    f"{results['rows']} sentences")
        return (f"runtime vs a hand-written onnxruntime loop on the same graph and session "
                f"settings, end-to-end time: {parts} (target within 5%): "
                f"{verdict(max(abs(v) for v in cost.values()) <= 5)}{stub}")

    def compute_target() -> str:
        ours = [n for n in ("nlpforge-fp32", "nlpforge-optimized") if "paired" in c.get(n, {})]
        if not ours:
            raise KeyError("nlpforge-fp32 or nlpforge-optimized")
        shares = {n: 100 * statistics.median(c[n]["paired"]["shares"]) for n in ours}
        name = max(shares, key=shares.get)
        peak = results["peak"]
        best = max(c[n]["throughput"]["128"] for n in ours)
        share = 100 * model_flops(config, 128) * best / 1e9 / peak["peak_gflops"]
        return (f"fp32 at batch 32 x 128 tokens ({name}): {shares[name]:.1f}% of the fp32 "
                f"matmul peak measured in turns with it in the same run (target >= 85%): "
                f"{verdict(shares[name] >= 85)}; {share:.1f}% of the best round's peak, "
                f"{peak['peak_gflops']:.1f} GFLOP/s")

    line("predict end to end vs the best PyTorch contender", e2e_target)
    line("batch 1 x 128 tokens vs PyTorch", latency_target)
    line("runtime vs a hand-written onnxruntime loop", runtime_target)
    line("fp32 share of the matmul peak", compute_target)
    return lines


def plot(results: dict, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c, seqs = results["contenders"], results["seqs"]
    names = list(c)
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(seqs))]
        axes[0].bar(xs, [c[name]["latency_ms"][str(s)] for s in seqs], width, label=name)
        axes[1].bar(xs, [c[name]["throughput"][str(s)] for s in seqs], width, label=name)
    for ax, title in ((axes[0], "latency, batch 1 (ms, lower is better)"),
                      (axes[1], "throughput, batch 32 (sequences/s)")):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(seqs))])
        ax.set_xticklabels([f"seq {s}" for s in seqs])
        ax.set_title(title)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    rates = [c[n]["end_to_end"]["sentences_per_s"] for n in names]
    axes[2].barh(names, rates, color=[f"C{i % 10}" for i in range(len(names))])
    for y, (rate, name) in enumerate(zip(rates, names)):
        axes[2].text(rate, y, f" {rate:.0f} ({c[name]['end_to_end']['accuracy']:.1f}%)",
                     va="center", fontsize=8)
    axes[2].set_title(f"end to end, {results['rows']} SST-2 sentences (sentences/s, accuracy)")
    axes[2].invert_yaxis()
    where = results.get("gpu") or f"{results['threads']} CPU threads"
    fig.suptitle(f"MiniLM-L6 SST-2 on {where}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_report(results: dict, out: Path, markdown: str | None = None) -> None:
    """results.md and bench.png under ``out``; the same page at ``markdown`` when given."""
    config = json.loads((Path(results["run"]) / "config.json").read_text())
    device = results.get("device", "cpu")
    title = ("Inference benchmark: MiniLM-L6 (SST-2)"
             + (" on CUDA" if device == "cuda" else f", {results['threads']} CPU threads"))
    body = report(results, config)
    for path in [out / "results.md", *([markdown] if markdown else [])]:
        write_markdown(path, title, body, command=results["command"], cpu=results["machine"])
    plot(results, out / "bench.png")
    print(body)
