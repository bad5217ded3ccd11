"""Train, evaluate and export Circle-loss face embeddings with tf.estimator.

    python estimator_main.py --mode=train_and_evaluate \\
        --train_records=records/train --eval_records=records/pairs --model_dir=runs/r50

Modes: ``train``, ``evaluate`` (LFW-style verification of a checkpoint: eval/report.json and
eval/roc.png), ``train_and_evaluate`` (train, evaluate on new checkpoints, export the best model
by verification accuracy and the latest), ``export`` (checkpoint -> SavedModel + frozen .pb).

This file is the command line only, built like every program of the project (``cli``): flags
(shared ones from ``cli/flag_groups.py``) -> one validated params dict (``training/params.py``)
-> the run record (``training/run_record.py``) -> mode dispatch (``training/runner.py``) -> a
failure told in one line (the types of ``training/failures.py``). It talks to ``training/``
only; the model never reads flags.
"""

import functools
import os
import sys

if __package__ in (None, ""):  # `python estimator_main.py` from anywhere
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cli  # noqa: E402

cli.quiet_tensorflow()  # before training/ imports TensorFlow

from absl import app, flags, logging  # noqa: E402

from cli import flag_groups  # noqa: E402
from training import choices, console, failures, run_record, runner  # noqa: E402
from training.params import build_params  # noqa: E402

FLAGS = flags.FLAGS


