"""The Ascend path, with the fake ``npu_bridge`` of tests/fake_npu standing in for CANN's.

The fake is put on ``sys.path`` only inside the tests that want it, and every ``npu_bridge``
module is dropped from ``sys.modules`` afterwards, so no other test sees it. On a machine with
the real adapter the "not installed" tests block its import instead of relying on its absence.
"""

import importlib
import json
import os
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from absl import app

import estimator_main
from runtime import estimator_factory
from tests import records_helpers as rh
from training import builders, evaluation
from training.params import build_params

FAKE_NPU = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_npu")
NPU_PACKAGE = "npu_bridge.estimator.npu."
FLAGS = estimator_main.FLAGS
SIZE = 32
# Which --npu_precision_mode values compute in float16 somewhere and so need loss scaling.
LOSS_SCALED = {"allow_mix_precision": True, "allow_fp32_to_fp16": True, "force_fp16": True,
               "must_keep_origin_dtype": False}


def loaded_npu_modules():
    return sorted(name for name in sys.modules
                  if name.split(".")[0] in ("npu_bridge", "npu_device"))


def forget_npu_modules():
    for name in loaded_npu_modules():
        del sys.modules[name]


@pytest.fixture
def fake_npu(monkeypatch):
    """The fake adapter, importable as ``npu_bridge``; ``fake_npu("npu_config")`` -> module."""
    forget_npu_modules()
    monkeypatch.syspath_prepend(FAKE_NPU)
    yield lambda name: importlib.import_module(NPU_PACKAGE + name)
    forget_npu_modules()


@pytest.fixture
def no_npu(monkeypatch):
    """Neither ``npu_bridge`` nor ``npu_device`` can be imported (None in sys.modules)."""
    forget_npu_modules()
    monkeypatch.setitem(sys.modules, "npu_bridge", None)
    monkeypatch.setitem(sys.modules, "npu_device", None)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("records"))
    rh.write_image_records(directory, num_classes=4, per_class=8, size=SIZE)
    return directory


def train_args(records, model_dir, *extra):
    return ["--mode=train", f"--train_records={records}", f"--model_dir={model_dir}",
            "--backbone=tiny", f"--image_size={SIZE}", "--embedding_size=16",
            "--batch_size=8", "--gamma=32", "--noprogress"] + list(extra)


def unused_model_fn(features, labels, mode):
    raise AssertionError("the estimator was only to be built")


def optimizer_chain(optimizer):
    """Class names from the outermost wrapper to the wrapped optimizer."""
    chain = [type(optimizer).__name__]
    while hasattr(optimizer, "_opt") or hasattr(optimizer, "_optimizer"):
        optimizer = getattr(optimizer, "_opt", None) or optimizer._optimizer
        chain.append(type(optimizer).__name__)
    return chain


@pytest.mark.parametrize("precision_mode", estimator_factory.NPU_PRECISION_MODES)
def test_factory_builds_an_npu_estimator_with_its_run_config(fake_npu, tmp_path, precision_mode):
    estimator = estimator_factory.build_estimator(
        unused_model_fn, str(tmp_path), device="npu", npu_precision_mode=precision_mode,
        iterations_per_loop=7, save_checkpoints_steps=21, save_summary_steps=7,
        keep_checkpoint_max=3, log_step_count_steps=14, tf_random_seed=5)
    assert type(estimator) is fake_npu("npu_estimator").NPUEstimator
    assert isinstance(estimator, tf.estimator.Estimator)
    config = estimator.config
    assert type(config) is fake_npu("npu_config").NPURunConfig
    assert isinstance(config, tf.estimator.RunConfig)
    assert config.iterations_per_loop == 7
    assert config._precision_mode == precision_mode
    # Explicit steps: NPURunConfig's own defaults (summaries off, checkpoints every 100) differ
    # from RunConfig's.
    assert (config.save_checkpoints_steps, config.save_summary_steps) == (21, 7)
    assert (config.keep_checkpoint_max, config.log_step_count_steps) == (3, 14)
    assert (config.tf_random_seed, config.model_dir) == (5, str(tmp_path))


