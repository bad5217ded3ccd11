"""One factory for the estimator on CPU, GPU and Ascend NPU.

Everything device-specific lives here: the RunConfig (or NPURunConfig), the session config
(which checks the precision fits the device; Ascend takes ``precision_mode``) and the optimizer
wrappers Ascend needs (loss scaling, HCCL all-reduce). ``npu_bridge`` is imported only
here, and only when ``device == 'npu'``.
"""

import collections
import contextlib
import importlib
import os

import tensorflow.compat.v1 as tf

from runtime import config as runtime_config
from runtime.ascend import ascend_rank

# One definition each, in runtime.config (which validates them); re-exported for the flags.
DEVICES = runtime_config.DEVICES
PRECISIONS = runtime_config.PRECISIONS
NPU_PRECISION_MODES = runtime_config.NPU_PRECISION_MODES
DISTRIBUTIONS = runtime_config.DISTRIBUTIONS
NPU_MODULES = ("npu_config", "npu_estimator", "npu_optimizer", "npu_loss_scale_optimizer",
               "npu_loss_scale_manager")

NpuApi = collections.namedtuple("NpuApi", [
    "NPURunConfig", "NPUEstimator", "NPUDistributedOptimizer", "NPULossScaleOptimizer",
    "ExponentialUpdateLossScaleManager"])


class DeviceUnavailableError(RuntimeError):
    """The requested device's software stack is not installed."""


def _npu_api_from(prefix):
    """The five classes from ``<prefix>.estimator.npu.<module>``, each module imported by its
    full dotted path (the submodules are not attributes of the package until imported)."""
    modules = [importlib.import_module(f"{prefix}.estimator.npu.{name}")
               for name in NPU_MODULES]
    config, estimator, optimizer, loss_scale, manager = modules
    return NpuApi(config.NPURunConfig, estimator.NPUEstimator,
                  optimizer.NPUDistributedOptimizer, loss_scale.NPULossScaleOptimizer,
                  manager.ExponentialUpdateLossScaleManager)


def load_npu_api():
    """The Ascend classes: TF 1.15 ``npu_bridge``, else CANN's TF 2.x ``npu_device.compat.v1``."""
    try:
        return _npu_api_from("npu_bridge")
    except ImportError as bridge_error:
        try:
            npu_device = importlib.import_module("npu_device")
            importlib.import_module("npu_device.compat")
            npu_device.compat.enable_v1()
            return _npu_api_from("npu_device.compat.v1")
        except (ImportError, AttributeError):
            raise DeviceUnavailableError(
                "--device=npu needs Ascend's TensorFlow adapter: npu_bridge (TF 1.15) or "
                f"npu_device (TF 2.x) could not be imported ({bridge_error})") from None


def bfloat16_supported():
    """bfloat16 convolutions and matmuls on CPU: TensorFlow 2.x builds with oneDNN."""
    return int(tf.__version__.split(".")[0]) >= 2


