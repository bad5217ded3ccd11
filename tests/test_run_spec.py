"""The run spec (training/run_spec.py): frozen, typed, validated once, saved as params.json and
read back, older params.json included; head options flow from their declaration alone."""

import json
import math
import os

import pytest
import tensorflow.compat.v1 as tf
from absl import app, flags

import estimator_main
from evaluation import report_table
from model import config as model_config
from model import distillation, heads
from runtime.config import RuntimeConfig
from training import params as params_module
from training import run_record, run_spec, runner
from training.run_spec import ParamsError, RunSpec


def _train_flags(records, model_dir, *extra):
    return [f"--train_records={records}", f"--model_dir={model_dir}", "--mode=train",
            "--backbone=tiny", "--image_size=32", "--embedding_size=16", "--batch_size=8",
            "--train_steps=2", "--save_checkpoints_steps=2", "--gamma=32", "--noprogress",
            *extra]


@pytest.fixture
def spec(small_records, tmp_path, parse_flags):
    return params_module.build_params(parse_flags(_train_flags(small_records, tmp_path / "run")))


# A params.json as the code before the run spec wrote it (a distillation run, which records
# distill_center and teacher_mean), paths aside.
TODAYS_PARAMS = {
    "adaface_h": None, "adaface_t_alpha": None, "allow_transform_mismatch": False,
    "backbone": "tiny", "batch_size": 8, "best_metric": "lfw/accuracy", "brightness_delta": 0.0,
    "check_finite_loss": True, "checkpoint_path": None, "class_weight": 1.0,
    "contrast_delta": 0.0, "data_url": None, "decay_boundaries": [0.5, 0.7, 0.9],
    "decay_factor": 0.1, "device": "cpu", "distill_center": True, "distill_loss": "cosine",
    "distill_weight": 0.5, "distribution": "none", "dropout_rate": 0.0, "embedding_size": 16,
    "eval_batch_size": 4, "eval_flip": True, "eval_protocol": "verification",
    "eval_records": "/data/pairs",
    "eval_sets": [{"name": "lfw", "num_folds": 2, "num_pairs": 10, "records": "/data/pairs"}],
    "eval_sets_named": False, "eval_throttle_secs": 0, "eval_transform": None,
    "exports_to_keep": 3, "far_target": 0.001, "gamma": 32.0, "head": "circle",
    "image_size": 32, "images_per_identity": 0, "inter_op_threads": 0, "intra_op_threads": 0,
    "iterations_per_loop": 100, "keep_checkpoint_max": 5, "learning_rate": 0.1,
    "log_every_n_steps": 100, "magface_lambda_g": None, "magface_lower_margin": None,
    "magface_lower_norm": None, "magface_upper_margin": None, "magface_upper_norm": None,
    "margin": 0.25, "min_crop_scale": 1.0, "mode": "train_and_evaluate",
    "model_dir": "/runs/old", "momentum": 0.9, "npu_precision_mode": "allow_mix_precision",
    "num_classes": 4, "num_cpu_devices": 1, "num_folds": 2, "num_gpus": 0, "num_pairs": 10,
    "num_replicas": 1, "num_train_images": 32, "num_workers": 1, "optimizer": "momentum",
    "pair_weight": 1.0, "partial_fc_rate": 1.0, "precision": "fp32", "progress": False,
    "proxy_partitions": 1, "random_crop": False, "random_flip": True,
    "save_checkpoints_steps": 4, "save_summary_steps": 100, "scale": 64.0,
    "schedule": "piecewise", "seed": 0, "shuffle_buffer": 10000, "subcenter_drop_angle": None,
    "subcenter_drop_step": None, "subcenters": None, "teacher_dim": 3,
    "teacher_mean": [0.5, -0.25, 0.125], "train_epochs": None, "train_records": "/data/train",
    "train_steps": 4, "train_transform": None, "train_url": None, "verify_records": True,
    "warm_start_from": None, "warm_start_vars": "auto", "warmup_steps": 0,
    "weight_decay": 0.0005, "worker_timeout_secs": 600,
}
# An older run still: written before distill_center, teacher_mean, Partial FC, the margin heads'
# options, transforms and named sets existed.
OLDER_KEYS = ("distill_center", "teacher_mean", "partial_fc_rate", "allow_transform_mismatch",
              "train_transform", "eval_transform", "eval_sets", "eval_sets_named", "subcenters",
              "subcenter_drop_step", "subcenter_drop_angle", "adaface_h", "adaface_t_alpha",
              "magface_lambda_g", "magface_lower_margin", "magface_lower_norm",
              "magface_upper_margin", "magface_upper_norm", "num_workers", "worker_timeout_secs")


