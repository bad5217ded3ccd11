"""Real LFW-a through insightface's .bin format (needs ../shared/data; slow, `make test-slow`):
LFW-a → make_bin → lfw.bin → make_tfrecords --from_bin gives the pair records, and so exactly
the verification metrics, of make_tfrecords --pairs on the same images and options."""

import os

import numpy as np
import pytest

import cli
from data_tools import conversion, manifest
from data_tools.insightface import convert as insightface
from data_tools.insightface import make_bin
from evaluation import verification
from tests import _folder_fixtures as ff
from tests import real_lfw

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)] + real_lfw.MARKS  # minutes under load
CROP = "70,60,180,190"


def _embeddings(records):
    """A fixed embedding of the decoded pixels (8x8 mean-pooled gray), the same function for
    both record sets: equal images give equal embeddings, and so equal metrics."""
    def embed(image):
        gray = image["pixels"].astype(np.float64).mean(axis=2)
        return gray.reshape(8, 14, 8, 14).mean(axis=(1, 3)).ravel() - 128.0
    first = np.stack([embed(r["image1"]) for r in records])
    second = np.stack([embed(r["image2"]) for r in records])
    return first, second, np.array([bool(r["issame"]) for r in records])


def test_lfw_bin_round_trip_gives_the_pairs_metrics(real_lfw_dir, tmp_path):
    lfw = real_lfw_dir
    lfw_bin = str(tmp_path / "lfw.bin")
    assert cli.run_main(make_bin.define_flags, make_bin.main, [
        "make_bin", f"--pairs={real_lfw.PAIRS}", f"--image_dir={lfw}",
        f"--output={lfw_bin}", f"--crop_box={CROP}", "--image_size=112",
        "--num_workers=2"]) == 0
    from_bin = insightface.convert_bin(lfw_bin, str(tmp_path / "from_bin"), num_workers=2,
                                       progress=False)
    from_pairs = conversion.convert_pairs(real_lfw.PAIRS, lfw, str(tmp_path / "from_pairs"),
                                          crop_box=CROP, image_size=112, num_workers=2,
                                          progress=False)
    assert from_bin["fold_sizes"] == from_pairs["fold_sizes"] == [600] * 10
    a = ff.read_records(manifest.verify_shards(str(tmp_path / "from_bin")), kind="pairs")
    b = ff.read_records(manifest.verify_shards(str(tmp_path / "from_pairs")), kind="pairs")
    assert len(a) == len(b) == 6000
    for x, y in zip(a, b):
        assert (x["index"], x["fold"], x["issame"]) == (y["index"], y["fold"], y["issame"])
        assert x["image1"]["encoded"] == y["image1"]["encoded"]
        assert x["image2"]["encoded"] == y["image2"]["encoded"]
    metrics_bin = verification.evaluate(*_embeddings(a))
    metrics_pairs = verification.evaluate(*_embeddings(b))
    assert sorted(metrics_bin) == sorted(metrics_pairs)
    for key in metrics_pairs:
        assert np.array_equal(np.asarray(metrics_bin[key]), np.asarray(metrics_pairs[key])), key
    assert 0.5 < metrics_bin["accuracy"] < 1.0
    assert os.path.getsize(lfw_bin) < 200 << 20
