"""Train, evaluate and export Circle-loss face embeddings with tf.estimator.

    python estimator_main.py --mode=train_and_evaluate \\
        --train_records=records/train --eval_records=records/pairs --model_dir=runs/r50

Modes: ``train``, ``evaluate`` (LFW-style verification of a checkpoint: eval/report.json and
eval/roc.png), ``train_and_evaluate`` (train, evaluate on new checkpoints, export the best model
by verification accuracy and the latest), ``export`` (checkpoint -> SavedModel + frozen .pb).

This file is the command line only: flags -> one validated params dict
(``training/params.py``) -> the run record (``training/run_record.py``) -> mode dispatch
(``training/runner.py``) -> a failure told in one line. The model never reads flags.
"""

import errno
import functools
import os
import re
import sys

if __package__ in (None, ""):  # `python estimator_main.py` from anywhere
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__":
    # TensorFlow's C++ banners (oneDNN, CPU features) are noise to a user; --verbosity and an
    # explicit TF_CPP_MIN_LOG_LEVEL still win. Set before TensorFlow is imported.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow.compat.v1 as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from data_tools import manifest  # noqa: E402
from model import (  # noqa: E402
    backbones,
    distillation,
    heads,
    hooks,
    model_fn,
    optimization,
)
from runtime import estimator_factory  # noqa: E402
from training import console, run_record, runner  # noqa: E402
from training.params import (  # noqa: E402
    EVAL_PROTOCOLS,
    MODES,
    NO_HEAD,
    ParamsError,
    build_params,
)

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
    enum_flag("mode", "train_and_evaluate", MODES, "What to run.")
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
    enum_flag("backbone", "iresnet50", sorted(backbones.BACKBONES), "Backbone network.")
    enum_flag("head", "circle", sorted(heads.HEADS) + [NO_HEAD], "Loss head (none: the "
              "distillation term alone, --distill_weight > 0).")
    integer_flag("embedding_size", 512, "Embedding dimension.")
    integer_flag("image_size", None, "Network input side; default: the backbone's (112).")
    float_flag("dropout_rate", 0.0, "Dropout before the embedding layer (iresnet).")
    float_flag("margin", None, "Margin m (Circle: 0.25; cosface 0.35; arcface and "
               "subcenter_arcface 0.5; adaface 0.4; magface: none, see --magface_*).")
    float_flag("gamma", None, "Circle scale gamma (paper's face setting: 256).")
    float_flag("scale", 64.0, "Scale s of the softmax and margin (cosface, arcface, adaface, "
               "subcenter_arcface, magface) heads.")
    float_flag("class_weight", 1.0, "circle_combined: weight of the class-level loss.")
    float_flag("pair_weight", 1.0, "circle_combined: weight of the pair-level loss.")
    # Options of the margin heads (model/margin_heads.py); unset: the head's default.
    integer_flag("subcenters", None, "subcenter_arcface: sub-centres K per class (3).")
    integer_flag("subcenter_drop_step", None, "subcenter_arcface: from this step, each class "
                 "keeps its dominant sub-centre and examples farther than "
                 "--subcenter_drop_angle from it give no loss (0, default: never).")
    float_flag("subcenter_drop_angle", None, "subcenter_arcface: drop angle in degrees (75).")
    float_flag("adaface_h", None, "adaface: h, the spread of the norm-adaptive margin (0.333).")
    float_flag("adaface_t_alpha", None, "adaface: rate of the moving average of the batch "
               "norm statistics (0.01).")
    float_flag("magface_lower_norm", None, "magface: l_a, lower bound of the feature norm (10).")
    float_flag("magface_upper_norm", None, "magface: u_a, upper bound of the feature norm (110).")
    float_flag("magface_lower_margin", None, "magface: l_m, margin at the lower norm (0.45).")
    float_flag("magface_upper_margin", None, "magface: u_m, margin at the upper norm (0.8).")
    float_flag("magface_lambda_g", None, "magface: weight of the norm regulariser g (35).")
    integer_flag("images_per_identity", 0, "K of P×K batches (0: plain shuffling). "
                 "Needed by circle_pair and circle_combined.")
    float_flag("distill_weight", 0.0, "λ of the distillation term between the student's "
               "embedding (projected when the dimensions differ) and the teacher's embedding "
               "the training records hold (make_tfrecords.py --teacher); 0: off.")
    enum_flag("distill_loss", "cosine", list(distillation.LOSSES), "Distillation term: "
              "cosine (1 - cos) or l2 (mean squared error of the vectors).")
    bool_flag("distill_center", True, "Subtract the teacher's mean embedding over the "
              "training records before comparing (a teacher whose faces share one cone, as "
              "dlib's at cosine 0.84 for two random faces, teaches the cone otherwise).")
    integer_flag("proxy_partitions", 1, "Split the class proxies into this many variables.")
    float_flag("partial_fc_rate", 1.0, "Partial FC, in (0, 1]: each training step uses the "
               "batch's classes and a uniform sample of the others, ceil(rate × classes) in "
               "all, with sparse proxy updates (class-level heads; 1: every class).")
    # Optimisation.
    integer_flag("batch_size", 128, "Global training batch size.")
    integer_flag("train_steps", None, "Total training steps (or use --train_epochs).")
    float_flag("train_epochs", None, "Total training epochs over the training records.")
    enum_flag("optimizer", "momentum", list(optimization.OPTIMIZERS), "Optimizer.")
    float_flag("learning_rate", 0.1, "Base learning rate (after warm-up).")
    float_flag("momentum", 0.9, "Momentum.")
    float_flag("weight_decay", 5e-4, "Weight decay on kernels and proxies.")
    enum_flag("schedule", "piecewise", list(optimization.SCHEDULES), "Learning rate schedule.")
    list_flag("decay_boundaries", ["0.5", "0.7", "0.9"],
              "piecewise: fractions of the total steps where the rate is divided.")
    float_flag("decay_factor", 0.1, "piecewise: factor applied at each boundary.")
    integer_flag("warmup_steps", None, "Linear warm-up steps (default: 2%% of training).")
    # Input.
    bool_flag("random_flip", True, "Random horizontal flips in training.")
    bool_flag("random_crop", False, "Random crops (padding 8) in training.")
    float_flag("brightness_delta", 0.0, "Random brightness shift (0..255 scale).")
    float_flag("min_crop_scale", 1.0, "Random scale crops: box side in [this, 1] of the "
               "stored face, aspect ratio within 1.1 (1: off).")
    float_flag("contrast_delta", 0.0, "Random contrast factor in [1 - d, 1 + d] (0: off).")
    integer_flag("shuffle_buffer", 10000, "Records held for shuffling.")
    integer_flag("seed", 0, "Seed of shuffling, augmentation and initialisation.")
    # Evaluation and export.
    integer_flag("eval_batch_size", 64, "Pairs per eval batch (the last one is padded).")
    bool_flag("eval_flip", True, "Flip test-time augmentation in verification.")
    bool_flag("allow_transform_mismatch", False, "Evaluate on records converted otherwise than "
              "the training records (another --crop_box, --image_size or --align): refused "
              "by default, as the faces differ from those the model learnt.")
    float_flag("far_target", 1e-3, "FAR of the VAL@FAR metric.")
    enum_flag("eval_protocol", "verification", list(EVAL_PROTOCOLS),
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
    enum_flag("device", "cpu", list(estimator_factory.DEVICES), "cpu, gpu or npu (Ascend).")
    enum_flag("precision", "fp32", list(estimator_factory.PRECISIONS),
              "fp32; bf16 (CPU: backbone in bfloat16, head and loss float32); fp16 (GPU "
              "rewrite, loss scaling).")
    enum_flag("npu_precision_mode", "allow_mix_precision",
              list(estimator_factory.NPU_PRECISION_MODES), "Ascend precision_mode.")
    integer_flag("iterations_per_loop", 100, "Ascend: steps per device loop.")
    enum_flag("distribution", "none", list(estimator_factory.DISTRIBUTIONS),
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
    bool_flag("progress", True, "Show a progress bar while training.")
    bool_flag("check_finite_loss", True, "Stop on a NaN/Inf loss, naming the step.")
    bool_flag("verify_records", True, "Check every shard's size and sha256 against its "
              "manifest before any graph is built (local paths; hashing reads every byte).")
    return fv


def _program_flags():
    """This program's flags, not absl's own (``--test_tmpdir``, ``--stderrthreshold``, ...)."""
    return FLAGS.get_key_flags_for_module(sys.modules[__name__])


def flag_values():
    """This program's flags (not absl's own) as a plain dict."""
    return {f.name: f.value for f in _program_flags()}


_MISSING_KEY = re.compile(r"Key \S+ not found in checkpoint")
_NON_FINITE = re.compile(re.escape(model_fn.NON_FINITE_LOSS_MESSAGE) + r"\]\s*\[(\d+)\]")


def _silence_deprecation_warnings():
    """The compat.v1 estimator stack warns about its own deprecation on every call; users of this
    CLI cannot act on those lines, and they bury the ones they can."""
    try:
        from tensorflow.python.util import deprecation  # noqa: PLC0415
    except ImportError:
        return
    deprecation._PRINT_DEPRECATION_WARNINGS = False


def main(argv):
    console.quiet_logs(verbosity_given=bool(FLAGS["verbosity"].present))
    _silence_deprecation_warnings()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    values, recorded = flag_values(), None
    if not run_record.trains(values["mode"]):
        # evaluate/export: the run's recorded settings, not this program's defaults.
        model_dir = values["model_dir"] or values["train_url"]
        recorded = run_record.read_recorded_params(model_dir)
        if recorded:
            given = {name for name in values if FLAGS[name].present}
            try:
                values = run_record.apply_recorded_settings(values, given, recorded, model_dir)
            except run_record.RecordMismatchError as e:
                raise app.UsageError(str(e)) from None
    try:
        params = build_params(values)
    except (ParamsError, manifest.ManifestError, estimator_factory.DeviceUnavailableError) as e:
        raise app.UsageError(str(e)) from None
    if recorded and params.get("eval_transform") is None:
        # An export without --eval_records serves the transform its training evaluated with.
        params["eval_transform"] = recorded.get("eval_transform")
    if run_record.writes_run_record():
        if run_record.trains(params["mode"]):
            run_record.record_run(params, run_record.program_flags_text(_program_flags()))
        else:
            run_record.log_run(params)
    try:
        runner.run_mode(params)
    except (tf.errors.NotFoundError, ValueError) as e:
        # TF 1.15 raises the restore's NotFoundError, TF 2.x a ValueError around it.
        missing = _MISSING_KEY.search(getattr(e, "message", None) or str(e))
        if run_record.trains(params["mode"]) or not missing:
            raise
        logging.error("%s: the checkpoint in %s is not this network (%s). Run --mode=%s with "
                      "the training run's settings (its flags.txt), without contradicting flags.",
                      params["mode"], params["model_dir"], missing.group(0), params["mode"])
        sys.exit(1)
    except tf.errors.InvalidArgumentError as e:
        match = _NON_FINITE.search(e.message)
        if not match:
            raise
        latest = tf.train.latest_checkpoint(params["model_dir"])
        logging.error("training stopped: the loss became NaN/Inf at global step %s; no update "
                      "was applied. Last good checkpoint: %s. Lower --learning_rate or --gamma, "
                      "or lengthen --warmup_steps.", match.group(1), latest)
        sys.exit(1)
    except (hooks.WorkerLostError, tf.errors.DeadlineExceededError) as e:
        if params["distribution"] != "multi_worker":
            raise
        _exit_multi_worker_failure(params, e)
    except (tf.errors.OpError, OSError) as e:
        # Out of memory is a ResourceExhaustedError too: only a full disk is handled here.
        message = getattr(e, "message", None) or str(e)
        if getattr(e, "errno", None) != errno.ENOSPC and "No space left on device" not in message:
            raise
        logging.error("training stopped: cannot write to %s (No space left on device). Last "
                      "good checkpoint: %s. Free space and re-run the same command to resume.",
                      params["model_dir"], tf.train.latest_checkpoint(params["model_dir"]))
        sys.exit(1)


def _exit_multi_worker_failure(params, error):
    """One worker of a synchronous job cannot go on alone: say so, and how to resume."""
    if isinstance(error, tf.errors.DeadlineExceededError):
        why = (f"a step waited more than --worker_timeout_secs={params['worker_timeout_secs']} "
               "s for the other workers (a worker failed, was stopped, or is stalled)")
    else:
        why = str(error)
    logging.error("multi-worker training stopped: %s. Every worker of the all-reduce is needed "
                  "for each step: restart all of them with the same command and TF_CONFIG; they "
                  "resume from the last checkpoint, %s.", why,
                  tf.train.latest_checkpoint(params["model_dir"]))
    sys.exit(1)


def _main_with_one_line_errors(argv):
    """``main``, with a bad setting printed as its one line (absl would print the whole short
    help before it)."""
    try:
        return main(argv)
    except app.UsageError as e:
        sys.stderr.write(f"{os.path.basename(argv[0])}: {e}\nsee --help for the flags\n")
        return 1


def run():
    """Console-script entry point."""
    define_flags()
    app.run(_main_with_one_line_errors)


if __name__ == "__main__":
    run()