# ----------------------------------------------------------------------------- frozen, typed
def test_the_spec_is_frozen(spec):
    with pytest.raises(TypeError, match="frozen"):
        spec["batch_size"] = 16
    with pytest.raises(AttributeError, match="frozen"):
        spec.head = None
    with pytest.raises(TypeError, match="frozen"):
        spec["decay_boundaries"].append(0.95)
    with pytest.raises(AttributeError):
        spec.optimization.learning_rate = 1.0  # a namedtuple
    assert spec["batch_size"] == 8 and spec["decay_boundaries"] == (0.5, 0.7, 0.9)
    changed = spec.replace(learning_rate=0.05)
    assert changed.optimization.learning_rate == 0.05 and spec.optimization.learning_rate == 0.1


def test_sections_are_typed_and_hold_every_setting(spec):
    assert isinstance(spec.backbone, model_config.BackboneConfig)
    assert isinstance(spec.runtime, RuntimeConfig)
    assert isinstance(spec.distillation, distillation.DistillationConfig)
    assert isinstance(spec.head, heads.CircleHead) and spec.head.gamma == 32.0
    assert (spec.data.num_classes, spec.input.batch_size, spec.optimization.total_steps) == \
        (4, 8, 2)
    assert spec.checkpoints.save_checkpoints_steps == 2 and spec.protocol.far_target == 1e-3
    assert spec.extra == {}  # every setting belongs to a section
    assert spec.section("head")["gamma"] == 32.0


def test_every_flag_has_a_section_and_its_default_is_the_legacy_one():
    fv = estimator_main.define_flags(flags.FlagValues())
    # Keys older runs may lack take the flag default, except where older code ran otherwise.
    resolved_or_older_behaviour = {"distill_center", "train_steps", "warmup_steps"}
    for name in fv:
        assert run_spec.section_of(name), f"--{name} has no section in training/run_spec.py"
        default = fv[name].default
        if name in run_spec.LEGACY_DEFAULTS and name not in resolved_or_older_behaviour:
            legacy = run_spec.LEGACY_DEFAULTS[name]
            if isinstance(default, list):
                default, legacy = [float(v) for v in default], list(legacy)
            assert legacy == default, name


# ----------------------------------------------------------------------------- params.json
def test_round_trip_through_params_json_is_exact(small_records, small_pairs, tmp_path,
                                                 parse_flags):
    spec = params_module.build_params(parse_flags(_train_flags(
        small_records, tmp_path / "run", "--mode=train_and_evaluate",
        f"--eval_records={small_pairs}", "--head=subcenter_arcface", "--subcenters=2")))
    path = str(tmp_path / "params.json")
    spec.to_json_file(path)
    loaded = RunSpec.from_json_file(path)
    assert loaded == spec and loaded.to_json_dict() == spec.to_json_dict()
    with open(path) as f:
        assert json.load(f) == spec.to_json_dict()
    assert loaded.configs._replace(head=None) == spec.configs._replace(head=None)
    assert loaded.head.config == spec.head.config and loaded.head.subcenters == 2
    assert loaded["eval_sets"][0]["records"] == str(small_pairs)


