"""Peak memory of long texts: one long line through ``nlpforge predict --input``, one long text
through ``Predictor.predict`` and through the server's length check, and a pair of texts.

    python tools/long_text_memory.py [--export DIR] [--tree SRC] [--line-mb 50] [--text-mb 3.9]
                                     [--pair-kb 16]

Each case runs in a fresh process (Linux: it reads ``/proc/self/status``) and reports the
process's peak resident memory (``VmHWM``) and, past loading the model, how much the case
added to it. ``--export`` defaults to a tiny text-classification export built with
``tools/make_tiny_export.py`` (kept in ``build/tiny-export``). ``--tree SRC`` measures
another source tree of nlpforge (its ``nlpforge/`` and ``plugins/`` go first on
``PYTHONPATH``), e.g. the code before a change:

    mkdir /tmp/before && git archive COMMIT | tar -x -C /tmp/before
    python tools/long_text_memory.py --tree /tmp/before

The figures, with the commands, are in docs/security.md ("Long texts").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def prose(size: int) -> str:
    """``size`` characters of words separated by spaces (the same for every run)."""
    words = ("the food was cold but the service was friendly and the view over the harbour "
             "made up for most of it").split()
    out, state, length = [], 12345, 0
    while length < size:
        state = (state * 1103515245 + 12345) % 2**31
        word = words[state % len(words)]
        out.append(word)
        length += len(word) + 1
    return " ".join(out)[:size]


def _status(key: str) -> float:
    """A ``/proc/self/status`` memory figure in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def child(case: str, export: str, size: int, out: str) -> None:
    """One case in this process; writes {"peak_mb", "added_mb", "seconds"} to ``out``."""
    if case == "cli":
        from nlpforge.cli.main import cli

        path = Path(out).with_suffix(".jsonl")
        path.write_text(json.dumps({"text": prose(size)}) + "\n", encoding="utf-8")
        base = _status("VmRSS")
        start = time.perf_counter()
        with open(os.devnull, "w") as sink:
            sys.stdout = sink
            try:
                cli(["predict", export, "--input", str(path)], standalone_mode=False)
            finally:
                sys.stdout = sys.__stdout__
    else:
        text = " " * size + prose(5_000) if case == "spaces" else prose(size)
        if case == "length_check":
            from nlpforge.serving.predicting import PredictorModel

            served = PredictorModel.load("m", export)

            def run() -> object:
                return served._too_long([{"text": text}], "inputs")
        else:
            import nlpforge

            model = nlpforge.load(export)
            row = {"text": text, "text_pair": text} if case == "pair" else {"text": text}

            def run() -> object:
                return model.predict([row])
        base = _status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM back to the current RSS
        start = time.perf_counter()
        run()
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    Path(out).write_text(json.dumps({"peak_mb": peak, "added_mb": peak - base,
                                     "seconds": seconds}))


def _measure(case: str, export: Path, size: int, tree: Path | None) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if tree is not None:
        plugins = [str(p) for p in sorted((tree / "plugins").iterdir()) if p.is_dir()]
        env["PYTHONPATH"] = os.pathsep.join([str(tree), str(tree / "plugins"), *plugins,
                                             env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        result = subprocess.run([sys.executable, __file__, "--child", case, str(export),
                                 str(size), str(out)], capture_output=True, text=True, env=env)
        if result.returncode != 0 or not out.exists():
            return {"error": (result.stderr.strip().splitlines() or ["?"])[-1][:100]}
        return json.loads(out.read_text())


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, help="a text-classification export dir")
    parser.add_argument("--tree", type=Path, help="another nlpforge source tree to measure")
    parser.add_argument("--line-mb", type=float, default=50.0)
    parser.add_argument("--text-mb", type=float, default=3.9)
    parser.add_argument("--pair-kb", type=float, default=16.0,
                        help="size of each text of the pair (tokenizing a pair whole costs the "
                             "product of their lengths)")
    args = parser.parse_args()
    export = args.export or ROOT / "build" / "tiny-export"
    if not (export / "nlpforge.json").exists():
        subprocess.run([sys.executable, str(ROOT / "tools" / "make_tiny_export.py"),
                        str(export)], check=True, capture_output=True)
    line, text = int(args.line_mb * 1e6), int(args.text_mb * 1e6)
    cases = [
        (f"`predict --input`, one {args.line_mb:g} MB line (whole process)", "cli", line),
        ("`predict --input`, one 20-character line (whole process)", "cli", 20),
        (f"`Predictor.predict`, one {args.text_mb:g} MB text", "predictor", text),
        (f"`Predictor.predict`, `text` + `text_pair` of {args.pair_kb:g} kB each", "pair",
         int(args.pair_kb * 1e3)),
        (f"server length check (`truncate=false`), one {args.text_mb:g} MB text",
         "length_check", text),
        (f"`Predictor.predict`, {args.text_mb:g} MB of spaces, then words (read to the words)",
         "spaces", text),
    ]
    print(f"source: {args.tree or ROOT}; export: {export}\n")
    print("| case | peak RSS (MB) | added by the case (MB) | seconds |")
    print("| --- | ---: | ---: | ---: |")
    for name, case, size in cases:
        r = _measure(case, export, size, args.tree)
        if "error" in r:
            print(f"| {name} | error: {r['error']} | | |")
        else:
            print(f"| {name} | {r['peak_mb']:.0f} | {r['added_mb']:.0f} | "
                  f"{r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
