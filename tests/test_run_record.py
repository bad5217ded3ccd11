"""The run record: evaluate/export use the run's recorded settings, refuse a contradicting flag
in one line, never rewrite the record, and leave no temp-* export behind; flags.txt holds the
program's flags only."""

import json
import os
import shutil

import pytest

from tests.conftest import RECORDED_RUN_TRANSFORM as TRANSFORM
from tests.test_estimator_main import check, printed_path, run_cli
from training import run_record


@pytest.fixture
def run(recorded_run):
    """The shared training run (tests/conftest.py): its records' root and model_dir."""
    return recorded_run[0], recorded_run[1]


def copy_run(model_dir, destination):
    shutil.copytree(model_dir, str(destination),
                    ignore=shutil.ignore_patterns("export", "frozen", "eval"))
    return str(destination)


def read(*parts):
    with open(os.path.join(*parts), "rb") as f:
        return f.read()


def test_flags_txt_holds_the_programs_flags_only(run):
    lines = read(run[1], "flags.txt").decode().splitlines()
    names = {line.split("=")[0].lstrip("-") for line in lines}
    assert {"backbone", "mode", "train_steps", "image_size"} <= names
    # absl's and pytest's own flags are not the run's settings.
    assert not names & {"test_tmpdir", "stderrthreshold", "logtostderr", "flagfile",
                        "verbosity", "only_check_args"}, names


def test_export_with_no_model_flags_uses_the_recorded_network(run, tmp_path):
    model_dir = copy_run(run[1], tmp_path / "run")
    record = {name: read(model_dir, name) for name in ("flags.txt", "params.json")}
    proc = check(run_cli("--mode=export", f"--model_dir={model_dir}"))
    saved_model = printed_path(proc.stdout, "SavedModel")
    assert os.path.isfile(os.path.join(saved_model, "saved_model.pb"))
    # The transform of the run's evaluation records travels with the export, without them.
    stored = json.loads(read(saved_model, "assets.extra", "transform.json"))
    assert stored == json.loads(record["params.json"])["eval_transform"] == TRANSFORM
    for name, content in record.items():
        assert read(model_dir, name) == content, f"{name} was rewritten by --mode=export"
    modes = [json.loads(line)["mode"] for line in read(model_dir, "runs.jsonl").splitlines()]
    assert modes == ["train_and_evaluate", "export"]


def test_evaluate_without_eval_records_uses_the_recorded_ones(run, tmp_path):
    model_dir = copy_run(run[1], tmp_path / "run")
    proc = check(run_cli("--mode=evaluate", f"--model_dir={model_dir}"))
    assert "verification at step 20: accuracy" in proc.stdout


@pytest.mark.parametrize("mode", ["export", "evaluate"])
def test_a_contradicting_flag_is_refused_in_one_line_naming_both_values(run, tmp_path, mode):
    model_dir = copy_run(run[1], tmp_path / "run")
    record = {name: read(model_dir, name) for name in ("flags.txt", "params.json", "runs.jsonl")}
    proc = check(run_cli(f"--mode={mode}", f"--model_dir={model_dir}", "--backbone=iresnet18",
                         "--noverify_records"), returncode=1)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) <= 2, proc.stderr
    assert "--backbone=iresnet18 contradicts the run's recorded --backbone=tiny" in lines[0]
    for name, content in record.items():
        assert read(model_dir, name) == content
    assert not os.path.exists(os.path.join(model_dir, "export"))


def test_a_failed_export_leaves_no_temporary_directory(run, tmp_path):
    """Without a record to read from, another network fails to restore: one line, no temp-*."""
    model_dir = copy_run(run[1], tmp_path / "run")
    os.remove(os.path.join(model_dir, "params.json"))
    proc = check(run_cli("--mode=export", f"--model_dir={model_dir}",
                         f"--train_records={run[0] / 'train'}", "--backbone=iresnet_lite",
                         "--embedding_size=16"), returncode=1)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "is not this network" in proc.stderr
    manual = os.path.join(model_dir, "export", "manual")
    assert not os.path.isdir(manual) or not os.listdir(manual), os.listdir(manual)


def test_recorded_settings_fill_only_what_was_not_given():
    recorded = {"backbone": "tiny", "margin": 0.25, "eval_flip": False, "image_size": 32}
    values = {"mode": "export", "backbone": "iresnet50", "margin": 0.25, "eval_flip": True,
              "image_size": None, "eval_records": None}
    filled = run_record.apply_recorded_settings(values, {"margin", "eval_flip"}, recorded, "m")
    assert filled["backbone"] == "tiny" and filled["image_size"] == 32
    assert filled["eval_flip"] is True  # an evaluation setting may change
    with pytest.raises(run_record.RecordMismatchError, match=r"--margin=0.3 contradicts .* "
                       r"--margin=0.25 \(m/params.json\)"):
        run_record.apply_recorded_settings(dict(values, margin=0.3), {"margin"}, recorded, "m")
