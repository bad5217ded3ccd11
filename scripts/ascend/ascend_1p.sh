# Shared body of the Ascend ModelZoo launchers (sourced, not run): train_full_1p.sh and
# train_performance_1p.sh set KIND (full | perf) and call ascend_1p_main "$@".
#
# Both are thin wrappers over estimator_main.py starting from configs/ascend_seed.flags:
# --data_path is the ModelArts-style root (--data_url: train/ and pairs/ record directories),
# --output_path the root of everything the run writes:
#
#   <output_path>/<CaseName>/                 model_dir (checkpoints, eval/report.json, exports)
#   <output_path>/<CaseName>.flags            the seed flagfile as used (run length lines removed
#                                             when --train_steps/--train_epochs are given)
#   <output_path>/train_<CaseName>.log        everything estimator_main.py printed
#   <output_path>/train_<CaseName>_loss.txt   the logged total losses, one a line
#   <output_path>/<CaseName>.log              the summary the ModelZoo CI parses (key = value)
#
# CaseName is ModelZoo's <Network>_bs<BatchSize>_<RankSize>p_<acc|perf>.

ASCEND_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$ASCEND_DIR/../.." && pwd)
SEED_FLAGS=$REPO_ROOT/configs/ascend_seed.flags
PRECISION_MODES="allow_mix_precision allow_fp32_to_fp16 force_fp16 must_keep_origin_dtype"
# Set by the launcher options or derived from them: passing them after -- would make the
# summary describe another run than the one made.
RESERVED="batch_size train_steps train_epochs device npu_precision_mode mode model_dir data_url
train_url train_records eval_records"

ascend_1p_usage() {
    local name what steps
    name=$(basename "$0")
    if [ "$KIND" = full ]; then
        what="Accuracy run: train_and_evaluate from configs/ascend_seed.flags (iresnet50, Circle
loss, batch 30, 20 epochs), ending with the LFW-style verification of the final checkpoint."
        steps="default: the flagfile's 20 epochs"
    else
        what="Performance run: a short --mode=train from configs/ascend_seed.flags that measures
training speed (examples/sec every 100 steps); no evaluation."
        steps="default: 1000"
    fi
    cat <<EOF
usage: $name --data_path=DIR [--output_path=DIR] [options] [-- estimator_main flags]

$what

  --data_path=DIR        dataset root holding train/ and pairs/ (make_tfrecords.py output);
                         passed as --data_url (required)
  --output_path=DIR      model_dir and logs go under it (default: ./output)
  --precision_mode=MODE  Ascend precision_mode (--npu_precision_mode; npu only):
                         allow_mix_precision (default), allow_fp32_to_fp16, force_fp16,
                         must_keep_origin_dtype
  --train_steps=N        training steps ($steps)
  --train_epochs=E       or epochs over train/; with either, the seed's 10,000 warm-up steps
                         become 2% of the run (or --warmup_steps=N after --)
  --batch_size=N         batch per device (default: the flagfile's 30)
  --device=DEV           npu (default), cpu or gpu
  -h, --help             this text

Flags after -- go to estimator_main.py unchanged, after the flagfile, e.g.
  $name --data_path=/data/faces --device=cpu --train_steps=50 \\
      -- --backbone=tiny --image_size=32

Environment: PYTHON (default .venv/bin/python, else python3), ASCEND_DEVICE_ID (0), NETWORK
(CircleLoss_for_TensorFlow). RANK_SIZE=1 and RANK_ID=0 are set: one device.
Summary: <output_path>/<CaseName>.log with Network, RankSize, BatchSize, DeviceType, CaseName,
ActualFPS (examples/sec), TrainingTime (ms per step = BatchSize*1000/ActualFPS),
TrainAccuracy (LFW accuracy; None for performance runs), ActualLoss (loss of the final step),
E2ETrainingTime (wall seconds).
EOF
}

ascend_1p_fail() {
    echo "$(basename "$0"): error: $*" >&2
    exit 2
}

_is_count() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }
_is_number() { [[ $1 =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]] && [[ ! $1 =~ ^[0.]+$ ]]; }

