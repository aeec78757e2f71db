"""The model types optimum-onnx 0.1.0 exports for nlpforge's tasks, counted from its model
configs (the ``TasksManager`` table its ONNX configs register in), written to
docs/data/optimum-onnx-0.1.0.json for tools/gen_architectures.py.

    python tools/optimum_types.py [--env DIR]

optimum-onnx runs in its own environment (it pins transformers<4.58): the one
tools/optimum_check.py builds under build/optimum-venv.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from optimum_check import ENV_DIR, ensure_env  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "data" / "optimum-onnx-0.1.0.json"
#: nlpforge task → the optimum task names that export the same thing (with a KV cache for
#: the generative ones, as nlpforge's exports have).
TASKS = {"text-classification": ["text-classification"],
         "token-classification": ["token-classification"],
         "question-answering": ["question-answering"], "fill-mask": ["fill-mask"],
         "text-generation": ["text-generation-with-past"],
         "text2text-generation": ["text2text-generation-with-past"]}
COUNT = f"""
import json
import optimum.exporters.onnx.model_configs  # registers the ONNX configs
from optimum.exporters.tasks import TasksManager
import optimum.version, transformers
tasks = {TASKS!r}
out = {{}}
for kind, exporters in TasksManager._SUPPORTED_MODEL_TYPE.items():
    onnx = exporters.get("onnx") or {{}}
    for ours, theirs in tasks.items():
        if any(t in onnx for t in theirs):
            out.setdefault(ours, []).append(kind)
print(json.dumps({{"optimum": optimum.version.__version__,
                  "transformers": transformers.__version__,
                  "tasks": {{k: sorted(v) for k, v in sorted(out.items())}}}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default=str(ENV_DIR))
    args = parser.parse_args()
    python = ensure_env(Path(args.env), log=lambda m: print(m, file=sys.stderr))
    result = subprocess.run([str(python), "-c", COUNT], capture_output=True, text=True,
                            check=True)
    data = json.loads(result.stdout.strip().splitlines()[-1])
    data["command"] = "python tools/optimum_types.py"
    data["optimum_onnx"] = "0.1.0"
    OUT.write_text(json.dumps(data, indent=2) + "\n")
    print({task: len(kinds) for task, kinds in data["tasks"].items()})


if __name__ == "__main__":
    main()
