#!/usr/bin/env bash
# Embedding proof: install only the base package (no extras) into a fresh virtual environment,
# check that torch cannot be imported there, and predict with an export made earlier.
#   tools/check_runtime_only.sh EXPORT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
EXPORT="$(realpath "${1:?usage: check_runtime_only.sh EXPORT_DIR}")"
VENV="$(pwd)/build/venv-runtime"
rm -rf "$VENV"
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check . 2>&1 | grep -v "^WARNING: Location" || true
cd "$(mktemp -d)"  # away from the source tree, so the installed package is what runs
for module in torch transformers; do
    if "$VENV/bin/python" -c "import $module" 2>/dev/null; then
        echo "runtime-only check: $module is importable in $VENV" >&2; exit 1
    fi
done
"$VENV/bin/nlpforge" predict "$EXPORT" "a wonderful, moving film" "cold food and rude staff" > predict.out
lines=$(wc -l < predict.out)
[ "$lines" -eq 2 ] || { echo "runtime-only check: expected 2 predictions, got $lines" >&2; exit 1; }
"$VENV/bin/python" - "$EXPORT" <<'PY'
import sys
import nlpforge
predictor = nlpforge.load(sys.argv[1])
out = predictor.predict(["great", "terrible"])
assert len(out) == 2 and all("label" in p for p in out), out
assert "torch" not in sys.modules
print("runtime-only check passed: base install, no torch;", predictor.providers)
PY