def cpu_has_bfloat16_units(cpuinfo_path="/proc/cpuinfo"):
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16), False when it
    does not, None when unknown (no /proc/cpuinfo). Without the units oneDNN emulates bf16,
    which is slower than float32."""
    try:
        with open(cpuinfo_path) as fh:
            text = fh.read()
    except OSError:
        return None
    cpu_flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            cpu_flags.update(line.split(":", 1)[-1].split())
    return bool(cpu_flags & {"avx512_bf16", "amx_bf16"})


def visible_gpus():
    """The GPUs TensorFlow can use (TF 1.15 and 2.x)."""
    return tf.config.experimental.list_physical_devices("GPU")


def check_device(runtime):
    """Fail now, with one line, when ``runtime``'s device cannot run here; warn when bf16 would
    be emulated. ``runtime`` is a validated ``runtime.config.RuntimeConfig``."""
    if runtime.precision == "bf16":
        if not bfloat16_supported():
            raise DeviceUnavailableError("--precision=bf16 needs TensorFlow 2.x with oneDNN (TF "
                                         f"{tf.__version__} has no bfloat16 CPU kernels)")
        if cpu_has_bfloat16_units() is False:
            tf.logging.warning("--precision=bf16: this CPU has no bfloat16 units (AVX512-BF16 "
                               "or AMX); oneDNN emulates them and fp32 is likely faster here")
    if runtime.device == "gpu" and not visible_gpus():
        raise DeviceUnavailableError(
            "--device=gpu but TensorFlow sees no GPU (a CPU-only TensorFlow, or no CUDA device "
            "visible: check nvidia-smi and CUDA_VISIBLE_DEVICES, install the [gpu] extra)")
    if runtime.device == "gpu" and runtime.num_gpus > len(visible_gpus()):
        raise DeviceUnavailableError(f"--num_gpus={runtime.num_gpus} but TensorFlow sees "
                                     f"{len(visible_gpus())} GPU(s)")
    if (runtime.device == "gpu" and runtime.distribution == "multi_worker"
            and runtime.num_gpus != len(visible_gpus())):
        # MultiWorkerMirroredStrategy takes every GPU the worker sees.
        raise DeviceUnavailableError(
            f"--distribution=multi_worker mirrors over every GPU a worker sees ("
            f"{len(visible_gpus())} here), not --num_gpus={runtime.num_gpus}: set "
            "CUDA_VISIBLE_DEVICES to the GPUs to use")
    if runtime.device == "npu":
        load_npu_api()


def session_config(device, precision, intra_op_threads=0, inter_op_threads=0,
                   num_cpu_devices=1, operation_timeout_secs=0):
    """ConfigProto for the device; rejects a precision the device does not offer.

    bf16 needs no rewrite here: the model_fn runs the backbone in bfloat16 itself, which keeps
    the head out of it (oneDNN's automatic rewrite would also turn the cosine logits to bf16).
    ``num_cpu_devices > 1`` splits the host into that many CPU devices (/cpu:0, /cpu:1, ...),
    the stand-in for GPUs that lets a mirrored run be tested on a machine without any.
    ``operation_timeout_secs > 0`` makes any one session run that takes longer fail with
    DeadlineExceededError (0: no limit): a multi-worker step waiting in a collective for a worker
    that is gone fails instead of hanging.
    """
    runtime_config.RuntimeConfig(device=device, precision=precision)  # the one validation
    if precision == "bf16" and not bfloat16_supported():
        raise DeviceUnavailableError("--precision=bf16 needs TensorFlow 2.x with oneDNN (TF "
                                     f"{tf.__version__} has no bfloat16 CPU kernels)")
    config = tf.ConfigProto(allow_soft_placement=True,
                            intra_op_parallelism_threads=intra_op_threads,
                            inter_op_parallelism_threads=inter_op_threads)
    if num_cpu_devices > 1:
        config.device_count["CPU"] = num_cpu_devices
    if operation_timeout_secs:
        config.operation_timeout_in_ms = int(operation_timeout_secs * 1000)
    if device == "gpu":
        config.gpu_options.allow_growth = True
    return config


def train_distribution(distribution, device="cpu", num_devices=1):
    """The ``RunConfig(train_distribute=...)`` strategy, or None for single-device training.

    ``mirrored``: synchronous data parallelism over ``num_devices`` local devices of ``device``
    (GPUs, or CPU devices made by ``session_config(num_cpu_devices=...)``). Each replica gets
    global batch / num_devices examples and the gradients are all-reduced (NCCL on GPUs) before
    one shared update. Ascend scales out through HCCL instead (``optimizer_wrapper``).

    ``multi_worker``: TensorFlow's MultiWorkerMirroredStrategy, the same synchronous update
    with a collective all-reduce across the worker processes that TF_CONFIG lists (each worker
    uses all its visible GPUs, or its CPU). The estimator runs it through the distribute
    coordinator of ``tf.estimator.train_and_evaluate`` (``Estimator.train`` refuses it);
    ``num_devices`` is not used. Call it in every training task, never in the evaluator: in TF 2
    it starts this task's server and waits for the other workers to connect.
    """
    if distribution == "none":
        return None
    runtime_config.check_distribution(distribution, device)  # the one validation of the pair
    if distribution == "multi_worker":
        # Built outside any graph, on purpose: in TF 2 the constructor starts this worker's
        # server in the eager context, and the estimator deep-copies the strategy there. Built
        # inside a tf.Graph() (as the mirrored one is), the copy fails with "/job:worker/
        # replica:0/task:0/device:CPU:0 unknown device". TF 1.15 has no eager context here.
        return tf.distribute.experimental.MultiWorkerMirroredStrategy()
    if num_devices < 1:
        raise ValueError(f"a mirrored run needs at least one device, got {num_devices}")
    devices = [f"/{device}:{i}" for i in range(num_devices)]
    # Built in a graph: in TF 2 the constructor otherwise touches the eager context, whose
    # devices were fixed when it started (without the extra CPU devices of session_config).
    with tf.Graph().as_default():
        return tf.distribute.MirroredStrategy(devices=devices)


def optimizer_wrapper(device, npu_precision_mode="allow_mix_precision", npu_api=None,
                      init_loss_scale=2 ** 32, incr_every_n_steps=1000):
    """``fn(optimizer) -> optimizer`` for the device, or None when nothing is needed.

    On Ascend with reduced precision, an NPULossScaleOptimizer with an exponential loss-scale
    manager (fp16 gradients underflow otherwise); with RANK_SIZE > 1, NPUDistributedOptimizer
    (HCCL all-reduce of the gradients across devices).
    """
    if device != "npu":
        return None
    api = npu_api or load_npu_api()
    _, rank_size = ascend_rank()

    def wrap(optimizer):
        if rank_size > 1:
            optimizer = api.NPUDistributedOptimizer(optimizer)
        if npu_precision_mode != "must_keep_origin_dtype":
            manager = api.ExponentialUpdateLossScaleManager(
                init_loss_scale=init_loss_scale, incr_every_n_steps=incr_every_n_steps,
                decr_every_n_nan_or_inf=2, decr_ratio=0.5)
            optimizer = api.NPULossScaleOptimizer(optimizer, manager,
                                                  is_distributed=rank_size > 1)
        return optimizer

    return wrap


def build_estimator(model_fn, model_dir, device="cpu", precision="fp32",
                    npu_precision_mode="allow_mix_precision", iterations_per_loop=100,
                    save_checkpoints_steps=1000, save_summary_steps=100, keep_checkpoint_max=5,
                    log_step_count_steps=100, tf_random_seed=None, warm_start_from=None,
                    train_distribute=None, intra_op_threads=0, inter_op_threads=0, npu_api=None,
                    num_cpu_devices=1, operation_timeout_secs=0, tf_config=None):
    """The estimator for ``device`` (``cpu``, ``gpu`` or ``npu``).

    ``warm_start_from`` (a checkpoint or SavedModel variables path) initialises a fresh run for
    fine-tuning; an existing checkpoint in ``model_dir`` always wins, so a restarted job resumes.
    ``train_distribute``: a strategy from ``train_distribution`` (None: one device, or the
    estimator's between-graph parameter-server training when TF_CONFIG describes a cluster).
    ``num_cpu_devices``, ``operation_timeout_secs``: see ``session_config``.
    ``tf_config``: the TF_CONFIG text the RunConfig reads instead of the environment's (the
    evaluator of a multi-worker cluster, ``runtime.cluster.evaluator_tf_config``).
    """
    runtime_config.RuntimeConfig(device=device, precision=precision,
                               npu_precision_mode=npu_precision_mode,
                               iterations_per_loop=iterations_per_loop)
    common = dict(model_dir=model_dir, tf_random_seed=tf_random_seed,
                  save_checkpoints_steps=save_checkpoints_steps,
                  save_summary_steps=save_summary_steps, keep_checkpoint_max=keep_checkpoint_max,
                  log_step_count_steps=log_step_count_steps)
    if device == "npu":
        api = npu_api or load_npu_api()
        config = api.NPURunConfig(iterations_per_loop=iterations_per_loop,
                                  precision_mode=npu_precision_mode,
                                  session_config=session_config("npu", "fp32"), **common)
        return api.NPUEstimator(model_fn=model_fn, model_dir=model_dir, config=config,
                                warm_start_from=warm_start_from)
    with _environment("TF_CONFIG", tf_config):
        config = tf.estimator.RunConfig(
            session_config=session_config(device, precision, intra_op_threads,
                                          inter_op_threads, num_cpu_devices,
                                          operation_timeout_secs),
            train_distribute=train_distribute, **common)
    return tf.estimator.Estimator(model_fn=model_fn, model_dir=model_dir, config=config,
                                  warm_start_from=warm_start_from)


@contextlib.contextmanager
def _environment(name, value):
    """``os.environ[name] = value`` inside the block (nothing when value is None)."""
    if value is None:
        yield
        return
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            del os.environ[name]
        else:
            os.environ[name] = saved
