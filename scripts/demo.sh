#!/usr/bin/env bash
# The whole pipeline on the embedded synthetic dataset (make demo):
#   synthetic faces -> TFRecords (train + pairs) -> train_and_evaluate (tiny backbone, Circle
#   loss) -> best SavedModel + frozen .pb + verification report -> embed/verify two faces.
# Re-running resumes: the dataset and records are reused, training continues from its checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-demo_output}
PY=${PYTHON:-.venv/bin/python}
STEPS=${DEMO_STEPS:-1200}

echo "== 1/4 synthetic faces -> $OUT/synthetic"
"$PY" -m data_tools.synthetic --output_dir="$OUT/synthetic"

echo "== 2/4 TFRecords -> $OUT/records"
"$PY" data_tools/make_tfrecords.py --input_dir="$OUT/synthetic/train" \
    --output_dir="$OUT/records/train"
"$PY" data_tools/make_tfrecords.py --pairs="$OUT/synthetic/pairs.txt" \
    --input_dir="$OUT/synthetic/lfw" --output_dir="$OUT/records/pairs"

echo "== 3/4 train_and_evaluate ($STEPS steps, tiny backbone, Circle loss) -> $OUT/model"
"$PY" estimator_main.py --flagfile=configs/demo.flags \
    --train_records="$OUT/records/train" --eval_records="$OUT/records/pairs" \
    --model_dir="$OUT/model" --train_steps="$STEPS"

echo "== 4/4 serve: embed and verify two faces with the best SavedModel"
first=$(ls "$OUT/synthetic/lfw" | head -1)
second=$(ls "$OUT/synthetic/lfw" | sed -n 2p)
"$PY" -m export.embed --model="$OUT/model/export/best" \
    "$OUT/synthetic/lfw/$first/${first}_0001.jpg" "$OUT/synthetic/lfw/$first/${first}_0002.jpg"
"$PY" -m export.embed --model="$OUT/model/export/best" \
    "$OUT/synthetic/lfw/$first/${first}_0001.jpg" "$OUT/synthetic/lfw/$second/${second}_0001.jpg"

echo
echo "Report: $OUT/model/eval/report.json and roc.png; TensorBoard: tensorboard --logdir=$OUT/model"
