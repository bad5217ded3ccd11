"""Tests of evaluation.reports: JSON content and types, the ROC figure, atomic writes."""

import json
import os
import subprocess
import sys

import matplotlib
import matplotlib.figure
import numpy as np
import pytest
from PIL import Image

from evaluation import reports as report
from evaluation import verification

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def metrics():
    rng = np.random.RandomState(0)
    same = np.tile([True, False], 300)
    e1 = rng.randn(600, 16)
    e2 = np.where(same[:, None], e1 + 1.2 * rng.randn(600, 16), rng.randn(600, 16))
    return verification.evaluate(e1, e2, same)


@pytest.mark.parametrize("log_fpr, width", [(True, 1100), (False, 550)])
def test_write_and_read_back(tmp_path, metrics, log_fpr, width):
    extra = {"model": "/some/dir", "global_step": np.int64(1200), "flip": np.bool_(True),
             "scale": np.float32(0.5), "shape": (112, 112), "nested": {"a": np.arange(3)}}
    json_path, png_path = report.write_report(metrics, str(tmp_path / "eval"), extra=extra,
                                              log_fpr=log_fpr)
    assert json_path == str(tmp_path / "eval" / "report.json")
    assert png_path == str(tmp_path / "eval" / "roc.png")

    loaded = report.read_report(json_path)
    assert loaded == report.read_report(str(tmp_path / "eval"))  # a directory works too
    for key in ("accuracy", "accuracy_std", "threshold", "val", "val_std", "far", "auc", "eer",
                "num_pairs", "n_folds", "far_target"):
        assert loaded[key] == metrics[key], key
    for key in ("fold_accuracy", "fold_threshold", "fold_val", "fold_far", "fold_val_threshold"):
        assert loaded[key] == list(metrics[key]), key
    for key in ("tpr", "fpr", "roc_thresholds"):
        np.testing.assert_array_equal(loaded[key], metrics[key])
        assert len(loaded[key]) == 400
    assert loaded["extra"] == {"model": "/some/dir", "global_step": 1200, "flip": True,
                               "scale": 0.5, "shape": [112, 112], "nested": {"a": [0, 1, 2]}}
    assert type(loaded["extra"]["global_step"]) is int
    assert loaded["report_version"] == report.REPORT_VERSION

    with Image.open(png_path) as image:
        assert image.format == "PNG"
        assert image.size == (width, 500)
        pixels = np.asarray(image.convert("L"))
    assert pixels.min() < 100  # something was drawn
    assert sorted(os.listdir(str(tmp_path / "eval"))) == ["report.json", "roc.png"]


def test_json_is_strict_and_nan_becomes_null(tmp_path, metrics):
    bad = dict(metrics, eer=float("nan"), val=np.float64(np.inf))
    json_path, _ = report.write_report(bad, str(tmp_path))
    with open(json_path) as f:
        text = f.read()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text)
    assert loaded["eer"] is None and loaded["val"] is None


def test_failed_write_keeps_previous_report(tmp_path, metrics):
    json_path, _ = report.write_report(metrics, str(tmp_path), extra={"run": 1})
    with pytest.raises(TypeError, match=r"extra\['handle'\]: cannot store a object"):
        report.write_report(metrics, str(tmp_path), extra={"run": 2, "handle": object()})
    assert report.read_report(json_path)["extra"] == {"run": 1}
    assert sorted(os.listdir(str(tmp_path))) == ["report.json", "roc.png"]


def test_interrupted_write_leaves_old_files_and_no_temporaries(tmp_path, metrics, monkeypatch):
    json_path, png_path = report.write_report(metrics, str(tmp_path), extra={"run": 1})
    with open(png_path, "rb") as f:
        old_png = f.read()

    def failing_savefig(self, fileobj, **kwargs):
        fileobj.write(b"\x89PNG half an image")
        raise OSError("No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", failing_savefig)
    with pytest.raises(OSError, match="No space left"):
        report.write_report(metrics, str(tmp_path), extra={"run": 2})
    with open(png_path, "rb") as f:
        assert f.read() == old_png
    assert report.read_report(json_path)["extra"] == {"run": 1}
    assert sorted(os.listdir(str(tmp_path))) == ["report.json", "roc.png"]


def test_overwrite_replaces(tmp_path, metrics):
    report.write_report(metrics, str(tmp_path), extra={"run": 1})
    report.write_report(dict(metrics, accuracy=0.5), str(tmp_path), extra={"run": 2})
    loaded = report.read_report(str(tmp_path))
    assert loaded["extra"] == {"run": 2} and loaded["accuracy"] == 0.5
    assert sorted(os.listdir(str(tmp_path))) == ["report.json", "roc.png"]


@pytest.mark.parametrize("metrics_value, error, message", [
    ({"accuracy": 0.9}, ValueError, "metrics lack"),
    ([0.9], TypeError, "metrics must be a dict"),
])
def test_invalid_metrics(tmp_path, metrics_value, error, message):
    with pytest.raises(error, match=message):
        report.write_report(metrics_value, str(tmp_path))
    assert os.listdir(str(tmp_path)) == []


def test_degenerate_roc_plot(tmp_path):
    # Different pairs at distance 4 (opposite embeddings) lie beyond the threshold grid: the FPR is
    # 0 everywhere, no threshold reaches the target FAR (VAL = FAR = 0) and the log panel has no
    # point to draw. The report must still be written.
    dist = np.tile([0.05, 4.0], 50)
    m = verification.evaluate_distances(dist, np.tile([True, False], 50))
    assert m["far"] == 0.0 and m["val"] == 0.0 and m["accuracy"] == 1.0
    assert not np.any(m["fpr"])
    _, png_path = report.write_report(m, str(tmp_path))
    with Image.open(png_path) as image:
        assert image.size == (1100, 500)


def test_read_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no verification report"):
        report.read_report(str(tmp_path))
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid report"):
        report.read_report(str(tmp_path))


def test_no_matplotlib_at_import_and_backend_untouched(tmp_path, metrics):
    code = ("import sys; import evaluation.reports; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    assert out.strip() == "False"

    before = matplotlib.get_backend()
    report.write_report(metrics, str(tmp_path))
    assert matplotlib.get_backend() == before
