#!/usr/bin/env bash
# The released model's last stage (scripts/model_recipe.sh runs it after training; issue 27):
# the final checkpoint's SavedModel -> RELEASE_DIR (models/face_small) with its fold-10 report,
# model.onnx and model_int8.tflite, and every figure of its model card:
#   1. the student from the raw LFW-a frames, as a user runs it (export.embed --align --pairs);
#   2. the teacher on the same pairs by the same protocol (scripts/teacher_pairs.py);
#   3. ONNX and int8 TFLite: parity and accuracy against the SavedModel (export.convert);
#   4. speed: the student against the dlib teacher, batch 1, one process, side by side
#      (benchmarks/student_vs_teacher.py).
#
#   scripts/model_release.sh RUN_DIR SPLIT_DIR FRAMES_DIR [RELEASE_DIR]
#
# The final checkpoint is released (exported by estimator_main.py --mode=export), never the best
# on fold 10 (that would pick on the holdout).
# Figures land in SPLIT_DIR/release/ (reports, formats.txt, speed.json); the release is staged
# in RELEASE_DIR.staging and moved in whole, so an interrupted run leaves the old release.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=$1 SPLIT=$2 FRAMES=$3 RELEASE=${4:-models/face_small}
PY=${PYTHON:-.venv/bin/python}
FOLD=${HOLDOUT_FOLD:-10}
FIGURES=$SPLIT/release
mkdir -p "$FIGURES"

echo "== export the final checkpoint (estimator_main.py --mode=export ${EXPORT_FLAGS:-})"
# EXPORT_FLAGS: export-time settings a run recorded before they existed (e.g. --grayscale).
# shellcheck disable=SC2086
"$PY" estimator_main.py --mode=export --model_dir="$RUN" ${EXPORT_FLAGS:-}
latest=$(ls -d "$RUN"/export/manual/*/ | sort | tail -1)
latest=${latest%/}
echo "== release $latest -> $RELEASE"
STAGE=$RELEASE.staging
rm -rf "$STAGE"
mkdir -p "$STAGE"
cp -r "$latest/saved_model.pb" "$latest/variables" "$latest/assets.extra" "$STAGE/"
# The model card is written by hand from the figures below: kept across re-releases.
[ -f "$RELEASE/MODEL_CARD.md" ] && cp "$RELEASE/MODEL_CARD.md" "$STAGE/"

echo "== the student on fold $FOLD from the raw frames (export.embed --align --pairs)"
"$PY" -m export.embed --model "$STAGE" --align --pairs "$SPLIT/pairs.txt" \
    --image_dir "$FRAMES" --report_dir "$FIGURES/student_raw_frames"
# The two-image mode's threshold and the service's FAR thresholds read this report.
cp "$FIGURES/student_raw_frames/report.json" "$STAGE/assets.extra/report.json"

if [ ! -f "$FIGURES/teacher_raw_frames/report.json" ]; then
    echo "== the dlib teacher on the same pairs (scripts/teacher_pairs.py)"
    "$PY" scripts/teacher_pairs.py --teacher=dlib --pairs="$SPLIT/pairs.txt" \
        --image_dir="$FRAMES" --report_dir="$FIGURES/teacher_raw_frames"
fi

echo "== ONNX and int8 TFLite, checked against the SavedModel on the aligned fold-$FOLD pairs"
"$PY" -m export.convert --model="$STAGE" --onnx="$STAGE/model.onnx" \
    --tflite="$STAGE/model_int8.tflite" --quantize=int8 \
    --calibration_records="$SPLIT/records_distill/train" \
    --check_records="$SPLIT/records_distill/pairs" | tee "$FIGURES/formats.txt"

echo "== speed against the dlib teacher (batch 1, one process)"
"$PY" -m benchmarks.student_vs_teacher --model "$STAGE" \
    --photos "$FRAMES/$(ls "$FRAMES" | head -1)" --rounds 7 | tee "$FIGURES/speed.json"

rm -rf "$RELEASE.previous"
[ -d "$RELEASE" ] && mv "$RELEASE" "$RELEASE.previous"
mv "$STAGE" "$RELEASE"
rm -rf "$RELEASE.previous"
du -sh "$RELEASE"
echo "== released $RELEASE (figures in $FIGURES)"
