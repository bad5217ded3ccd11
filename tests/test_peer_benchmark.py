"""The PyTorch peer benchmark (benchmarks.peer): JSON shape, the alternating protocol, bf16
selection, and the peer's parameter counts. Timings are never asserted.

torch is not in the project's environment: the orchestration is tested against a fake peer
speaking the same protocol; the real peer's parameter counts only where a peer environment
(``make bench-peer``'s .venv-peer, or $PEER_PYTHON) exists.
"""

import json
import subprocess
import sys
import textwrap

import pytest

from benchmarks import common, peer, run_all, train_step
from tests.test_backbones import REFERENCE_TRAINABLE_PARAMS, _tiny_trainable_params

# The fake peer trains "tiny" (seconds to build and run here; mobilefacenet takes a minute on
# two shared cores), reporting the project's own tiny parameter count.
TINY_QUICK = dict(peer.QUICK, backbones=("tiny",))

FAKE_PEER = '''
import json, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
params = {params!r}[args["backbone"]]
log = open({log!r}, "a")
log.write(json.dumps(args) + "\\n")
print(json.dumps({{"ready": True, "backbone_params": params, "head_params": 0,
                   "torch": "fake", "threads": 1, "cpu_capability": "none",
                   "memory_format": "channels_last"}}), flush=True)
for line in sys.stdin:
    log.write("steps " + line)
    print(json.dumps({{"seconds_per_step": 0.5, "loss": 1.0}}), flush=True)
'''


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def fake_peer(tmp_path, monkeypatch):
    """A stand-in for peer_torch.py run by this interpreter; returns its log's path."""
    log = tmp_path / "peer.log"
    script = tmp_path / "fake_peer.py"
    params = {"tiny": _tiny_trainable_params(512)}
    script.write_text(textwrap.dedent(FAKE_PEER.format(log=str(log), params=params)))
    monkeypatch.setattr(peer, "PEER_SCRIPT", str(script))
    monkeypatch.setattr(peer, "BACKBONES", peer.BACKBONES + ("tiny",))
    monkeypatch.setattr(peer, "QUICK", TINY_QUICK)
    return log


def test_peer_alternates_with_the_project_and_prints_same_run_ratios(fake_peer, capsys):
    result = peer.run(quick=True, peer_python=sys.executable)
    assert _json_lines(capsys.readouterr().out) == [result]
    assert result["benchmark"] == "peer"
    assert result["tiny_params_project"] == result["tiny_params_peer"] \
        == _tiny_trainable_params(512)
    assert result["tiny_params_equal"] is True
    rounds = result["tiny_fp32_rounds"]
    assert len(result["tiny_fp32_over_peer_rounds"]) == rounds == TINY_QUICK["steps"][2]
    assert result["tiny_fp32_over_peer"] > 0
    assert result["tiny_fp32_over_peer_of_medians"] > 0
    # The fake peer takes 0.5 s a step: its images/s is batch / 0.5.
    assert result["tiny_fp32_peer_images_per_s"] == TINY_QUICK["batch"] / 0.5
    # Quick runs never measure bf16; the reason is printed, the ratio is null.
    assert result["tiny_bf16_over_peer"] is None
    assert result["bf16_not_measured"]
    assert len(result["load_average_start"]) == len(result["load_average_end"]) == 3
    assert result["cpu_model"] == common.cpu_model()
    log = fake_peer.read_text().splitlines()
    args = json.loads(log[0])
    assert (args["backbone"], args["precision"], int(args["batch"])) == (
        "tiny", "fp32", TINY_QUICK["batch"])
    assert int(args["threads"]) == common.cpu_count()
    assert log[1:] == ["steps 1"] * rounds


def test_peer_skips_without_a_peer_environment(monkeypatch, capsys):
    monkeypatch.setattr(peer, "DEFAULT_PEER_PYTHON", "/nonexistent/python")
    monkeypatch.delenv("PEER_PYTHON", raising=False)
    run_all.main(["--only=peer", "--quick"])  # the group: training, then inference
    machine, result, inference = _json_lines(capsys.readouterr().out)
    assert inference["benchmark"] == "peer_inference" and "make bench-peer" in \
        inference["skipped"]
    assert machine["benchmark"] == "machine" and "cpu_model" in machine
    assert result["benchmark"] == "peer"
    assert "make bench-peer" in result["skipped"]
    assert result["mobilefacenet_fp32_over_peer"] is None


