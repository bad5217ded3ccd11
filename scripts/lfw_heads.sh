#!/usr/bin/env bash
# The head comparison on the fold-holdout protocol (README "Real faces", make lfw-heads): the
# recipe of configs/lfw_holdout.flags once per head and seed, then one table of the results.
#
#   scripts/lfw_heads.sh [OUT] [estimator_main flags for every run...]
#
# Environment: HEADS (the six original heads, and circle+pk: the class-level head on P×K
# batches, which separates the effect of the sampling from that of the pair-level loss; the
# margin heads adaface, subcenter_arcface and magface run when named, e.g.
# HEADS="adaface subcenter_arcface magface arcface" SEEDS="0 1" STEPS=200, docs/HEADS.md), SEEDS ("0"), STEPS (2000: the comparison's budget, a third of
# the recipe's 6,000 steps, so that six heads fit in an hour here), JOBS (1; 2 runs two heads
# at a time with one thread each, which keeps both cores busier than one run with two threads),
# plus lfw_recipe.sh's LFW_DATA and HOLDOUT_FOLD. The pair-level heads need P×K batches
# (--images_per_identity=4); the class-level ones keep the recipe's plain shuffling. Every head
# takes the flagfile's --margin=0.25 (cosface's and arcface's usual 0.35 and 0.5: e.g.
# TAG=m0.5 HEADS=arcface scripts/lfw_heads.sh lfw_output --margin=0.5; TAG names the runs
# apart, so they do not resume the m = 0.25 ones).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-lfw_output}
shift || true
PY=${PYTHON:-.venv/bin/python}
HEADS=${HEADS:-circle circle+pk circle_pair circle_combined arcface cosface softmax}
SEEDS=${SEEDS:-0}
STEPS=${STEPS:-2000}
JOBS=${JOBS:-1}
FOLD=${HOLDOUT_FOLD:-10}
LOGS=$OUT/fold$FOLD/logs
mkdir -p "$LOGS"

# Data once, before any parallel run (the converter refuses two writers on one directory).
PREPARE_ONLY=1 bash scripts/lfw_recipe.sh "$OUT"

threads=()
[ "$JOBS" -gt 1 ] && threads=(--intra_op_threads=1 --inter_op_threads=1)
runs=()
for spec in $HEADS; do
    head=${spec%+pk}
    for seed in $SEEDS; do
        name=${spec/+/_}${TAG:+-$TAG}-s$seed-$STEPS
        runs+=("$OUT/fold$FOLD/models/$name")
        extra=()
        case $spec in circle_pair|circle_combined|*+pk) extra=(--images_per_identity=4) ;; esac
        echo "== $name (log: $LOGS/$name.log)"
        RUN_NAME=$name SKIP_PREPARE=1 bash scripts/lfw_recipe.sh "$OUT" --head="$head" \
            --seed="$seed" --train_steps="$STEPS" --save_checkpoints_steps="$STEPS" \
            --noprogress --verbosity=-1 "${threads[@]}" "${extra[@]}" "$@" \
            > "$LOGS/$name.log" 2>&1 &
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
    done
done
wait
"$PY" -m evaluation.compare_reports "${runs[@]}" --copy_reports="$OUT/fold$FOLD/reports"
