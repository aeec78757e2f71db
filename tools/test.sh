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
exit "$status"