def define_flags(fv=flags.FLAGS):
    """Define this program's flags on ``fv`` (absl's global FLAGS by default); idempotent."""
    if "mode" in fv:
        return fv
    bool_flag = functools.partial(flags.DEFINE_bool, flag_values=fv)
    enum_flag = functools.partial(flags.DEFINE_enum, flag_values=fv)
    float_flag = functools.partial(flags.DEFINE_float, flag_values=fv)
    integer_flag = functools.partial(flags.DEFINE_integer, flag_values=fv)
    list_flag = functools.partial(flags.DEFINE_list, flag_values=fv)
    string_flag = functools.partial(flags.DEFINE_string, flag_values=fv)
    # Data and output.
    enum_flag("mode", "train_and_evaluate", choices.MODES, "What to run.")
    string_flag("model_dir", None, "Checkpoints, summaries, exports and reports go here; "
                "an existing checkpoint is resumed.")
    string_flag("train_records", None, "Directory of training image records "
                "(make_tfrecords.py output, with manifest.json).")
    string_flag("eval_records", None, "Directory of verification pair records "
                "(make_tfrecords.py --pairs output), or several named sets evaluated at every "
                "checkpoint: lfw=records/lfw,cfp_fp=records/cfp_fp (metrics NAME/accuracy, ...; "
                "a plain directory is the set 'lfw').")
    string_flag("data_url", None, "ModelArts-style dataset root: train_records defaults to "
                "DATA_URL/train and eval_records to DATA_URL/pairs.")
    string_flag("train_url", None, "ModelArts-style output location: model_dir defaults to it.")
    # Network and head.
    enum_flag("backbone", "iresnet50", choices.BACKBONES, "Backbone network.")
    enum_flag("head", "circle", choices.head_names(), "Loss head (none: the "
              "distillation term alone, --distill_weight > 0).")
    integer_flag("embedding_size", 512, "Embedding dimension.")
    flag_groups.define_image_size(fv, "the network's input. Default: the backbone's (112).")
    float_flag("dropout_rate", 0.0, "Dropout before the embedding layer (iresnet).")
    float_flag("margin", None, "Margin m; default: the head's own "
               f"({choices.MARGIN_DEFAULTS}).")
    float_flag("gamma", None, f"Circle scale gamma ({choices.GAMMA_DEFAULTS}; the "
               "paper's face setting).")
    float_flag("scale", 64.0, f"Scale s of the {choices.SCALE_USERS} heads.")
    float_flag("class_weight", 1.0, "circle_combined: weight of the class-level loss.")
    float_flag("pair_weight", 1.0, "circle_combined: weight of the pair-level loss.")
    define_head_option_flags(fv)
    integer_flag("images_per_identity", 0, "K of P×K batches (0: plain shuffling). "
                 "Needed by circle_pair and circle_combined.")
    float_flag("distill_weight", 0.0, "λ of the distillation term between the student's "
               "embedding (projected when the dimensions differ) and the teacher's embedding "
               "the training records hold (make_tfrecords.py --teacher); 0: off.")
    enum_flag("distill_loss", "cosine", choices.DISTILL_LOSSES, "Distillation term: "
              "cosine (1 - cos) or l2 (mean squared error of the vectors).")
    bool_flag("distill_center", True, "Subtract the teacher's mean embedding over the "
              "training records before comparing (a teacher whose faces share one cone, as "
              "dlib's at cosine 0.84 for two random faces, teaches the cone otherwise).")
    integer_flag("proxy_partitions", 1, "Split the class proxies into this many variables.")
    float_flag("partial_fc_rate", 1.0, "Partial FC, in (0, 1]: each training step uses the "
               "batch's classes and a uniform sample of the others, ceil(rate × classes) in "
               "all, with sparse proxy updates (class-level heads; 1: every class).")
    # Optimisation.
    flag_groups.define_batch_size(fv, "Global training batch size.", default=128)
    integer_flag("train_steps", None, "Total training steps (or use --train_epochs).")
    float_flag("train_epochs", None, "Total training epochs over the training records.")
    enum_flag("optimizer", "momentum", choices.OPTIMIZERS, "Optimizer.")
    float_flag("learning_rate", 0.1, "Base learning rate (after warm-up).")
    float_flag("momentum", 0.9, "Momentum.")
    float_flag("weight_decay", 5e-4, "Weight decay on kernels and proxies.")
    enum_flag("schedule", "piecewise", choices.SCHEDULES, "Learning rate schedule.")
    list_flag("decay_boundaries", ["0.5", "0.7", "0.9"],
              "piecewise: fractions of the total steps where the rate is divided.")
    float_flag("decay_factor", 0.1, "piecewise: factor applied at each boundary.")
    integer_flag("warmup_steps", None, "Linear warm-up steps (default: 2%% of training).")
    # Input.
    bool_flag("grayscale", False, "Turn every input face to gray (the luma in all three "
              "channels) inside the model: training, evaluation and every export. For models "
              "trained on grayscale faces (LFW-a), so colour photos reach them as those did.")
    bool_flag("random_flip", True, "Random horizontal flips in training.")
    bool_flag("random_crop", False, "Random crops (padding 8) in training.")
    float_flag("brightness_delta", 0.0, "Random brightness shift (0..255 scale).")
    float_flag("min_crop_scale", 1.0, "Random scale crops: box side in [this, 1] of the "
               "stored face, aspect ratio within 1.1 (1: off).")
    float_flag("contrast_delta", 0.0, "Random contrast factor in [1 - d, 1 + d] (0: off).")
    define_degradation_flags(fv)
    integer_flag("shuffle_buffer", 10000, "Records held for shuffling.")
    flag_groups.define_seed(fv, "shuffling, augmentation and initialisation")
    # Evaluation and export.
    integer_flag("eval_batch_size", 64, "Pairs per eval batch (the last one is padded).")
    bool_flag("eval_flip", True, "Flip test-time augmentation in verification.")
    flag_groups.define_allow_transform_mismatch(fv, "Evaluate on --eval_records")
    flag_groups.define_far_target(fv)
    enum_flag("eval_protocol", "verification", choices.EVAL_PROTOCOLS,
              "verification: LFW-style 1:1 on pair records (make_tfrecords.py --pairs); "
              "retrieval: Recall@K, R-precision and MAP@R on image records of held-out "
              "identities (re-identification, fine-grained retrieval).")
    integer_flag("eval_throttle_secs", 60, "Minimum seconds between evaluations.")
    integer_flag("exports_to_keep", 3, "SavedModels kept by each exporter.")
    string_flag("best_metric", None, "What the best exporter keeps the highest of: "
                "NAME/accuracy, NAME/val_far1e-3 or NAME/auc of an --eval_records set, or "
                "mean/accuracy (etc.) over several sets. Default: the first set's accuracy.")
    string_flag("checkpoint_path", None, "evaluate/export: this checkpoint, not the latest.")
    string_flag("warm_start_from", None, "Initialise a fresh run from this checkpoint (a file "
                "prefix or a model_dir): fine-tuning.")
    enum_flag("warm_start_vars", "auto", ["auto", "backbone", "all"],
              "What --warm_start_from initialises: the backbone (and neck), plus the head when "
              "its proxies have the new shape (auto); the backbone only; or all (the class "
              "count must match).")
    # Devices and precision.
    enum_flag("device", "cpu", choices.DEVICES, "cpu, gpu or npu (Ascend).")
    enum_flag("precision", "fp32", choices.PRECISIONS,
              "fp32; bf16 (CPU: backbone in bfloat16, head and loss float32); fp16 (GPU "
              "rewrite, loss scaling).")
    enum_flag("npu_precision_mode", "allow_mix_precision",
              choices.NPU_PRECISION_MODES, "Ascend precision_mode.")
    integer_flag("iterations_per_loop", 100, "Ascend: steps per device loop.")
    enum_flag("distribution", "none", choices.DISTRIBUTIONS,
              "mirrored: synchronous data parallelism over this host's devices (the global "
              "--batch_size is split across them). multi_worker: the same across the worker "
              "processes TF_CONFIG lists (collective all-reduce; the global --batch_size is "
              "split across all replicas). TF_CONFIG alone (chief, worker, ps): asynchronous "
              "parameter-server training.")
    integer_flag("num_gpus", 0, "GPUs to mirror over; more than 1 implies "
                 "--distribution=mirrored (needs --device=gpu).")
    integer_flag("num_cpu_devices", 1, "--device=cpu: split the host into this many CPU "
                 "devices, mirrored with --distribution=mirrored (stands in for GPUs).")
    integer_flag("worker_timeout_secs", 600, "--distribution=multi_worker: a session run "
                 "(one step, or the start) that waits longer for the other workers fails the "
                 "worker with DeadlineExceeded instead of hanging (0: wait forever).")
    integer_flag("save_checkpoints_steps", 500, "Checkpoint (and eval) interval.")
    integer_flag("save_summary_steps", 100, "Summary interval.")
    integer_flag("keep_checkpoint_max", 5, "Checkpoints kept.")
    integer_flag("log_every_n_steps", 100, "Logging interval.")
    integer_flag("intra_op_threads", 0, "TF intra-op threads (0: all cores).")
    integer_flag("inter_op_threads", 0, "TF inter-op threads (0: TF's default).")
    flag_groups.define_progress(fv)
    bool_flag("check_finite_loss", True, "Stop on a NaN/Inf loss, naming the step.")
    bool_flag("verify_records", True, "Check every shard's size and sha256 against its "
              "manifest before any graph is built (local paths; hashing reads every byte).")
    return fv