ascend_1p_main() {
    local data_path="" output_path=output precision_mode=allow_mix_precision device=npu
    local train_steps="" train_epochs="" batch_size="" arg value name
    local -a extra=()
    while [ $# -gt 0 ]; do
        arg=$1
        shift
        case $arg in
            -h|--help) ascend_1p_usage; exit 0 ;;
            --) extra=("$@"); break ;;
            --*=*) value=${arg#*=} ;;
            *) value="" ;;
        esac
        case $arg in
            --data_path=*) data_path=$value ;;
            --output_path=*) output_path=$value ;;
            --precision_mode=*) precision_mode=$value ;;
            --train_steps=*) train_steps=$value ;;
            --train_epochs=*) train_epochs=$value ;;
            --batch_size=*) batch_size=$value ;;
            --device=*) device=$value ;;
            --data_path|--output_path|--precision_mode|--train_steps|--train_epochs|--batch_size)
                ascend_1p_fail "$arg needs a value: $arg=VALUE" ;;
            --device) ascend_1p_fail "$arg needs a value: $arg=VALUE" ;;
            *) ascend_1p_fail "unknown option '${arg%%=*}' (-h lists the options)" ;;
        esac
    done
    for arg in ${extra[@]+"${extra[@]}"}; do
        name=${arg#--}
        name=${name#no}
        name=${name%%=*}
        for value in $RESERVED; do
            if [ "$name" = "$value" ] && [[ $arg == --* ]]; then
                ascend_1p_fail "${arg%%=*} after -- is set by this launcher; use its own options" \
                    "(-h)"
            fi
        done
    done
    [ -n "$data_path" ] || ascend_1p_fail "--data_path=DIR is required (-h for usage)"
    if [[ $data_path != *://* ]]; then  # object stores (obs://, s3://): estimator_main checks
        [ -d "$data_path/train" ] || ascend_1p_fail "--data_path=$data_path has no train/" \
            "directory (the records of make_tfrecords.py)"
        if [ "$KIND" = full ] && [ ! -d "$data_path/pairs" ]; then
            ascend_1p_fail "--data_path=$data_path has no pairs/ directory (the pair records of" \
                "make_tfrecords.py --pairs), needed for the final evaluation"
        fi
    fi
    [[ " $PRECISION_MODES " == *" $precision_mode "* ]] || ascend_1p_fail \
        "--precision_mode=$precision_mode is not one of: $PRECISION_MODES"
    case $device in npu|cpu|gpu) ;; *) ascend_1p_fail "--device=$device: use npu, cpu or gpu" ;; esac
    [ -z "$train_steps" ] || _is_count "$train_steps" || ascend_1p_fail \
        "--train_steps=$train_steps is not a positive integer"
    [ -z "$train_epochs" ] || _is_number "$train_epochs" || ascend_1p_fail \
        "--train_epochs=$train_epochs is not a positive number"
    [ -z "$train_steps" ] || [ -z "$train_epochs" ] || ascend_1p_fail \
        "give --train_steps or --train_epochs, not both"
    [ -z "$batch_size" ] || _is_count "$batch_size" || ascend_1p_fail \
        "--batch_size=$batch_size is not a positive integer"
    if [ "$KIND" = perf ] && [ -z "$train_steps$train_epochs" ]; then
        train_steps=1000
    fi
    if [ -z "$batch_size" ]; then
        batch_size=$(sed -n 's/^--batch_size=\([0-9]*\)$/\1/p' "$SEED_FLAGS" | tail -1)
    fi

    local py=${PYTHON:-}
    if [ -z "$py" ]; then
        if [ -x "$REPO_ROOT/.venv/bin/python" ]; then py=$REPO_ROOT/.venv/bin/python; else py=python3; fi
    fi
    export RANK_SIZE=1 RANK_ID=0
    export ASCEND_DEVICE_ID=${ASCEND_DEVICE_ID:-0}
    export DEVICE_ID=$ASCEND_DEVICE_ID
    local network=${NETWORK:-CircleLoss_for_TensorFlow}
    local suffix=acc mode=train_and_evaluate
    if [ "$KIND" = perf ]; then suffix=perf; mode=train; fi
    local case_name=${network}_bs${batch_size}_${RANK_SIZE}p_${suffix}
    mkdir -p "$output_path"
    output_path=$(cd "$output_path" && pwd)
    local model_dir=$output_path/$case_name
    local flagfile=$output_path/$case_name.flags
    local log=$output_path/train_$case_name.log
    local summary=$output_path/$case_name.log

    if [ "$KIND" = perf ] && [ -e "$model_dir" ]; then
        # A speed measurement starts from step 0: a checkpoint would be resumed (or finished).
        if [ -f "$model_dir/params.json" ]; then
            rm -rf "$model_dir"
        elif [ -n "$(ls -A "$model_dir")" ]; then
            ascend_1p_fail "$model_dir exists and is not a run of this launcher; move it away"
        fi
    fi
    if [ -n "$train_steps$train_epochs" ]; then
        # The seed's 20 epochs and its 10,000 warm-up steps belong to the seed's run length.
        grep -v -E '^--(train_steps|train_epochs|warmup_steps)=' "$SEED_FLAGS" > "$flagfile"
    else
        cp "$SEED_FLAGS" "$flagfile"
    fi
    local -a args=("--flagfile=$flagfile" "--mode=$mode" "--data_url=$data_path"
                   "--model_dir=$model_dir" "--device=$device" "--batch_size=$batch_size"
                   "--noprogress" "--verbosity=0")  # the log's loss and examples/sec lines
    [ -z "$train_steps" ] || args+=("--train_steps=$train_steps")
    [ -z "$train_epochs" ] || args+=("--train_epochs=$train_epochs")
    if [ "$device" = npu ]; then
        args+=("--npu_precision_mode=$precision_mode")
    elif [ "$precision_mode" != allow_mix_precision ]; then
        echo "$(basename "$0"): note: --precision_mode applies to --device=npu only" >&2
    fi
    [ "$KIND" = full ] || args+=("--log_every_n_steps=100")

    echo "== $case_name: $py estimator_main.py ${args[*]} ${extra[*]+${extra[*]}}"
    echo "== log: $log"
    local start end status
    start=$(date +%s)
    set +e
    "$py" "$REPO_ROOT/estimator_main.py" "${args[@]}" ${extra[@]+"${extra[@]}"} 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    set -e
    end=$(date +%s)
    if [ "$status" -ne 0 ]; then
        echo "$(basename "$0"): error: estimator_main.py failed (exit $status); see $log" >&2
        exit "$status"
    fi
    local -a with_accuracy=()
    [ "$KIND" = perf ] || with_accuracy=(--with_accuracy)
    "$py" "$ASCEND_DIR/summarize.py" --log="$log" --model_dir="$model_dir" --output="$summary" \
        --loss_file="$output_path/train_${case_name}_loss.txt" --network="$network" \
        --rank_size="$RANK_SIZE" --batch_size="$batch_size" --device_type="$(uname -m)" \
        --case_name="$case_name" --e2e_seconds=$((end - start)) \
        ${with_accuracy[@]+"${with_accuracy[@]}"}
    echo "------------------ Final result ------------------"
    cat "$summary"
    echo "== summary: $summary"
}
