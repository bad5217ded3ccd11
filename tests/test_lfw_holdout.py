"""The fold-holdout split: no held-out identity reaches training, test pairs keep LFW's layout."""

import json
import os

import pytest
from PIL import Image

from data_tools import conversion, lfw_holdout
from data_tools import pairs as pairs_lib

# Three folds of 2 matched + 2 mismatched pairs over identities that never cross folds.
FOLDS = [
    [("A", 1, "A", 2), ("B", 1, "B", 3), ("A", 1, "C", 1), ("B", 2, "D", 1)],
    [("E", 1, "E", 2), ("F", 1, "F", 2), ("E", 2, "G", 1), ("F", 1, "H", 1)],
    [("I", 1, "I", 2), ("J", 1, "J", 2), ("I", 1, "K", 1), ("J", 2, "L", 1)],
]
IMAGES = {"A": 2, "B": 3, "C": 1, "D": 1, "E": 2, "F": 2, "G": 1, "H": 1, "I": 2, "J": 2,
          "K": 1, "L": 1, "M": 4, "N": 1, "O": 2}


@pytest.fixture
def lfw(tmp_path):
    root = tmp_path / "lfw"
    for name, count in IMAGES.items():
        (root / name).mkdir(parents=True)
        for index in range(1, count + 1):
            (root / name / ("%s_%04d.jpg" % (name, index))).write_bytes(b"not read")
    pairs_path = tmp_path / "pairs.txt"
    pairs_lib.write_pairs(str(pairs_path), 3, 2, [p for fold in FOLDS for p in fold])
    return str(root), str(pairs_path)


def _split(lfw, tmp_path, folds, **kwargs):
    out = str(tmp_path / "split")
    summary = lfw_holdout.make_split(lfw[0], lfw[1], folds, out, **kwargs)
    return out, summary


def test_training_identities_exclude_the_held_out_fold(lfw, tmp_path):
    out, summary = _split(lfw, tmp_path, [3], num_subfolds=2)
    train = sorted(os.listdir(os.path.join(out, "train")))
    # Fold 3 holds I, J, K, L; of the rest, those with at least 2 images stay.
    assert train == ["A", "B", "E", "F", "M", "O"]
    for name in train:
        link = os.path.join(out, "train", name)
        assert os.path.islink(link)
        assert os.path.realpath(link) == os.path.realpath(os.path.join(lfw[0], name))
    assert summary["train_images"] == 2 + 3 + 2 + 2 + 4 + 2
    assert summary["held_out_identities"] == 4
    assert summary["too_few_images_identities"] == 5  # C, D, G, H, N
    with open(os.path.join(out, lfw_holdout.SPLIT_NAME)) as f:
        assert json.load(f) == summary


def test_min_images_one_keeps_singletons(lfw, tmp_path):
    out, summary = _split(lfw, tmp_path, [1], min_images=1, num_subfolds=2)
    assert sorted(os.listdir(os.path.join(out, "train"))) == sorted(
        set(IMAGES) - {"A", "B", "C", "D"})


def test_test_pairs_are_dealt_into_balanced_subfolds(lfw, tmp_path):
    out, summary = _split(lfw, tmp_path, [2, 3], num_subfolds=2)
    parsed = pairs_lib.read_pairs(os.path.join(out, "pairs.txt"))
    assert (parsed.num_folds, parsed.pairs_per_fold) == (2, 2)
    got = [(p.name1, p.index1, p.name2, p.index2) for p in parsed.pairs]
    # Sub-fold k: the k-th block of matched pairs, then the k-th block of mismatched ones.
    assert got == [FOLDS[1][0], FOLDS[1][1], FOLDS[1][2], FOLDS[1][3],
                   FOLDS[2][0], FOLDS[2][1], FOLDS[2][2], FOLDS[2][3]]
    assert summary["test_pairs"] == 8
    held_out = {n for p in got for n in (p[0], p[2])}
    assert not held_out & set(os.listdir(os.path.join(out, "train")))


def test_one_fold_into_more_subfolds_interleaves(lfw, tmp_path):
    out, _ = _split(lfw, tmp_path, [1], num_subfolds=2)
    parsed = pairs_lib.read_pairs(os.path.join(out, "pairs.txt"))
    assert [p.issame for p in parsed.pairs] == [True, False, True, False]
    assert [p.fold for p in parsed.pairs] == [0, 0, 1, 1]


def test_rerun_replaces_links_of_another_split(lfw, tmp_path):
    out, _ = _split(lfw, tmp_path, [1], num_subfolds=2)
    assert "E" in os.listdir(os.path.join(out, "train"))
    _split(lfw, tmp_path, [2], num_subfolds=2)
    train = set(os.listdir(os.path.join(out, "train")))
    assert "E" not in train and "A" in train


@pytest.mark.parametrize("folds, message", [([4], "out of range"), ([], "at least one")])
def test_bad_folds(lfw, tmp_path, folds, message):
    with pytest.raises(lfw_holdout.HoldoutError, match=message):
        _split(lfw, tmp_path, folds, num_subfolds=2)


def test_subfolds_that_do_not_divide(lfw, tmp_path):
    with pytest.raises(lfw_holdout.HoldoutError, match="cannot make 3 sub-folds"):
        _split(lfw, tmp_path, [1], num_subfolds=3)


def test_wrong_lfw_dir_names_missing_identities(lfw, tmp_path):
    other = tmp_path / "other"
    (other / "Z").mkdir(parents=True)
    with pytest.raises(lfw_holdout.HoldoutError, match="not in"):
        lfw_holdout.make_split(str(other), lfw[1], [1], str(tmp_path / "out"), num_subfolds=2)


def test_refuses_an_output_dir_with_real_files(lfw, tmp_path):
    train = tmp_path / "split" / "train"
    train.mkdir(parents=True)
    (train / "precious.txt").write_text("x")
    with pytest.raises(lfw_holdout.HoldoutError, match="not identity links"):
        _split(lfw, tmp_path, [1], num_subfolds=2)
    assert (train / "precious.txt").exists()


def test_split_converts_to_records(lfw, tmp_path):
    """The links are what make_tfrecords reads: identities come through the symlinks."""
    for name, count in IMAGES.items():
        for index in range(1, count + 1):
            Image.new("L", (40, 40), 10 * index).save(
                os.path.join(lfw[0], name, "%s_%04d.jpg" % (name, index)))
    out, summary = _split(lfw, tmp_path, [3], num_subfolds=2)
    result = conversion.convert_folder(os.path.join(out, "train"),
                                       str(tmp_path / "records"), progress=False)
    assert result["num_classes"] == summary["train_identities"]
    assert result["num_images"] == summary["train_images"]