def test_factory_rejects_a_bad_precision_mode_before_touching_npu(fake_npu, tmp_path):
    with pytest.raises(ValueError, match="npu_precision_mode must be one of"):
        estimator_factory.build_estimator(unused_model_fn, str(tmp_path), device="npu",
                                          npu_precision_mode="fp16")
    assert NPU_PACKAGE + "npu_config" not in sys.modules


@pytest.mark.parametrize("rank_size", [1, 2])
@pytest.mark.parametrize("precision_mode", sorted(LOSS_SCALED))
def test_optimizer_wrapper(fake_npu, monkeypatch, precision_mode, rank_size):
    monkeypatch.setenv("RANK_ID", "0")
    monkeypatch.setenv("RANK_SIZE", str(rank_size))
    wrap = estimator_factory.optimizer_wrapper("npu", precision_mode)
    with tf.Graph().as_default():
        base = tf.train.MomentumOptimizer(0.1, momentum=0.9)
        wrapped = wrap(base)
    expected = ((["NPULossScaleOptimizer"] if LOSS_SCALED[precision_mode] else [])
                + (["NPUDistributedOptimizer"] if rank_size == 2 else []) + ["MomentumOptimizer"])
    assert optimizer_chain(wrapped) == expected
    managers = fake_npu("npu_loss_scale_manager").CREATED
    if LOSS_SCALED[precision_mode]:
        (manager,) = managers
        assert type(manager).__name__ == "ExponentialUpdateLossScaleManager"
        assert manager.arguments == {"init_loss_scale": 2 ** 32, "incr_every_n_steps": 1000,
                                     "decr_every_n_nan_or_inf": 2, "incr_ratio": 2,
                                     "decr_ratio": 0.5}
        assert wrapped._loss_scale_manager is manager
        assert wrapped._is_distributed == (rank_size == 2)
    else:
        assert managers == []


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_no_optimizer_wrapper_off_npu(device):
    assert estimator_factory.optimizer_wrapper(device) is None


