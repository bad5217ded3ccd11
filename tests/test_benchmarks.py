"""Smoke tests of the benchmark suite: every benchmark runs at --quick sizes and prints one JSON
line with its figures. Timings are never asserted (this machine is shared and noisy)."""

import argparse
import json
import math

import pytest

from benchmarks import common, deploy, peer, peer_inference, precision_curve, run_all, train_step
from export import deploy_formats
from runtime import estimator_factory

PRECISION_RUNS = [name for name, _, _ in precision_curve.RUNS]

EXPECTED_KEYS = {
    "conversion": ["images", "convert_images_per_s_w1", "copy_images_per_s_w1",
                   "convert_over_copy_w1", "convert_images_per_s_w2", "copy_images_per_s_w2",
                   "convert_over_copy_w2"],
    "insightface_rec": ["images", "sequential_read_images_per_s", "rec_convert_images_per_s_w1",
                        "folder_convert_images_per_s_w1", "rec_over_folder_w2",
                        "rec_convert_over_sequential_read_w2", "write_pass_images_per_s",
                        "check_per_core_images_per_s", "ms1mv2_hours_this_machine",
                        "ms1mv2_hours_16_cores_bound"],
    "input_pipeline": ["input_fn_images_per_s", "input_fn_images_per_s_per_core",
                       "decode_jpeg_images_per_s", "input_fn_over_decode",
                       "decode_jpeg_float32_images_per_s", "input_fn_over_decode_float32",
                       "input_fn_cpu_us_per_image", "input_fn_over_decode_cpu",
                       "input_fn_over_decode_float32_cpu"],
    "degradations": ["plain_images_per_s", "robust_images_per_s", "always_images_per_s",
                     "robust_over_plain", "always_over_plain"],
    "train_step": ["tiny_train_gflop_per_image"]
                  + [f"matmul_peak_gflops_{p}" for p in train_step.available_precisions()]
                  + [f"tiny_{precision}_{figure}"
                     for precision in train_step.available_precisions()
                     for figure in ("real_images_per_s", "synthetic_images_per_s",
                                    "real_over_synthetic", "gflops", "over_matmul_peak")]
                  + (["tiny_bf16_over_fp32"] if len(train_step.available_precisions()) > 1
                     else []),
    "head_cost": ["circle_1000_ms_per_step", "softmax_1000_ms_per_step",
                  "circle_over_softmax_1000", "circle_10000_ms_per_step",
                  "softmax_10000_ms_per_step", "circle_over_softmax_10000",
                  "circle_1000_cpu_ms_per_step", "circle_over_softmax_10000_cpu"],
    "partial_fc": ["num_classes", "r1_num_sample", "r01_num_sample", "r1_ms_per_step",
                   "r01_ms_per_step", "time_ratio", "r1_peak_rss_gb", "r01_peak_rss_gb",
                   "peak_rss_ratio", "r1_step_working_memory_gb", "r01_step_working_memory_gb",
                   "working_memory_ratio"],
    "identification": ["probes_per_s_2k", "probes_per_s_10k", "gallery_normalise_s_10k",
                       "peak_rss_mb"],
    # One line per format; without tf2onnx/onnxruntime or TF 2's tf.lite a "skipped" line only.
    "deploy": ([f"tiny_b{batch}_{figure}" for batch in deploy.BATCHES
                for figure in ("images_per_s", "over_savedmodel")]
               if deploy_formats.onnx_available() and deploy_formats.tflite_available() else []),
    "evaluation": ["embed_seconds_measured", "embed_images_per_s",
                   "embed_seconds_6000_pairs_extrapolated", "evaluate_seconds"],
    # Without bfloat16 kernels (TF 1.15) the benchmark prints a "skipped" figure only.
    "precision_curve": (["batch", "steps", "bf16_vs_fp32_mean_abs_diff", "noise_mean_abs_diff",
                         "bf16_diff_over_noise", "bf16_over_fp32"]
                        + [f"{run}_{figure}" for run in PRECISION_RUNS
                           for figure in ("first_mean_loss", "last_mean_loss", "seconds",
                                          "images_per_s")]
                        if estimator_factory.bfloat16_supported() else []),
    # Only where a peer environment with torch exists (make bench-peer); else a "skipped" line.
    "peer": (["mobilefacenet_params_project", "mobilefacenet_params_peer",
              "mobilefacenet_fp32_images_per_s", "mobilefacenet_fp32_peer_images_per_s",
              "mobilefacenet_fp32_over_peer"] if peer.find_peer_python() else []),
    "peer_inference": ([f"mobilefacenet_infer_b{batch}{label}_over_peer"
                        for batch in peer_inference.QUICK["batches"] for label in ("", "_fp32")]
                       + ["mobilefacenet_params_project", "mobilefacenet_params_peer"]
                       if peer.find_peer_python() else []),
}


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One scratch directory: the generated JPEGs and records are shared, as in run_all."""
    return str(tmp_path_factory.mktemp("bench"))


# These train, convert or step a model for 10-30 s each: make test-slow runs them; the quick ones
# keep every benchmark's command line and JSON shape in make test. With a peer environment,
# "peer" trains PyTorch's and this project's mobilefacenet (minutes); without, it prints a skip.
TRAINING_BENCHMARKS = ("train_step", "precision_curve", "deploy", "partial_fc")


def _is_slow_benchmark(name):
    return name in TRAINING_BENCHMARKS or (name in ("peer", "peer_inference")
                                           and peer.find_peer_python())


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.slow) if _is_slow_benchmark(name) else name
    for name in run_all.BENCHMARKS])
def test_benchmark_prints_one_json_line_with_its_figures(name, workdir, capsys):
    result = run_all.BENCHMARKS[name](quick=True, workdir=workdir)
    lines = _json_lines(capsys.readouterr().out)
    results = result if isinstance(result, list) else [result]
    assert lines == results
    for result in results:
        assert result["benchmark"] == name
        missing = [key for key in EXPECTED_KEYS[name] if key not in result]
        assert not missing
        for key in EXPECTED_KEYS[name]:
            value = result[key]
            assert isinstance(value, (int, float)) and value > 0, (key, value)


def test_run_all_only_prints_the_machine_then_the_chosen_benchmark(workdir, capsys):
    run_all.main(["--only=evaluation", "--quick", "--workdir", workdir])
    lines = _json_lines(capsys.readouterr().out)
    assert [line["benchmark"] for line in lines] == ["machine", "evaluation"]
    assert lines[0]["cpus"] == common.cpu_count()


@pytest.mark.parametrize("value, expected", [
    ("", list(run_all.BENCHMARKS)),
    ("head_cost", ["head_cost"]),
    ("evaluation, conversion", ["evaluation", "conversion"]),
])
def test_parse_only(value, expected):
    assert run_all.parse_only(value) == expected


def test_parse_only_rejects_unknown_names():
    with pytest.raises(argparse.ArgumentTypeError, match="unknown benchmark.*nope"):
        run_all.parse_only("conversion,nope")


@pytest.mark.parametrize("numerator, denominator, expected", [
    (3.0, 2.0, 1.5), (1.0, 3.0, 0.333), (1.0, 0.0, None)])
def test_ratio(numerator, denominator, expected):
    assert common.ratio(numerator, denominator) == expected


needs_bf16 = pytest.mark.skipif(not estimator_factory.bfloat16_supported(),
                                reason="bf16 needs TensorFlow 2.x")


@pytest.fixture(scope="module")
def precision_figures(workdir):
    return precision_curve.run(quick=True, workdir=workdir)


@needs_bf16
@pytest.mark.slow
def test_precision_curve_records_falling_finite_curves_of_the_three_runs(precision_figures):
    figures = precision_figures
    steps = figures["steps"]
    # Every CURVE_EVERY-th step and the last one.
    points = len(range(0, steps, precision_curve.CURVE_EVERY)) + (
        (steps - 1) % precision_curve.CURVE_EVERY != 0)
    for run in PRECISION_RUNS:
        curve = figures[f"{run}_curve"]
        assert len(curve) == points, (run, curve)
        assert all(math.isfinite(value) and value > 0 for value in curve), (run, curve)
        assert f"{run}_diverged_at_step" not in figures
        assert figures[f"{run}_last_mean_loss"] < 0.8 * figures[f"{run}_first_mean_loss"], run
        assert curve[-1] < curve[0], (run, curve)


@needs_bf16
@pytest.mark.slow
def test_precision_curve_bf16_starts_from_the_fp32_model_and_batch(precision_figures):
    figures = precision_figures
    fp32, bf16, other = (figures[f"{run}_curve"][0] for run in PRECISION_RUNS)
    # Same weights, same first batch: only bfloat16 rounding separates the first losses.
    assert figures["bf16_vs_fp32_step0_abs_diff"] == pytest.approx(abs(bf16 - fp32), abs=2e-3)
    assert abs(bf16 - fp32) < 0.01 * fp32
    # Another seed: other weights and another batch.
    assert abs(other - fp32) > abs(bf16 - fp32)
    assert figures["bf16_diff_over_noise"] == common.ratio(
        figures["bf16_vs_fp32_mean_abs_diff"], figures["noise_mean_abs_diff"])


def test_precision_curve_skips_without_bfloat16(monkeypatch, workdir, capsys):
    monkeypatch.setattr(estimator_factory, "bfloat16_supported", lambda: False)
    monkeypatch.setattr(precision_curve, "train_curve", None)  # training would fail the test
    result = precision_curve.run(quick=True, workdir=workdir)
    assert _json_lines(capsys.readouterr().out) == [result]
    assert result["benchmark"] == "precision_curve"
    assert "bf16 needs TensorFlow 2.x" in result["skipped"]
    assert not [key for key in result if key.endswith("_curve")]


@needs_bf16
@pytest.mark.slow
def test_precision_curve_flags_and_divergence(workdir, capsys):
    # A learning rate that blows the weights up: every run stops at its first non-finite loss.
    precision_curve.main(["--quick", "--workdir", workdir, "--steps=3", "--batch_size=8",
                          "--learning_rate=1e30"])
    (figures,) = _json_lines(capsys.readouterr().out)
    assert (figures["backbone"], figures["steps"], figures["batch"]) == ("tiny", 3, 8)
    for run in PRECISION_RUNS:
        step = figures[f"{run}_diverged_at_step"]
        assert 0 < step < 3
        assert len(figures[f"{run}_curve"]) == min(step, 2)
    assert figures["bf16_diff_over_noise"] is None


def test_ema_and_mean_abs_diff():
    assert list(precision_curve.ema([1.0, 3.0, 3.0], weight=0.5)) == [1.0, 2.0, 2.5]
    curve = [5.0, 4.0, 4.5, 3.0]
    # Smoothing is linear: a constant offset stays that offset, a scaled curve scales.
    assert precision_curve.mean_abs_diff([v + 0.25 for v in curve], curve) == pytest.approx(0.25)
    assert precision_curve.mean_abs_diff(curve, curve) == 0.0
    assert precision_curve.mean_abs_diff([1.0, 1.0], [1.0, 3.0], weight=0.5) == 0.5
    assert precision_curve.mean_abs_diff([], curve) is None


@pytest.mark.parametrize("length, expected", [
    (25, [0, 10, 20, 24]), (21, [0, 10, 20]), (1, [0]), (0, [])])
def test_subsample_keeps_every_tenth_step_and_the_last(length, expected):
    assert precision_curve.subsample([float(i) for i in range(length)], every=10) == expected


@pytest.mark.slow
def test_deploy_prints_one_line_per_format_with_savedmodel_ratios_of_one(workdir, capsys):
    if not (deploy_formats.onnx_available() and deploy_formats.tflite_available()):
        pytest.skip("needs tf2onnx, onnxruntime and TF 2's tf.lite")
    results = deploy.run(quick=True, workdir=workdir)
    assert [r["format"] for r in results] == list(deploy.FORMATS)
    assert _json_lines(capsys.readouterr().out) == results
    assert results[0]["tiny_b1_over_savedmodel"] == results[0]["tiny_b32_over_savedmodel"] == 1.0