def define_degradation_flags(fv):
    """The training faces' quality and lighting degradations (``data_tools.degradations``;
    training input only, never evaluation or serving), all off by default."""
    off = choices.DEGRADATION_DEFAULTS
    define = functools.partial(flags.DEFINE_float, flag_values=fv)
    define("lowres_prob", off.lowres_prob, "Probability of a low-resolution copy: down to a "
           "side fraction U(--lowres_min_scale, 1) (area) and back up (bilinear) (0: off).")
    define("lowres_min_scale", off.lowres_min_scale, "Smallest side fraction of --lowres_prob.")
    define("blur_prob", off.blur_prob, "Probability of a Gaussian blur, sigma U(0, "
           "--blur_max_sigma) input pixels (0: off).")
    define("blur_max_sigma", off.blur_max_sigma, "Largest sigma of --blur_prob, in pixels.")
    define("jpeg_prob", off.jpeg_prob, "Probability of a JPEG re-compression at quality "
           "U(--jpeg_min_quality, 95) (0: off).")
    flags.DEFINE_integer("jpeg_min_quality", off.jpeg_min_quality, "Lowest JPEG quality of "
                         "--jpeg_prob.", flag_values=fv)
    define("gamma_range", off.gamma_range, "Random gamma: pixel^exp(U(-g, g)) on 0..1 "
           "(exposure, tone curves; 0: off).")
    define("shading_prob", off.shading_prob, "Probability of a side light: a linear "
           "illumination ramp 1 - a .. 1 + a across the face in a random direction, "
           "a ~ U(0, --shading_strength) (0: off).")
    define("shading_strength", off.shading_strength, "Largest ramp amplitude of "
           "--shading_prob, in [0, 1].")


