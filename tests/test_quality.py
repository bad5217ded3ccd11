"""Error-versus-reject curve of the face-quality score (export/quality_metrics.py, and the
command line export/quality.py).

The curve is checked against a transcription of MagFace's evaluation
(github.com/IrvingMeng/MagFace ``eval/eval_quality/eval_quality.py``
``perform_1v1_quality_eval``, commit 99bae614ac2643b9694bf18e0c5645272ff6acfa); the command line
against the tiny SavedModel of tests/tiny_model.py, whose norms are known in numpy.
"""

import io
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

import cli
from export import quality, quality_metrics
from export.pair_verification import read_pair_images
from tests import records_helpers as rh
from tests import tiny_model


def magface_fnmrs(embeddings0, embeddings1, targets, qlts):
    """MagFace's loop: FNMR at FMR 1e-3 for unconsidered rates 0, 0.05, ... 0.95."""
    def distance_(e0, e1):
        dot = np.sum(np.multiply(e0, e1), axis=1)
        norm = np.linalg.norm(e0, axis=1) * np.linalg.norm(e1, axis=1)
        similarity = np.clip(dot / norm, -1., 1.)
        return np.arccos(similarity) / math.pi

    qlts_sorted_idx = np.argsort(qlts)
    num_pairs = len(targets)
    unconsidered_rates = np.arange(0, 0.98, 0.05)
    fnmrs_list = []
    for u_rate in unconsidered_rates:
        hq_pairs_idx = qlts_sorted_idx[int(u_rate * num_pairs):]
        dist = distance_(embeddings0[hq_pairs_idx], embeddings1[hq_pairs_idx])
        actual_issame = targets[hq_pairs_idx]
        pos_dists = np.sort(dist[actual_issame == 1])
        neg_dists = np.sort(dist[actual_issame == 0])
        fmr = 1
        idx = len(neg_dists) - 1
        num_query = len(pos_dists)
        while idx >= 0:
            thresh = neg_dists[idx]
            num_acc = sum(pos_dists < thresh)
            fnmr = 1.0 * (num_query - num_acc) / num_query
            if fmr == 1e-3:
                fnmrs_list.append(fnmr)
            if idx == 0:
                break
            idx /= 10
            idx = int(idx)
            fmr /= float(10)
    return unconsidered_rates, fnmrs_list


def quality_pairs(num_pairs=2400, seed=0):
    """Pairs whose low-quality (small-norm) images are noisier: quality predicts errors."""
    rng = np.random.RandomState(seed)
    dim = 16
    identity = rng.normal(size=(num_pairs, dim))
    issame = np.arange(num_pairs) % 2 == 0
    other = np.where(issame[:, None], identity, rng.normal(size=(num_pairs, dim)))
    norms = rng.uniform(1.0, 10.0, size=(num_pairs, 2))
    noise = 6.0 / norms
    e0 = identity + noise[:, :1] * rng.normal(size=(num_pairs, dim))
    e1 = other + noise[:, 1:] * rng.normal(size=(num_pairs, dim))
    return e0, e1, norms, issame


def test_curve_equals_magfaces_evaluation():
    e0, e1, norms, issame = quality_pairs()
    rates, want = magface_fnmrs(e0, e1, issame.astype(int), norms.min(axis=1))
    similarities = np.sum(quality_metrics.unit(e0) * quality_metrics.unit(e1), axis=1)
    quality = quality_metrics.pair_quality(norms[:, 0], norms[:, 1])
    got = quality_metrics.error_versus_reject(similarities, quality, issame, fmr=1e-3,
                                              fractions=rates)
    # At 95% rejected the 60 impostors left are too few for MagFace's loop to reach FMR 1e-3:
    # it records nothing there (the curve here reads the highest impostor score instead).
    assert len(want) == len(rates) - 1
    np.testing.assert_allclose(got["fnmr"][:-1], want, atol=1e-12)
    assert want[-1] < 0.5 * want[0]  # the data make the quality informative


