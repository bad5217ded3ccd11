"""Inference against the PyTorch peer (benchmarks.peer_inference): the latency statistics, the
choice of each side's best format and the paired ratios, the JSON keys, and the whole --quick
path. Timings are never asserted.

torch is not in the project's environment: the orchestration is tested against a fake peer
speaking the same protocol; the real peer (``.venv-peer``, or $PEER_PYTHON) only where it exists.
"""

import json
import sys
import textwrap

import numpy as np
import pytest

from benchmarks import peer, peer_inference, run_all
from tests.test_backbones import REFERENCE_TRAINABLE_PARAMS, _tiny_trainable_params

FAKE_SECONDS = 0.25  # what the fake peer reports for every call

FAKE_PEER = '''
import json, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
log = open({log!r}, "a")
log.write(json.dumps(args) + "\\n")
print(json.dumps({{"ready": True, "backbone_params": {params!r}, "formats": ["eager",
                   "torchscript"], "torch": "fake", "threads": 2, "interop_threads": 1,
                   "cpu_capability": "none", "memory_format": "channels_last",
                   "embedding_size": 128, "torchscript_max_rel_diff": 0.0}}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    log.write(line)
    print(json.dumps({{"seconds": [{seconds!r}] * request["calls"]}}), flush=True)
'''


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _nearest_rank(values, percent):
    """numpy's nearest-rank percentile ("inverted_cdf"), the definition the benchmark uses."""
    try:
        return float(np.percentile(values, percent, method="inverted_cdf"))
    except TypeError:  # numpy < 1.22 (the TF 1.15 environment): no ``method``
        pytest.skip("numpy without percentile(method=...)")


@pytest.mark.parametrize("size", [1, 2, 7, 100, 150, 1001])
@pytest.mark.parametrize("percent", [1, 50, 90, 99, 100])
def test_percentile_is_numpys_nearest_rank(size, percent):
    values = list(np.random.RandomState(size).exponential(0.05, size))
    assert peer_inference.percentile(values, percent) == _nearest_rank(values, percent)


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no values"):
        peer_inference.percentile([], 50)


def test_summarize_against_numpy():
    rng = np.random.RandomState(0)
    rounds = [list(rng.uniform(0.01, 0.2, 15)) for _ in range(4)]
    flat = np.concatenate(rounds)
    summary = peer_inference.summarize(1, rounds)
    assert summary["images_per_s"] == pytest.approx(1.0 / np.median(flat))
    assert summary["p50_ms"] == pytest.approx(1000 * _nearest_rank(flat, 50))
    assert summary["p99_ms"] == pytest.approx(1000 * _nearest_rank(flat, 99))
    assert summary["round_seconds"] == pytest.approx([np.mean(r) for r in rounds])
    assert summary["calls"] == 60
    assert peer_inference.summarize(64, [[2.0], [4.0], [3.0]])["images_per_s"] == 64 / 3.0


def test_best_formats_and_the_median_of_paired_ratios():
    def figures(images_per_s, round_seconds):
        return {"images_per_s": images_per_s, "round_seconds": round_seconds}

    by_format = {"onnx": figures(30.0, [0.03, 0.04, 0.02]),
                 "tflite_int8": figures(50.0, [0.02, 0.02, 0.02]),
                 "torch_eager": figures(10.0, [0.1, 0.1, 0.1]),
                 "torch_torchscript": figures(20.0, [0.06, 0.05, 0.04])}
    peers = ["torch_eager", "torch_torchscript"]
    ours, theirs, median, paired, of_medians = peer_inference.best_over_peer(
        by_format, ["onnx", "tflite_int8"], peers)
    assert (ours, theirs) == ("tflite_int8", "torch_torchscript")
    assert paired == pytest.approx([3.0, 2.5, 2.0])
    assert median == pytest.approx(2.5) and of_medians == pytest.approx(2.5)
    ours, _, median, paired, _ = peer_inference.best_over_peer(by_format, ["onnx"], peers)
    assert ours == "onnx" and paired == pytest.approx([2.0, 1.25, 2.0])
    assert median == pytest.approx(2.0)


def test_skips_without_a_peer_environment(monkeypatch, capsys):
    monkeypatch.setattr(peer, "DEFAULT_PEER_PYTHON", "/nonexistent/python")
    monkeypatch.delenv("PEER_PYTHON", raising=False)
    result = peer_inference.run(quick=True)
    assert _json_lines(capsys.readouterr().out) == [result]
    assert result["benchmark"] == "peer_inference"
    assert "make bench-peer" in result["skipped"]
    keys = [f"mobilefacenet_infer_b{b}{label}_over_peer"
            for b in peer_inference.QUICK["batches"] for label in ("", "_fp32")]
    assert all(key in result and result[key] is None for key in keys)


def test_peer_group_runs_both_comparisons():
    assert run_all.parse_only("peer") == ["peer", "peer_inference"]
    assert run_all.parse_only("peer_inference,peer") == ["peer_inference", "peer"]