def test_a_params_json_written_before_the_spec_loads(tmp_path):
    (tmp_path / "params.json").write_text(json.dumps(TODAYS_PARAMS))
    spec = RunSpec.from_run_dir(str(tmp_path))
    written = spec.to_json_dict()
    assert {key: written[key] for key in TODAYS_PARAMS} == TODAYS_PARAMS
    assert written["head_config"] == {"margin": 0.25, "gamma": 32.0, "proxy_partitions": 1}
    assert written["warm_start_scopes"] is None and written["num_eval_images"] is None
    assert spec.distillation == distillation.DistillationConfig(0.5, "cosine", 3,
                                                                (0.5, -0.25, 0.125))
    older = {key: value for key, value in TODAYS_PARAMS.items() if key not in OLDER_KEYS}
    (tmp_path / "params.json").write_text(json.dumps(older))
    spec = RunSpec.from_run_dir(str(tmp_path))
    # Before --distill_center, the term compared the teacher's vectors as stored.
    assert spec["distill_center"] is False and spec.distillation.teacher_mean is None
    assert spec["partial_fc_rate"] == 1.0 and spec["subcenters"] is None
    assert spec.backbone.image_size == 32 and spec.head.margin == 0.25


@pytest.mark.parametrize("change,message", [
    ({"backbone": None}, "has no 'backbone'"),
    ({"head": "sphereface"}, "unknown head 'sphereface'"),
    ({"num_classes": 0}, "num_classes must be a positive integer"),
])
def test_an_unusable_params_json_fails_in_one_line_saying_what_to_do(tmp_path, change,
                                                                    message):
    (tmp_path / "params.json").write_text(json.dumps(dict(TODAYS_PARAMS, **change)))
    with pytest.raises(ParamsError, match=message) as info:
        RunSpec.from_run_dir(str(tmp_path))
    assert "\n" not in str(info.value) and "--flagfile=MODEL_DIR/flags.txt" in str(info.value)


def test_export_of_a_run_with_an_unusable_params_json_is_one_line(tmp_path, parse_flags):
    (tmp_path / "params.json").write_text(json.dumps(dict(TODAYS_PARAMS, head="sphereface")))
    parse_flags(["--mode=export", f"--model_dir={tmp_path}"])
    with pytest.raises(app.UsageError, match="unknown head 'sphereface'") as info:
        estimator_main.main(["estimator_main.py"])
    assert "\n" not in str(info.value) and "--flagfile" in str(info.value)


@pytest.mark.parametrize("change,message", [
    ({"far_target": 2.0}, r"--far_target must be in \(0, 1\), got 2.0"),
    ({"save_checkpoints_steps": 0}, "--save_checkpoints_steps must be positive"),
    ({"warm_start_vars": "head"}, "--warm_start_vars must be one of auto, backbone, all"),
    ({"learning_rate": -1.0}, "learning_rate must be positive"),
    ({"mode": "predict"}, "--mode must be one of"),
    ({"margin": 1.5}, r"--head=circle: margin must be in \[0.0, 1.0\)"),
])
def test_a_bad_value_fails_in_one_line_at_construction(spec, change, message):
    with pytest.raises(ParamsError, match=message) as info:
        spec.replace(**change)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- head options
class ShiftedCosFaceHead(heads.CosFaceHead):
    """A head of the test: CosFace whose non-target logits are shifted by a declared option."""

    name = "test_shifted_cosface"
    options = (heads.HeadOption("test_shift", 0.125, heads.number(0.0, 1.0),
                                "shift of the other classes' cosines"),)

    def margin_logits(self, cos, labels):
        return super().margin_logits(cos, labels) - self.scale * self.test_shift


