"""Real LFW-a through the converter (needs ../shared/data; skipped without it).

Known counts (LFW's own documentation): 13,233 images of 5,749 people, 1,680 of whom have two or
more images; View 2 has 10 folds of 300 matched + 300 mismatched pairs.
"""

import collections
import os

import pytest

from data_tools import conversion, manifest, pairs
from tests import _folder_fixtures as ff
from tests import real_lfw

PAIRS = real_lfw.PAIRS

pytestmark = [pytest.mark.slow] + real_lfw.MARKS  # real data: make test-slow


def test_lfw_pairs_file_structure():
    parsed = pairs.read_pairs(PAIRS)
    assert (parsed.num_folds, parsed.pairs_per_fold, len(parsed.pairs)) == (10, 300, 6000)
    per_fold = collections.Counter((p.fold, p.issame) for p in parsed.pairs)
    assert set(per_fold.values()) == {300} and len(per_fold) == 20
    # View 2 folds are identity-disjoint.
    fold_of = {}
    for p in parsed.pairs:
        for name in (p.name1, p.name2):
            assert fold_of.setdefault(name, p.fold) == p.fold, name


def test_all_pairs_resolve(real_lfw_dir):
    parsed = pairs.read_pairs(PAIRS)
    relpaths, kept, missing = pairs.resolve_pairs(parsed, real_lfw_dir)
    assert missing == [] and len(kept) == 6000
    assert len(set(path for two in relpaths for path in two)) == 7701
    assert all(path.endswith(".jpg") for two in relpaths for path in two)


def test_lfw_converts_with_exact_counts(real_lfw_dir, tmp_path):
    out = str(tmp_path / "train")
    summary = conversion.convert_folder(real_lfw_dir, out, num_workers=2, progress=False)
    assert (summary["num_images"], summary["num_classes"], summary["num_skipped"]) == (
        13233, 5749, 0)
    info = manifest.read_manifest(out)
    assert (info["num_images"], info["num_classes"], info["formats"]["as_is"]) == (
        13233, 5749, 13233)
    assert sum(shard["records"] for shard in info["shards"]) == 13233
    labels = manifest.read_labels(out)
    assert len(labels) == 5749 and labels == sorted(os.listdir(real_lfw_dir))
    paths = manifest.verify_shards(out)

    records = ff.read_records(paths, with_pixels=False)
    assert len(records) == 13233
    per_label = collections.Counter(r["label"] for r in records)
    assert len(per_label) == 5749
    assert sum(1 for n in per_label.values() if n >= 2) == 1680
    for record in records[:50]:  # stored byte for byte, grayscale 250x250
        relpath = record["filename"].decode()
        assert labels[record["label"]] == record["identity"].decode() == relpath.split("/")[0]
        assert (record["format"], record["channels"], record["height"], record["width"]) == (
            b"jpeg", 1, 250, 250)
        with open(os.path.join(real_lfw_dir, relpath), "rb") as f:
            assert record["encoded"] == f.read()


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_lfw_pairs_convert_with_face_crop(real_lfw_dir, tmp_path):
    out = str(tmp_path / "pairs")
    summary = conversion.convert_pairs(PAIRS, real_lfw_dir, out, crop_box="70,60,180,190",
                                       image_size=112, num_workers=2, progress=False)
    assert (summary["num_pairs"], summary["fold_sizes"]) == (6000, [600] * 10)
    records = ff.read_records(manifest.verify_shards(out), kind="pairs")
    assert [r["index"] for r in records] == list(range(6000))
    assert [r["fold"] for r in records] == [i // 600 for i in range(6000)]
    assert sum(r["issame"] for r in records) == 3000
    for record in records[::500]:
        for key in ("image1", "image2"):
            assert record[key]["pixels"].shape == (112, 112, 3)
            assert record[key]["channels"] == 1