def test_npu_training_goes_through_the_loss_scaler_and_matches_cpu(fake_npu, records, tmp_path,
                                                                  parse_flags):
    """--device=npu through estimator_main: six steps through NPUEstimator and the loss scaler.

    Scaling the loss by 2**32 and the gradients back is exact (a power of two), so the weights
    equal those of the same run on the CPU.
    """
    checkpoints = {}
    for device in ("cpu", "npu"):
        model_dir = str(tmp_path / device)
        # No random flips: a stateful RNG in a parallel map is not repeatable from run to run.
        parse_flags(train_args(records, model_dir, f"--device={device}", "--train_steps=6",
                               "--iterations_per_loop=3", "--save_checkpoints_steps=3",
                               "--norandom_flip"))
        estimator_main.main(["estimator_main.py"])
        checkpoints[device] = tf.train.latest_checkpoint(model_dir)
        if device == "cpu":
            assert loaded_npu_modules() == []

    (estimator,) = fake_npu("npu_estimator").CREATED
    assert estimator.config.iterations_per_loop == 3
    assert estimator.config._precision_mode == "allow_mix_precision"
    assert fake_npu("npu_estimator").MODEL_FN_MODES == [tf.estimator.ModeKeys.TRAIN]
    calls = [name for name, _ in fake_npu("npu_loss_scale_optimizer").CALLS]
    assert calls == ["__init__", "compute_gradients", "apply_gradients"]

    npu = checkpoints["npu"]
    assert npu == os.path.join(str(tmp_path / "npu"), "model.ckpt-6")
    # The manager's state is in the checkpoint (found by name, wherever the adapter scopes it):
    # six finite steps at the initial scale.
    cpu_names = {name for name, _ in tf.train.list_variables(checkpoints["cpu"])}
    npu_names = {name for name, _ in tf.train.list_variables(npu)}
    state = {name.split("/")[-1]: name for name in npu_names - cpu_names}
    assert sorted(state) == ["bad_steps", "good_steps", "loss_scale"]
    assert tf.train.load_variable(npu, state["good_steps"]) == 6
    assert tf.train.load_variable(npu, state["bad_steps"]) == 0
    assert tf.train.load_variable(npu, state["loss_scale"]) == 2.0 ** 32
    assert tf.train.load_variable(npu, "global_step") == 6
    for name in sorted(cpu_names):
        np.testing.assert_allclose(tf.train.load_variable(npu, name),
                                   tf.train.load_variable(checkpoints["cpu"], name),
                                   rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("entry", ["build_estimator", "optimizer_wrapper", "load_npu_api"])
def test_without_the_adapter_npu_fails_naming_both_packages(no_npu, tmp_path, entry):
    calls = {
        "build_estimator": lambda: estimator_factory.build_estimator(
            unused_model_fn, str(tmp_path), device="npu"),
        "optimizer_wrapper": lambda: estimator_factory.optimizer_wrapper("npu"),
        "load_npu_api": estimator_factory.load_npu_api,
    }
    with pytest.raises(estimator_factory.DeviceUnavailableError) as info:
        calls[entry]()
    message = str(info.value)
    assert "npu_bridge" in message and "npu_device" in message
    assert "\n" not in message


def test_without_the_adapter_the_cli_stops_before_writing(no_npu, records, tmp_path,
                                                         parse_flags):
    model_dir = tmp_path / "run"
    parse_flags(train_args(records, model_dir, "--device=npu", "--train_steps=2"))
    with pytest.raises(app.UsageError) as info:
        estimator_main.main(["estimator_main.py"])
    message = str(info.value)
    assert "--device=npu needs" in message and "npu_bridge" in message
    assert "npu_device" in message and "\n" not in message
    assert not model_dir.exists()


ADAPTER_CLASSES = {"npu_config": "NPURunConfig", "npu_estimator": "NPUEstimator",
                   "npu_optimizer": "NPUDistributedOptimizer",
                   "npu_loss_scale_optimizer": "NPULossScaleOptimizer",
                   "npu_loss_scale_manager": "ExponentialUpdateLossScaleManager"}


def write_tf2_adapter(root):
    """A package laid out as CANN's TF 2.x adapter: ``npu_device.compat.v1.estimator.npu.*``
    are submodules (not attributes until imported), usable only after ``enable_v1()``."""
    package = root / "npu_device"
    npu = package / "compat" / "v1" / "estimator" / "npu"
    npu.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "compat" / "__init__.py").write_text(
        "ENABLED = []\n\n\ndef enable_v1():\n    ENABLED.append(True)\n")
    for folder in (package / "compat" / "v1", npu.parent, npu):
        (folder / "__init__.py").write_text("")
    for module, name in ADAPTER_CLASSES.items():
        (npu / (module + ".py")).write_text(
            "from npu_device.compat import ENABLED\n\nif not ENABLED:\n"
            "    raise ImportError('call npu_device.compat.enable_v1() first')\n\n\n"
            f"class {name}:\n    pass\n")


def test_tf2_adapter_is_used_after_enable_v1(no_npu, monkeypatch, tmp_path):
    """CANN's TF 2.x adapter: the same classes under npu_device.compat.v1, after enable_v1(),
    each module imported by its full dotted path."""
    write_tf2_adapter(tmp_path)
    monkeypatch.delitem(sys.modules, "npu_device")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        api = estimator_factory.load_npu_api()
    finally:
        forget_npu_modules()
    assert [cls.__name__ for cls in api] == [
        "NPURunConfig", "NPUEstimator", "NPUDistributedOptimizer", "NPULossScaleOptimizer",
        "ExponentialUpdateLossScaleManager"]
    assert all(cls.__module__.startswith("npu_device.compat.v1.estimator.npu.") for cls in api)


def test_cpu_never_imports_npu_bridge(fake_npu, records, tmp_path, parse_flags):
    """With the fake importable, nothing on the CPU path imports it."""
    assert estimator_factory.optimizer_wrapper("cpu") is None
    estimator = estimator_factory.build_estimator(unused_model_fn, str(tmp_path / "factory"))
    assert type(estimator) is tf.estimator.Estimator
    params = build_params(parse_flags(
        train_args(records, tmp_path / "run", "--device=cpu", "--train_steps=2")))
    builders.build_estimator(params)
    model_fn = builders.build_model_fn(params)
    with tf.Graph().as_default():
        images = tf.zeros([8, SIZE, SIZE, 3])
        spec = model_fn({"image": images}, tf.range(8) % 4, tf.estimator.ModeKeys.TRAIN)
        assert spec.train_op is not None
    assert loaded_npu_modules() == []