def test_quality_beats_random_rejection_and_fixed_threshold_stays_put():
    e0, e1, norms, issame = quality_pairs(seed=1)
    result = quality_metrics.evaluate(e0, e1, norms[:, 0], norms[:, 1], issame, fmrs=(1e-2,))
    curve = result["curves"]["0.01"]
    assert curve["fractions"][0] == 0.0 and curve["fractions"][-1] == pytest.approx(0.9)
    assert curve["mean_fnmr"] < 0.8 * curve["mean_random_fnmr"]
    # random rejection leaves the error rate about where it was
    assert abs(curve["random_fnmr"][-1] - curve["fnmr"][0]) < 0.1
    fixed = quality_metrics.evaluate(e0, e1, norms[:, 0], norms[:, 1], issame, fmrs=(1e-2,),
                             threshold="fixed")["curves"]["0.01"]
    assert len(set(fixed["thresholds"])) == 1
    assert fixed["fnmr"][0] == curve["fnmr"][0]


def test_threshold_at_fmr_is_the_floor_rank_impostor():
    impostors = np.arange(2001, dtype=float)  # 2,001 impostors: rank floor(1e-3 * 2000) = 2
    assert quality_metrics.threshold_at_fmr(impostors, 1e-3) == 1998.0
    assert quality_metrics.threshold_at_fmr(impostors[:500], 1e-3) == 499.0
    assert quality_metrics.threshold_at_fmr([], 1e-3) is None
    assert quality_metrics.fnmr([0.5, 1.0, 2.0], 1.0) == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def pair_records(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("quality_pairs") / "pairs")
    rh.write_pair_records(directory, num_pairs=40, size=tiny_model.SIZE)
    return directory


def run_cli(capsys, *args):
    status = cli.run_main(quality.define_flags, quality.main, ["quality"] + list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_writes_the_curve_from_the_models_norms(tmp_path, pair_records, capsys):
    weights = tiny_model.projection()
    model = tiny_model.build_saved_model(str(tmp_path / "model"), weights)
    out_dir = str(tmp_path / "evr")
    status, out, err = run_cli(capsys, "--model", model, "--pairs", pair_records,
                               "--output_dir", out_dir, "--fmr=0.1")
    assert status == 0, err
    assert os.path.getsize(os.path.join(out_dir, "evr.png")) > 1000
    with open(os.path.join(out_dir, "evr.json")) as f:
        result = json.load(f)
    assert "FMR 0.1: FNMR" in out and result["num_pairs"] == 40
    # the same curve from the numpy twin of the model, the images read back from the records
    images, issame = read_pair_images(pair_records)[:2]
    reference = tiny_model.Reference(weights)
    raw = np.stack([reference.unnormalised(np.asarray(Image.open(io.BytesIO(b)).convert("RGB")))
                    for b in images])
    want = quality_metrics.evaluate(raw[0::2], raw[1::2], np.linalg.norm(raw[0::2], axis=1),
                            np.linalg.norm(raw[1::2], axis=1), issame, fmrs=(0.1,))
    got = [np.nan if v is None else v for v in result["curves"]["0.1"]["fnmr"]]  # null: NaN
    np.testing.assert_allclose(got, want["curves"]["0.1"]["fnmr"], atol=1e-9)
    assert result["quality_stats"]["min"] == pytest.approx(want["quality_stats"]["min"],
                                                           rel=1e-4)


def test_cli_refuses_a_model_without_embedding_norm(tmp_path, pair_records, capsys):
    model = tiny_model.build_saved_model(str(tmp_path / "old"), tiny_model.projection(),
                                         norm_output=False)
    status, _, err = run_cli(capsys, "--model", model, "--pairs", pair_records, "--output_dir",
                             str(tmp_path / "evr"))
    assert status == 1
    assert "has no 'embedding_norm' output" in err.strip().splitlines()[-1]
    assert not os.path.exists(str(tmp_path / "evr"))


@pytest.mark.parametrize("args,code,message", [
    (["--pairs", "p"], 2, "--model is required"),
    (["--model", "m", "--pairs", "p", "--output_dir", "o", "extra"], 2, "unexpected"),
])
def test_cli_usage_errors(capsys, args, code, message):
    status, _, err = run_cli(capsys, *args)
    assert status == code and message in err