_OPTION_FLAGS = ((bool, flags.DEFINE_bool), (int, flags.DEFINE_integer),
                 (float, flags.DEFINE_float), (str, flags.DEFINE_string))


def define_head_option_flags(fv):
    """One flag per option the heads declare (``heads.HeadOption``, in model/heads.py and
    model/margin_heads.py, listed by ``training.choices.head_options``), typed by its default;
    unset (None), the head uses its default."""
    for name, default, help_text in choices.head_options():
        define = next(define for kind, define in _OPTION_FLAGS if isinstance(default, kind))
        define(name, None, help_text, flag_values=fv)


def _program_flags(fv):
    """This program's flags in ``fv``, not absl's own (``--test_tmpdir``, ``--stderrthreshold``):
    those :func:`define_flags` defines, in its groups included."""
    return [fv[name] for name in define_flags(flags.FlagValues()) if name in fv]


def flag_values(fv=FLAGS):
    """This program's flags (not absl's own) as a plain dict."""
    return {f.name: f.value for f in _program_flags(fv)}


def main(argv, flag_values=FLAGS):
    """Flags -> params -> run record -> the mode; 0, or 1 with the failure's one line. A bad
    setting raises absl's ``UsageError`` (:func:`run` prints it in one line)."""
    fv = flag_values
    console.quiet_logs(verbosity_given=bool(fv["verbosity"].present) if "verbosity" in fv
                       else False)
    console.silence_deprecation_warnings()
    cli.check_usage(argv)
    program_flags = _program_flags(fv)
    values, recorded = {f.name: f.value for f in program_flags}, None
    try:
        if not run_record.trains(values["mode"]):
            # evaluate/export: the run's recorded settings, not this program's defaults.
            model_dir = values["model_dir"] or values["train_url"]
            recorded = run_record.read_recorded_params(model_dir)
            if recorded:
                given = {name for name in values if fv[name].present}
                values = run_record.apply_recorded_settings(values, given, recorded, model_dir)
        params = build_params(values, recorded)
    except failures.SETTINGS_ERRORS as e:
        raise app.UsageError(str(e)) from None
    if run_record.writes_run_record():
        if run_record.trains(params["mode"]):
            run_record.record_run(params, run_record.program_flags_text(program_flags))
        else:
            run_record.log_run(params)
    try:
        with failures.typed_failures(params):
            runner.run_mode(params)
    except failures.RunFailure as e:
        logging.error("%s", e)
        return 1
    return 0


def run():
    """Console-script entry point (``circle-train``, ``python estimator_main.py``); a bad
    setting is told in one line, not under absl's whole short help."""
    cli.run(define_flags, cli.one_line_usage_errors(main))


if __name__ == "__main__":
    run()