def test_unknown_architecture_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit):
        peer_inference.main(["--archs=resnet9"])
    assert "unknown architecture(s) resnet9" in capsys.readouterr().err


def _check_figures(result, arch, batches, formats):
    for batch in batches:
        for name in formats:
            assert result[f"{arch}_{name}_b{batch}_images_per_s"] > 0
        for label in ("", "_fp32"):
            key = f"{arch}_infer_b{batch}{label}"
            assert result[f"{key}_over_peer"] > 0
            rounds = result[f"{key}_over_peer_rounds"]
            assert len(rounds) == result[f"{arch}_rounds"]
            q1, q3 = np.percentile(rounds, [25, 75])
            assert result[f"{key}_over_peer_q1"] == pytest.approx(q1, abs=2e-3)
            assert result[f"{key}_over_peer_iqr"] == pytest.approx(q3 - q1, abs=4e-3)
            assert result[f"{key}_over_peer_min"] == min(rounds)
            assert result[f"{key}_best"] in peer_inference.PROJECT_FORMATS
            assert result[f"{key}_peer_best"] in ("torch_eager", "torch_torchscript")
        assert result[f"{arch}_infer_b{batch}_fp32_best"] not in peer_inference.INT8_FORMATS
    for name in formats:
        p50, p99 = result[f"{arch}_{name}_b1_p50_ms"], result[f"{arch}_{name}_b1_p99_ms"]
        assert 0 < p50 <= p99


@pytest.mark.slow  # exports and converts a model to four formats: about a minute
def test_quick_run_against_a_fake_peer(tmp_path, monkeypatch, capsys):
    log = tmp_path / "peer.log"
    script = tmp_path / "fake_peer.py"
    script.write_text(textwrap.dedent(FAKE_PEER.format(
        log=str(log), params=_tiny_trainable_params(128), seconds=FAKE_SECONDS)))
    monkeypatch.setattr(peer_inference, "PEER_SCRIPT", str(script))
    monkeypatch.setattr(peer_inference, "ARCHS", peer_inference.ARCHS + ("tiny",))
    monkeypatch.setattr(peer_inference, "QUICK", dict(
        peer_inference.QUICK, archs=("tiny",), image_size=32, embedding_size=128))
    result = peer_inference.run(quick=True, workdir=str(tmp_path / "work"),
                                peer_python=sys.executable)
    assert _json_lines(capsys.readouterr().out) == [result]
    batches = peer_inference.QUICK["batches"]
    assert result["tiny_params_project"] == result["tiny_params_peer"] \
        == _tiny_trainable_params(128)
    assert result["tiny_params_equal"] is True
    formats = list(peer_inference.PROJECT_FORMATS) + ["torch_eager", "torch_torchscript"]
    _check_figures(result, "tiny", batches, formats)
    # The fake peer's calls take FAKE_SECONDS: its images/s and latencies are exactly that.
    for batch in batches:
        assert result[f"tiny_torch_eager_b{batch}_images_per_s"] == batch / FAKE_SECONDS
    assert result["tiny_torch_torchscript_b1_p99_ms"] == 1000 * FAKE_SECONDS
    assert len(result["load_average_start"]) == 3
    # The formats are built in a child process, whose peak memory is reported apart.
    assert result["tiny_build_peak_rss_mb"] > 0 and result["tiny_peak_rss_mb"] > 0
    lines = log.read_text().splitlines()
    args = json.loads(lines[0])
    assert args["backbone"] == "tiny" and int(args["threads"]) == peer_inference.THREADS
    requests = [json.loads(line) for line in lines[1:]]
    b1_calls, large_calls, rounds = peer_inference.QUICK["schedule"]
    # Every round asks the peer for each of its formats once, at each batch size.
    assert requests == [{"format": name, "batch": batch,
                         "calls": b1_calls if batch == 1 else large_calls}
                        for batch in batches for _ in range(rounds)
                        for name in peer_inference.PEER_FORMATS]


@pytest.mark.slow  # torch builds and traces MobileFaceNet; this side converts it: minutes
def test_quick_run_against_the_real_peer(tmp_path, capsys):
    if peer.find_peer_python() is None:
        pytest.skip("no peer environment (.venv-peer or $PEER_PYTHON with torch)")
    result = peer_inference.run(quick=True, workdir=str(tmp_path))
    capsys.readouterr()
    assert result["mobilefacenet_params_peer"] == result["mobilefacenet_params_project"] \
        == REFERENCE_TRAINABLE_PARAMS[("mobilefacenet", 512)]
    assert result["mobilefacenet_torchscript_max_rel_diff"] < 1e-3
    formats = list(peer_inference.PROJECT_FORMATS) + ["torch_eager", "torch_torchscript"]
    _check_figures(result, "mobilefacenet", peer_inference.QUICK["batches"], formats)