@pytest.fixture(scope="module")
def pair_records(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("pairs"))
    rh.write_pair_records(directory, num_pairs=10, size=SIZE, n_folds=2)
    return directory


def test_the_fake_refuses_what_the_device_refuses(fake_npu, records, pair_records, tmp_path,
                                                  parse_flags):
    """A py_func in the graph, or a hook that fetches device tensors: the NPU estimator fails
    (the same model_fn as on the CPU, with the verification metric and logging hooks)."""
    params = build_params(parse_flags(train_args(
        records, tmp_path / "run", "--device=cpu", "--train_steps=2",
        "--mode=train_and_evaluate", f"--eval_records={pair_records}")))
    cpu_model_fn = builders.build_model_fn(params)
    api = estimator_factory.load_npu_api()
    config = api.NPURunConfig(model_dir=str(tmp_path / "npu"), iterations_per_loop=1)
    estimator = api.NPUEstimator(model_fn=cpu_model_fn, model_dir=str(tmp_path / "npu"),
                                 config=config)
    with pytest.raises(RuntimeError, match="LoggingTensorHook fetches device tensors"):
        estimator.train(builders.train_input_fn(params), max_steps=1)
    with pytest.raises(RuntimeError, match="PyFunc"):
        estimator.evaluate(builders.eval_input_fn(params))


def test_npu_train_and_evaluate_verifies_on_the_host(fake_npu, records, pair_records, tmp_path,
                                                     parse_flags):
    """--device=npu: the device graphs hold no py_func and no tensor-fetching hook; the
    verification runs on the host from PREDICT outputs and equals the CPU's EVAL metric."""
    model_dir = tmp_path / "npu"
    parse_flags(train_args(records, model_dir, "--device=npu", "--mode=train_and_evaluate",
                           f"--eval_records={pair_records}", "--train_steps=4",
                           "--iterations_per_loop=2", "--save_checkpoints_steps=2",
                           "--eval_batch_size=4", "--progress"))
    estimator_main.main(["estimator_main.py"])
    modes = fake_npu("npu_estimator").MODEL_FN_MODES
    assert modes.count(tf.estimator.ModeKeys.TRAIN) == 2
    assert modes.count(tf.estimator.ModeKeys.PREDICT) >= 2  # one verification per checkpoint
    assert tf.estimator.ModeKeys.EVAL not in modes
    with open(str(model_dir / "eval" / "report.json")) as fh:
        host = json.load(fh)
    assert host["global_step"] == 4
    assert os.listdir(str(model_dir / "export" / "best"))

    forget_npu_modules()
    parse_flags(train_args(records, model_dir, "--device=cpu", "--mode=evaluate",
                           f"--eval_records={pair_records}", "--eval_batch_size=4"))
    cpu_dir = tmp_path / "cpu_eval"
    os.makedirs(str(cpu_dir))
    params = build_params(estimator_main.flag_values())
    result = evaluation.evaluate_checkpoint(builders.build_estimator(params), params)
    assert result["lfw/accuracy"] == pytest.approx(host["accuracy"], abs=1e-6)
    assert result["lfw/auc"] == pytest.approx(host["auc"], abs=1e-5)


def test_ascend_epochs_count_the_data_once_across_ranks(fake_npu, records, tmp_path, parse_flags,
                                                        monkeypatch):
    """8 ranks each read 1/8 of the data with a per-device batch: an epoch is 1/8 the steps."""
    steps = {}
    for rank_size in (1, 8):
        monkeypatch.setenv("RANK_SIZE", str(rank_size))
        monkeypatch.setenv("RANK_ID", "0")
        params = build_params(parse_flags(train_args(
            records, tmp_path / "run", "--device=npu", "--train_epochs=16",
            "--iterations_per_loop=1", "--batch_size=2")))
        steps[rank_size] = params["train_steps"]
    assert steps == {1: 16 * 32 // 2, 8: 16 * 32 // (2 * 8)}


def test_ascend_steps_round_up_to_whole_device_loops(fake_npu, records, tmp_path, parse_flags):
    params = build_params(parse_flags(train_args(
        records, tmp_path / "run", "--device=npu", "--train_steps=250",
        "--iterations_per_loop=100", "--save_checkpoints_steps=150")))
    assert params["train_steps"] == 300
    assert params["save_checkpoints_steps"] == 200
