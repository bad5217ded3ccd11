"""scripts/model_recipe.sh's commands (make model), without data or training: a stand-in Python
logs them. Checks which split, records, teacher and flags each step uses, and that the steps
can be run alone (PREPARE_ONLY, SKIP_PREPARE) and extra flags reach estimator_main."""

import os
import shutil
import subprocess

from tests import _folder_fixtures as ff
from tests.recipe_stand_in import commands_of, run_recipe_script


def run_recipe(tmp_path, *flags, **env_vars):
    env_vars.setdefault("RELEASE", "0")  # the release stage has its own test below
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
    # dlib on the raw frames and on their mirror images (mirror-consistent targets).
    assert train_records.endswith("--teacher=dlib --teacher_flip")
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


def _fake_run(tmp_path):
    """A training run's directory with two exported SavedModels (the newest is the final
    checkpoint's) and the split's fold-10 pairs, as the release stage finds them."""
    run = tmp_path / "run"
    for stamp in ("1700000000", "1700000500"):
        saved_model = run / "export" / "manual" / stamp
        (saved_model / "variables").mkdir(parents=True)
        (saved_model / "assets.extra").mkdir()
        (saved_model / "saved_model.pb").write_text(stamp)
    split = tmp_path / "fold10"
    (split / "release" / "student_raw_frames").mkdir(parents=True)
    (split / "release" / "student_raw_frames" / "report.json").write_text('{"accuracy": 1}')
    return run, split


def test_release_stage_ships_the_final_checkpoint_and_measures_it(tmp_path):
    run, split = _fake_run(tmp_path)
    release = tmp_path / "models" / "face_small"
    release.mkdir(parents=True)
    (release / "MODEL_CARD.md").write_text("card")
    (release / "old_file").write_text("gone after the release")
    log = tmp_path / "commands.log"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\n')
    python.chmod(0o755)
    frames = tmp_path / "lfw_gray250"
    (frames / "Aaron_Eckhart").mkdir(parents=True)
    subprocess.run(["bash", os.path.join(ff.REPO_ROOT, "scripts", "model_release.sh"), str(run),
                    str(split), str(frames), str(release)], cwd=ff.REPO_ROOT,
                   env=dict(os.environ, PYTHON=str(python)), check=True, capture_output=True)
    lines = log.read_text().splitlines()
    (export,) = commands_of(lines, "estimator_main.py")
    assert export == f"estimator_main.py --mode=export --model_dir={run}"
    # The final checkpoint's SavedModel, never a pick on the holdout; the card survives.
    assert (release / "saved_model.pb").read_text() == "1700000500"
    assert (release / "MODEL_CARD.md").read_text() == "card"
    assert not (release / "old_file").exists() and not (tmp_path / "models" /
                                                         "face_small.staging").exists()
    assert (release / "assets.extra" / "report.json").read_text() == '{"accuracy": 1}'
    staged = f"{release}.staging"
    (embed,) = commands_of(lines, "export.embed")
    assert f"--model {staged} --align --pairs {split}/pairs.txt --image_dir {frames}" in embed
    (teacher,) = commands_of(lines, "scripts/teacher_pairs.py")
    assert "--teacher=dlib" in teacher and f"--pairs={split}/pairs.txt" in teacher
    (convert,) = commands_of(lines, "export.convert")
    assert f"--onnx={staged}/model.onnx" in convert and "--quantize=int8" in convert
    assert f"--check_records={split}/records_distill/pairs" in convert
    (speed,) = commands_of(lines, "benchmarks.student_vs_teacher")
    assert f"--photos {frames}/Aaron_Eckhart" in speed
