#!/usr/bin/env bash
# The released small model (issue 27, "face_small"), reproduced from the LFW-a archive:
#   LFW-a -> identities outside fold 10 (every identity, one-image people included: the teacher
#   labels them too) -> 5-point aligned records (data_tools.alignment's detector) with dlib's
#   embedding of each raw frame and of its mirror image (--teacher=dlib --teacher_flip) -> a
#   small student trained with Circle + the distillation term (configs/face_small.flags) -> the
#   fold-10 report, on aligned test pairs.
#
#   scripts/model_recipe.sh [OUT] [estimator_main flags...]     (make model)
#
# Environment: LFW_DATA (folder with lfw_a_gray250.tar.gz and lfw_pairs.txt; ../shared/data),
# HOLDOUT_FOLD (10), RUN_NAME (face_small), FLAGFILE (configs/face_small.flags),
# MIN_FACE_SIZE (60 px: LFW-a's faces fill its 250x250 frames), PREPARE_ONLY=1 (stop after the
# records), SKIP_PREPARE=1 (records already made), RELEASE=0 (stop after training; else
# scripts/model_release.sh exports, converts, measures and releases into RELEASE_DIR,
# models/face_small by default), TEACHER_CACHE (a directory holding the
# .teacher-*.jsonl of an earlier dlib conversion of the same frames, e.g. a teacher-only run of
# make_tfrecords.py --teacher=dlib: its vectors are reused, keyed by each frame's sha256).
# Extra flags override the flagfile.
# Every step resumes and shows its progress: the extraction is kept, the alignment report and
# the teacher's cache make a killed conversion pick up where it stopped, training resumes from
# its last checkpoint. Nothing is written inside the repository except under OUT and the
# release directory.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-model_output}
shift || true
PY=${PYTHON:-.venv/bin/python}
FOLD=${HOLDOUT_FOLD:-10}
RUN=${RUN_NAME:-face_small}
FLAGFILE=${FLAGFILE:-configs/face_small.flags}
# shellcheck source=scripts/lfw_data.sh
. scripts/lfw_data.sh
ALIGN=(--align --min_face_size="${MIN_FACE_SIZE:-60}" --image_size=112)

require_lfw_data
SPLIT=$OUT/fold$FOLD

prepare() {
    extract_lfw

    echo "== fold-$FOLD holdout split (every identity outside it) -> $SPLIT"
    "$PY" -m data_tools.lfw_holdout --lfw_dir="$OUT/lfw_gray250" --pairs="$PAIRS" \
        --holdout_folds="$FOLD" --min_images=1 --output_dir="$SPLIT"

    if [ -n "${TEACHER_CACHE:-}" ]; then
        mkdir -p "$SPLIT/records_distill/train"
        for cache in "$TEACHER_CACHE"/.teacher-*.jsonl; do
            [ -e "$cache" ] || continue
            target=$SPLIT/records_distill/train/$(basename "$cache")
            [ -e "$target" ] || { echo "== reuse $cache"; cp "$cache" "$target"; }
        done
    fi
    echo "== aligned training records with dlib's embedding of each raw frame -> $SPLIT/records_distill"
    # --teacher_flip: dlib's vector of the mirrored frame too, the target of an input the
    # training flips (fold 9: 0.938 -> 0.947 in-run, VAL@1e-3 0.58 -> 0.69; docs/DISTILLATION.md).
    "$PY" data_tools/make_tfrecords.py --input_dir="$SPLIT/train" \
        --output_dir="$SPLIT/records_distill/train" "${ALIGN[@]}" --teacher=dlib --teacher_flip
    echo "== aligned fold-$FOLD pairs -> $SPLIT/records_distill/pairs"
    # A frame where the detector finds no face drops its pair, not the whole test; the report
    # counts them (embed --align, the released model's own route, falls back to the frame).
    "$PY" data_tools/make_tfrecords.py --pairs="$SPLIT/pairs.txt" \
        --input_dir="$OUT/lfw_gray250" --output_dir="$SPLIT/records_distill/pairs" \
        "${ALIGN[@]}" --allow_missing_pairs
}

[ "${SKIP_PREPARE:-0}" = 1 ] || prepare
[ "${PREPARE_ONLY:-0}" = 1 ] && exit 0

MODEL=$SPLIT/models/$RUN
echo "== train_and_evaluate ($FLAGFILE $*) -> $MODEL"
"$PY" estimator_main.py --flagfile="$FLAGFILE" --train_records="$SPLIT/records_distill/train" \
    --eval_records="$SPLIT/records_distill/pairs" --model_dir="$MODEL" "$@"

echo "== fold $FOLD, final checkpoint"
"$PY" -m evaluation.compare_reports "$MODEL"

[ "${RELEASE:-1}" = 1 ] || exit 0
bash scripts/model_release.sh "$MODEL" "$SPLIT" "$OUT/lfw_gray250" \
    "${RELEASE_DIR:-models/face_small}"