def test_peer_python_search_order(tmp_path, monkeypatch):
    python = tmp_path / "python"
    python.write_text("")
    python.chmod(0o755)
    monkeypatch.setattr(peer, "DEFAULT_PEER_PYTHON", "/nonexistent/python")
    monkeypatch.delenv("PEER_PYTHON", raising=False)
    assert peer.find_peer_python() is None
    monkeypatch.setenv("PEER_PYTHON", str(python))
    assert peer.find_peer_python() == str(python)
    assert peer.find_peer_python(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("flags, bf16, measured", [
    (set(), "auto", False), ({"avx2", "amx_bf16"}, "auto", True),
    ({"avx512_bf16"}, "off", False), (set(), "on", True)])
def test_bf16_runs_by_default_only_with_bf16_units(monkeypatch, flags, bf16, measured):
    monkeypatch.setattr(common, "cpu_flags", lambda: flags)
    precisions, reason = peer.chosen_precisions(bf16)
    tf_has_bf16 = "bf16" in train_step.available_precisions()
    assert ("bf16" in precisions) == (measured and tf_has_bf16)
    assert "fp32" in precisions
    assert (reason is None) == (measured and tf_has_bf16)
    if tf_has_bf16 and bf16 == "auto" and not measured:
        assert "no bf16 units" in reason


def test_peer_models_have_the_reference_parameter_counts():
    python = peer.find_peer_python()
    if python is None:
        pytest.skip("no peer environment (make bench-peer builds .venv-peer with torch)")
    output = subprocess.run([python, peer.PEER_SCRIPT, "--count"], check=True,
                            stdout=subprocess.PIPE, text=True, timeout=120).stdout
    counts = json.loads(output)
    assert counts == {name: REFERENCE_TRAINABLE_PARAMS[(name, 512)] for name in peer.BACKBONES}


@pytest.mark.parametrize("values", [[1.0], [0.53, 1.05, 1.0, 0.64, 0.77],
                                    [3.0, 1.0, 2.0, 2.0], list(range(11, 0, -1))])
def test_spread_matches_numpy_quantiles(values):
    import numpy as np  # noqa: PLC0415

    stats = common.spread(values)
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    assert stats["median"] == pytest.approx(median)
    assert stats["q1"] == pytest.approx(q1)
    assert stats["q3"] == pytest.approx(q3)
    assert stats["iqr"] == pytest.approx(q3 - q1)
    assert (stats["min"], stats["max"], stats["n"]) == (min(values), max(values), len(values))
    for fraction in (0.0, 0.1, 0.9, 1.0):
        assert common.quantile(values, fraction) == pytest.approx(
            np.percentile(values, 100 * fraction))


def test_spread_rejects_nothing_and_bad_fractions():
    with pytest.raises(ValueError):
        common.spread([])
    with pytest.raises(ValueError):
        common.quantile([1.0], 1.5)


def test_load_warning_only_when_the_load_exceeds_the_cores():
    assert common.load_warning([2.0, 5.0, 5.0], 2) is None  # the 1-minute figure decides
    assert common.load_warning(None, 2) is None
    assert "2.50 > 2 cores" in common.load_warning([2.5, 1.0, 1.0], 2)


def test_peer_reports_round_spread_and_load(fake_peer, capsys, monkeypatch):
    overload = float(common.cpu_count() + 1)
    monkeypatch.setattr(common, "load_average", lambda: [overload] * 3)
    result = peer.run(quick=True, peer_python=sys.executable)
    err = capsys.readouterr().err
    rounds = result["tiny_fp32_over_peer_rounds"]
    stats = common.spread(rounds)
    for name in ("q1", "q3", "iqr", "min", "max"):
        assert result[f"tiny_fp32_over_peer_{name}"] == pytest.approx(stats[name], abs=1e-3)
    assert result["tiny_fp32_over_peer_min"] <= result["tiny_fp32_over_peer"] \
        <= result["tiny_fp32_over_peer_max"]
    assert result["tiny_fp32_round_load"] == [overload] * len(rounds)
    assert result["cpus"] == common.cpu_count()
    assert len(result["load_warning"]) == 2 and "WARNING" in err
    assert "tiny_fp32" in err and "IQR" in err and f"median of {len(rounds)} rounds" in err
