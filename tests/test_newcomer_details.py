"""The smaller points of issue 32: Ctrl-C in the converter, a frozen graph given as --model, a
batch larger than the data, camera-named photos for make_pairs, "1 identity", and docs that
name TensorBoard tags the model writes."""

import logging
import os
import re

import numpy as np
import pytest
from PIL import Image

import cli
from data_tools import lfw_names, make_pairs, make_tfrecords
from tests import _folder_fixtures as ff

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ctrl_c_in_the_converter_is_one_line(tmp_path, monkeypatch, capsys):
    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(make_tfrecords, "convert_folder", interrupted)
    status = cli.run_main(make_tfrecords.define_flags, make_tfrecords.main,
                          ["make_tfrecords", f"--input_dir={tmp_path}",
                           f"--output_dir={tmp_path / 'out'}"])
    assert status == 130
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "interrupted" in lines[0] and "re-run the same command to resume" in lines[0]


def test_a_frozen_graph_as_model_says_what_it_is(tmp_path, capsys):
    from export import embed  # noqa: PLC0415

    frozen = tmp_path / "embedding_1.pb"
    frozen.write_bytes(b"\x0a\x00")
    photo = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(str(photo))
    status = cli.run_main(embed.define_flags, embed.main,
                          ["embed", f"--model={frozen}", str(photo)])
    err = capsys.readouterr().err
    assert status == 1
    assert f"{frozen} is a frozen graph (.pb), not a SavedModel" in err
    assert "does not exist" not in err


def test_a_batch_larger_than_the_data_warns(tmp_path, small_records, parse_flags, caplog):
    from training.params import build_params  # noqa: PLC0415

    args = [f"--train_records={small_records}", f"--model_dir={tmp_path / 'run'}",
            "--mode=train", "--backbone=tiny", "--image_size=32", "--embedding_size=16",
            "--train_steps=5"]
    with caplog.at_level(logging.WARNING):
        build_params(parse_flags(args + ["--batch_size=64"]))
    assert "--batch_size=64 is larger than the 32 training images" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build_params(parse_flags(args + ["--batch_size=8"]))
    assert "larger than" not in caplog.text


def camera_tree(root):
    """Four people, photos named by a phone and a camera, one already LFW-named."""
    rng = np.random.RandomState(0)
    names = {"Ann": ["IMG_1001.jpg", "IMG_1002.JPG", "Ann_0002.png"],
             "Bob": ["DSC_0042.jpg", "photo (2).jpg"], "Cid": ["IMG_7.jpg", "IMG_8.jpg"],
             "Dee": ["a.jpg", "b.jpg"]}
    for person, files in names.items():
        os.makedirs(os.path.join(root, person))
        for filename in files:
            Image.fromarray(rng.randint(0, 256, (8, 8), dtype=np.uint8)).save(
                os.path.join(root, person, filename))
    (root / "Ann" / "notes.txt").write_text("not an image")


def test_make_pairs_renames_camera_named_photos(tmp_path, capsys):
    faces = tmp_path / "faces"
    camera_tree(faces)
    args = ["make_pairs", f"--input_dir={faces}", f"--output={tmp_path / 'pairs.txt'}",
            "--num_folds=2"]
    assert cli.run_main(make_pairs.define_flags, make_pairs.main, args) == 1
    assert "--rename does it in place" in capsys.readouterr().err
    assert cli.run_main(make_pairs.define_flags, make_pairs.main, args + ["--rename"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("renamed 8 photo(s)")
    assert sorted(os.listdir(str(faces / "Ann"))) == ["Ann_0001.jpg", "Ann_0002.png",
                                                      "Ann_0003.jpg", "notes.txt"]
    assert sorted(os.listdir(str(faces / "Bob"))) == ["Bob_0001.jpg", "Bob_0002.jpg"]
    log = (faces / lfw_names.LOG_NAME).read_text().splitlines()
    assert "Ann/IMG_1001.jpg\tAnn/Ann_0001.jpg" in log and len(log) == 8
    assert lfw_names.rename_to_lfw(str(faces)) == 0  # idempotent
    assert (tmp_path / "pairs.txt").is_file()


def test_one_identity_is_singular(tmp_path):
    ff.make_face_tree(str(tmp_path / "in"), [2], size=16)
    summary = ff.convert_quietly(tmp_path / "in", tmp_path / "out")
    text = make_tfrecords.format_summary(summary)
    assert text.startswith("2 images of 1 identity -> ")
    assert cli.count(1, "identity", "identities") == "1 identity"
    assert cli.count(3, "pair") == "3 pairs"


def summary_tags():
    tags = set()
    for name in os.listdir(os.path.join(ROOT, "model")):
        if name.endswith(".py"):
            with open(os.path.join(ROOT, "model", name), encoding="utf-8") as fh:
                tags |= set(re.findall(r"tf\.summary\.scalar\(\s*\"([^\"]+)\"", fh.read()))
    return tags


@pytest.mark.parametrize("doc", ["README.md"] + [os.path.join("docs", d) for d in
                                                  sorted(os.listdir(os.path.join(ROOT, "docs")))
                                                  if d.endswith(".md")])
def test_docs_name_tensorboard_tags_that_exist(doc):
    """Backticked names in a sentence about TensorBoard summaries are tags the model writes
    (or evaluation metrics, NAME/metric)."""
    tags = summary_tags()
    assert {"similarity/positive", "loss/head", "learning_rate"} <= tags
    with open(os.path.join(ROOT, doc), encoding="utf-8") as fh:
        text = fh.read()
    for sentence in re.split(r"(?<=[.;])\s", text):
        if "TensorBoard" not in sentence or "summar" not in sentence.lower() and \
                "watch" not in sentence:
            continue
        for name in re.findall(r"`([a-z_]+(?:/[a-z_@.0-9-]+)?)`", sentence):
            if name in ("s_p", "s_n") or ("/" in name and name.split("/")[0] in (
                    "loss", "similarity", "norm")):
                assert name in tags, f"{doc}: {name!r} is not a summary tag ({sentence!r})"


def test_deploying_gives_the_input_size_the_exports_have():
    with open(os.path.join(ROOT, "docs", "DEPLOYING.md"), encoding="utf-8") as fh:
        text = fh.read()
    assert "64 for the LFW recipe" not in text
    # The frozen graph's input is the records' size (training/runner.py freeze_export).
    assert "112 for the LFW recipe" in text
