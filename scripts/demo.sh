#!/usr/bin/env bash
# The whole pipeline on the embedded synthetic dataset (make demo):
#   synthetic faces -> TFRecords (train + pairs) -> train_and_evaluate (tiny backbone, Circle
#   loss, LFW-style evaluation at mid-training and at the end) -> best SavedModel + frozen .pb +
#   verification report -> embed/verify two faces.
# Re-running resumes: the dataset and records are reused, training continues from its checkpoint.
# Independent steps run side by side (the two conversions, the two verifications): each is
# mostly one Python process importing TensorFlow, so two of them fill the two cores of a small
# VM. The stage times are printed at the end (docs/PERFORMANCE.md, "make demo").
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-demo_output}
PY=${PYTHON:-.venv/bin/python}
STEPS=${DEMO_STEPS:-1400}
# Two evaluation rounds: one half-way (the best exporter's first candidate), one at the end.
EVAL_EVERY=$(( STEPS / 2 > 0 ? STEPS / 2 : 1 ))
LOGS="$OUT/logs"
mkdir -p "$LOGS"

now() { echo "${EPOCHREALTIME:-$SECONDS}"; }
STARTED=$(now)
STAGE_START=$STARTED
TIMES=""
# end_stage NAME: record the seconds since the previous stage ended.
end_stage() {
    local t
    t=$(now)
    TIMES="$TIMES$(awk -v a="$STAGE_START" -v b="$t" -v n="$1" 'BEGIN { printf "%s %.1f s; ", n, b - a }')"
    STAGE_START=$t
}

# side_by_side LOG1 LOG2 -- CMD1... -- CMD2...: run two commands at once, the first in the
# background; print each one's output in order once both are done; fail if either failed.
side_by_side() {
    local log1=$1 log2=$2 rc1=0 rc2=0 pid
    shift 3
    local -a first=() second=()
    while [ "$1" != "--" ]; do first+=("$1"); shift; done
    shift
    second=("$@")
    "${first[@]}" > "$log1" 2>&1 &
    pid=$!
    "${second[@]}" > "$log2" 2>&1 || rc2=$?
    wait "$pid" || rc1=$?
    cat "$log1" "$log2"
    if [ "$rc1" != 0 ]; then echo "failed (exit $rc1): ${first[*]}" >&2; exit "$rc1"; fi
    if [ "$rc2" != 0 ]; then echo "failed (exit $rc2): ${second[*]}" >&2; exit "$rc2"; fi
}

echo "== 1/4 synthetic faces -> $OUT/synthetic"
"$PY" -m data_tools.synthetic --output_dir="$OUT/synthetic"
end_stage "1/4 faces"

echo "== 2/4 TFRecords -> $OUT/records (train and pairs side by side)"
side_by_side "$LOGS/records_train.log" "$LOGS/records_pairs.log" -- \
    "$PY" data_tools/make_tfrecords.py --input_dir="$OUT/synthetic/train" \
        --output_dir="$OUT/records/train" -- \
    "$PY" data_tools/make_tfrecords.py --pairs="$OUT/synthetic/pairs.txt" \
        --input_dir="$OUT/synthetic/lfw" --output_dir="$OUT/records/pairs"
end_stage "2/4 records"

echo "== 3/4 train_and_evaluate ($STEPS steps, tiny backbone, Circle loss, evaluation every" \
    "$EVAL_EVERY steps) -> $OUT/model"
"$PY" estimator_main.py --flagfile=configs/demo.flags \
    --train_records="$OUT/records/train" --eval_records="$OUT/records/pairs" \
    --model_dir="$OUT/model" --train_steps="$STEPS" --save_checkpoints_steps="$EVAL_EVERY"
end_stage "3/4 train_and_evaluate"

echo "== 4/4 serve: embed and verify two faces with the best SavedModel"
first=$(ls "$OUT/synthetic/lfw" | head -1)
second=$(ls "$OUT/synthetic/lfw" | sed -n 2p)
side_by_side "$LOGS/verify_same.log" "$LOGS/verify_other.log" -- \
    "$PY" -m export.embed --model="$OUT/model/export/best" \
        "$OUT/synthetic/lfw/$first/${first}_0001.jpg" \
        "$OUT/synthetic/lfw/$first/${first}_0002.jpg" -- \
    "$PY" -m export.embed --model="$OUT/model/export/best" \
        "$OUT/synthetic/lfw/$first/${first}_0001.jpg" \
        "$OUT/synthetic/lfw/$second/${second}_0001.jpg"
end_stage "4/4 serve"

echo
echo "Report: $OUT/model/eval/report.json and roc.png; TensorBoard: tensorboard --logdir=$OUT/model"
echo "Stage times: ${TIMES}total $(awk -v a="$STARTED" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }')"
