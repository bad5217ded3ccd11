"""scripts/model_recipe.sh's commands (make model), without data or training: a stand-in Python
logs them. Checks which split, records, teacher and flags each step uses, and that the steps
can be run alone (PREPARE_ONLY, SKIP_PREPARE) and extra flags reach estimator_main."""

import os
import shutil
import subprocess

from tests import _folder_fixtures as ff
from tests.recipe_stand_in import commands_of, run_recipe_script


def run_recipe(tmp_path, *flags, **env_vars):
    out, lines = run_recipe_script("model_recipe.sh", tmp_path, *flags, **env_vars)
    return out, out / "fold10", lines


def test_recipe_aligns_distils_from_dlib_and_trains_the_small_student(tmp_path):
    out, split, lines = run_recipe(tmp_path, "--train_steps=50")
    (holdout,) = commands_of(lines, "data_tools.lfw_holdout")
    # Fold 10 stays the holdout; every other identity, one-image people too, is trained on.
    assert "--holdout_folds=10" in holdout and "--min_images=1" in holdout
    assert f"--lfw_dir={out}/lfw_gray250" in holdout
    train_records, pair_records = commands_of(lines, "data_tools/make_tfrecords.py")
    assert f"--input_dir={split}/train" in train_records
    assert "--align --min_face_size=60 --image_size=112" in train_records
    assert train_records.endswith("--teacher=dlib")
    assert f"--output_dir={split}/records_distill/train" in train_records
    assert f"--pairs={split}/pairs.txt" in pair_records and "--teacher" not in pair_records
    assert "--align" in pair_records and pair_records.endswith("--allow_missing_pairs")
    (train,) = commands_of(lines, "estimator_main.py")
    assert "--flagfile=configs/face_small.flags" in train
    assert f"--train_records={split}/records_distill/train" in train
    assert f"--eval_records={split}/records_distill/pairs" in train
    assert f"--model_dir={split}/models/face_small" in train and train.endswith("--train_steps=50")
    (report,) = commands_of(lines, "evaluation.compare_reports")
    assert report.endswith(f"{split}/models/face_small")


def test_prepare_only_and_skip_prepare_split_the_recipe(tmp_path):
    _, _, lines = run_recipe(tmp_path, PREPARE_ONLY="1")
    assert len(commands_of(lines, "data_tools/make_tfrecords.py")) == 2
    assert not commands_of(lines, "estimator_main.py")
    (tmp_path / "commands.log").unlink()
    for path in ("data", "out", "python"):
        target = tmp_path / path
        if target.is_dir():
            shutil.rmtree(str(target))
        elif target.exists():
            target.unlink()
    _, split, lines = run_recipe(tmp_path, SKIP_PREPARE="1", RUN_NAME="lambda5")
    assert not commands_of(lines, "data_tools/make_tfrecords.py")
    (train,) = commands_of(lines, "estimator_main.py")
    assert f"--model_dir={split}/models/lambda5" in train


def test_recipe_refuses_without_the_archive(tmp_path):
    env = dict(os.environ, LFW_DATA=str(tmp_path / "nothing"))
    proc = subprocess.run(["bash", os.path.join(ff.REPO_ROOT, "scripts", "model_recipe.sh"),
                           str(tmp_path / "out")], cwd=ff.REPO_ROOT, env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "set LFW_DATA" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_teacher_cache_is_reused_not_overwritten(tmp_path):
    cache_dir = tmp_path / "earlier"
    cache_dir.mkdir()
    (cache_dir / ".teacher-0123456789abcdef.jsonl").write_text('{"sha256": "a"}\n')
    out = tmp_path / "out" / "fold10" / "records_distill" / "train"
    out.mkdir(parents=True)
    (out / ".teacher-fedcba9876543210.jsonl").write_text("kept\n")
    (cache_dir / ".teacher-fedcba9876543210.jsonl").write_text("not copied over\n")
    data = tmp_path / "data"
    data.mkdir()
    for name in ("lfw_a_gray250.tar.gz", "lfw_pairs.txt"):
        (data / name).write_bytes(b"")
    (tmp_path / "out" / "lfw_gray250").mkdir()
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    env = dict(os.environ, LFW_DATA=str(data), PYTHON=str(python), PREPARE_ONLY="1",
               TEACHER_CACHE=str(cache_dir))
    subprocess.run(["bash", os.path.join(ff.REPO_ROOT, "scripts", "model_recipe.sh"),
                    str(tmp_path / "out")], cwd=ff.REPO_ROOT, env=env, check=True,
                   capture_output=True)
    assert (out / ".teacher-0123456789abcdef.jsonl").read_text() == '{"sha256": "a"}\n'
    assert (out / ".teacher-fedcba9876543210.jsonl").read_text() == "kept\n"