def test_a_declared_head_option_reaches_flag_params_head_and_report(
        small_records, tmp_path, monkeypatch):
    """The declaration (and the registry line) is the only edit: the flag, the forwarding, the
    head, params.json and the report table follow."""
    monkeypatch.setitem(heads.HEADS, ShiftedCosFaceHead.name, ShiftedCosFaceHead)
    fv = estimator_main.define_flags(flags.FlagValues())
    assert "test_shifted_cosface: shift of the other classes' cosines (default 0.125)" in \
        fv["test_shift"].help
    runs = []
    for shift in (None, 0.5):
        model_dir = tmp_path / f"run{shift}"
        argv = _train_flags(small_records, model_dir, "--head=test_shifted_cosface")
        fv(["estimator_main.py"] + argv + ([f"--test_shift={shift}"] if shift else []))
        spec = params_module.build_params({name: fv[name].value for name in fv})
        fv.unparse_flags()
        expected = shift or 0.125
        assert spec["test_shift"] == spec.head.test_shift == expected
        assert spec.head.config["test_shift"] == expected
        assert run_spec.section_of("test_shift") == "head"
        with tf.Graph().as_default():
            logits = spec.head.margin_logits(tf.constant([[0.5, 0.25]]), tf.constant([0]))
            with tf.Session() as sess:
                other = sess.run(logits)[0, 1]
        assert math.isclose(other, 64.0 * (0.25 - expected), rel_tol=1e-6)
        run_record.record_run(spec, "")
        (model_dir / "eval").mkdir()
        (model_dir / "eval" / "report.json").write_text(json.dumps(
            {"accuracy": 0.9, "accuracy_std": 0.01, "val": 0.5, "auc": 0.95, "eer": 0.1,
             "global_step": 2}))
        runs.append(report_table.load_run(str(model_dir)))
    rows = report_table.summarize(runs)
    assert [(row["margin"], row["gamma"]) for row in rows] == [(0.35, 64.0)] * 2
    table = report_table.markdown_table(rows)
    assert "test_shift=0.125" in table and "test_shift=0.5" in table
    # Another head's option is refused, not ignored.
    fv(["estimator_main.py"] + _train_flags(small_records, tmp_path / "x", "--head=arcface",
                                            "--test_shift=0.5"))
    with pytest.raises(ParamsError, match="--test_shift is an option of another head"):
        params_module.build_params({name: fv[name].value for name in fv})


def test_evaluate_and_export_take_a_declared_option_from_the_record(monkeypatch):
    """A head option shapes the network (--subcenters): evaluate/export use the recorded one,
    and a contradicting flag is refused."""
    monkeypatch.setitem(heads.HEADS, ShiftedCosFaceHead.name, ShiftedCosFaceHead)
    recorded = {"head": ShiftedCosFaceHead.name, "test_shift": 0.5, "subcenters": None}
    values = {"mode": "evaluate", "head": "circle", "test_shift": None, "subcenters": None}
    applied = run_record.apply_recorded_settings(values, set(), recorded, "m")
    assert (applied["head"], applied["test_shift"]) == (ShiftedCosFaceHead.name, 0.5)
    with pytest.raises(run_record.RecordMismatchError, match="--test_shift=0.25 contradicts"):
        run_record.apply_recorded_settings(dict(values, test_shift=0.25), {"test_shift"},
                                           recorded, "m")


# ----------------------------------------------------------------------------- built once
def test_the_configs_are_built_once_per_run(small_records, tmp_path, parse_flags, monkeypatch):
    """A training run builds its configs (and its RuntimeConfig) once, in build_params; an
    export builds the recorded run's spec and its own (before the spec: 3 and 2 builds of the
    configs, 6 and 5 RuntimeConfigs counting the estimator factory's two). The export runs with
    the recorded head, --subcenters=2 included."""
    calls = {"build_configs": 0, "runtime_config": 0}

    def counting(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    for name in calls:
        monkeypatch.setattr(run_spec, name, counting(name, getattr(run_spec, name)))
    specs = []
    run_mode = runner.run_mode
    monkeypatch.setattr(runner, "run_mode", lambda spec: run_mode(specs.append(spec) or spec))
    model_dir = tmp_path / "run"
    parse_flags(_train_flags(small_records, model_dir, "--head=subcenter_arcface",
                             "--subcenters=2"))
    estimator_main.main(["estimator_main.py"])
    assert calls == {"build_configs": 1, "runtime_config": 1}
    assert tf.train.latest_checkpoint(str(model_dir))
    calls.update(build_configs=0, runtime_config=0)
    parse_flags(["--mode=export", f"--model_dir={model_dir}"])
    estimator_main.main(["estimator_main.py"])
    assert calls == {"build_configs": 2, "runtime_config": 2}
    assert os.listdir(str(model_dir / "export" / "manual"))
    assert [spec.head.subcenters for spec in specs] == [2, 2]
