#!/usr/bin/env bash
# The fold-holdout recipe on real LFW-a (README: "Real faces"):
#   LFW-a archive -> identities outside the held-out fold (>= 2 images) + the fold's 600 pairs
#   -> face-crop TFRecords -> train_and_evaluate with configs/lfw_holdout.flags -> report.
#
#   scripts/lfw_recipe.sh [OUT] [estimator_main flags...]     (make lfw-recipe)
#
# Environment: LFW_DATA (folder with lfw_a_gray250.tar.gz and lfw_pairs.txt; ../shared/data),
# HOLDOUT_FOLD (10; tune with 9 so that fold 10 stays a test), RUN_NAME (model folder name,
# circle), FLAGFILE (configs/lfw_holdout.flags), PREPARE_ONLY=1 (stop after the records),
# SKIP_PREPARE=1 (records already made), ALIGN=1 (5-point aligned faces from the face detector
# instead of the crop box, records in records_aligned/; MIN_FACE_SIZE, 60 px, speeds up the
# detector on LFW-a's 250x250 frames). Extra flags override the flagfile, e.g.
# `scripts/lfw_recipe.sh lfw_output --head=arcface --seed=1` with RUN_NAME=arcface-s1.
# Every step resumes: re-running reuses the extracted images, the records and the checkpoints.
# Nothing here is written inside the repository except under OUT (git-ignored by default).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-lfw_output}
shift || true
PY=${PYTHON:-.venv/bin/python}
FOLD=${HOLDOUT_FOLD:-10}
RUN=${RUN_NAME:-circle}
FLAGFILE=${FLAGFILE:-configs/lfw_holdout.flags}
# shellcheck source=scripts/lfw_data.sh
. scripts/lfw_data.sh
# LFW-a faces are warped into the centre of 250x250 frames with black borders: keep the face.
CROP=(--crop_box=70,60,180,190 --image_size=112)
RECORDS=records
PAIRS_OPTIONS=()
if [ "${ALIGN:-0}" = 1 ]; then
    # MTCNN's five points onto the 112x112 template (README "Raw photos"); a frame without a
    # detected face is left out of training, and a pair with one is left out of the test.
    CROP=(--align --min_face_size="${MIN_FACE_SIZE:-60}" --image_size=112)
    RECORDS=records_aligned
    PAIRS_OPTIONS=(--allow_missing_pairs)
fi

require_lfw_data
SPLIT=$OUT/fold$FOLD

prepare() {
    extract_lfw

    echo "== fold-$FOLD holdout split -> $SPLIT"
    "$PY" -m data_tools.lfw_holdout --lfw_dir="$OUT/lfw_gray250" --pairs="$PAIRS" \
        --holdout_folds="$FOLD" --output_dir="$SPLIT"

    echo "== TFRecords (${CROP[*]}) -> $SPLIT/$RECORDS"
    "$PY" data_tools/make_tfrecords.py --input_dir="$SPLIT/train" \
        --output_dir="$SPLIT/$RECORDS/train" "${CROP[@]}"
    "$PY" data_tools/make_tfrecords.py --pairs="$SPLIT/pairs.txt" \
        --input_dir="$OUT/lfw_gray250" --output_dir="$SPLIT/$RECORDS/pairs" "${CROP[@]}" \
        ${PAIRS_OPTIONS[@]+"${PAIRS_OPTIONS[@]}"}
}

[ "${SKIP_PREPARE:-0}" = 1 ] || prepare
[ "${PREPARE_ONLY:-0}" = 1 ] && exit 0

MODEL=$SPLIT/models/$RUN
echo "== train_and_evaluate ($FLAGFILE $*) -> $MODEL"
"$PY" estimator_main.py --flagfile="$FLAGFILE" --train_records="$SPLIT/$RECORDS/train" \
    --eval_records="$SPLIT/$RECORDS/pairs" --model_dir="$MODEL" "$@"

echo "== fold $FOLD, final checkpoint"
"$PY" -m evaluation.compare_reports "$MODEL"
