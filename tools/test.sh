#!/usr/bin/env bash
# Set up and run the tests: the embedding check (runtime-only install, no torch) first, then
# pytest. Extra arguments go to pytest, e.g. tools/test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/setup.sh
mkdir -p build
python tools/make_tiny_export.py build/ci-export
bash tools/check_runtime_only.sh build/ci-export
set +e
python -m pytest "$@"
status=$?
set -e
[ "$status" -eq 5 ] && { echo "no tests ran" >&2; exit 1; }
[ "$status" -ne 0 ] && exit "$status"
# The architecture matrix beyond its fast subset (docs/architectures.md), in its own
# time-boxed step; NLPFORGE_MATRIX=0 leaves it out, and it is skipped when pytest was given
# arguments (a targeted run).
if [ $# -eq 0 ] && [ "${NLPFORGE_MATRIX:-1}" != "0" ]; then
    set +e
    timeout "${NLPFORGE_MATRIX_TIMEOUT:-2700}" python -m pytest -m matrix -q \
        tests/test_encoder_matrix.py tests/test_decoder_matrix.py tests/test_seq2seq_matrix.py
    status=$?
    set -e
    [ "$status" -eq 124 ] && echo "the architecture matrix ran past its time box" >&2
fi
exit "$status"
