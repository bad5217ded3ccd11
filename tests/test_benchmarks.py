"""Smoke tests of the benchmark suite: every benchmark runs at --quick sizes and prints one JSON
line with its figures. Timings are never asserted (this machine is shared and noisy)."""

import argparse
import json

import pytest

from benchmarks import common, run_all, train_step

EXPECTED_KEYS = {
    "conversion": ["images", "convert_images_per_s_w1", "copy_images_per_s_w1",
                   "convert_over_copy_w1", "convert_images_per_s_w2", "copy_images_per_s_w2",
                   "convert_over_copy_w2"],
    "input_pipeline": ["input_fn_images_per_s", "input_fn_images_per_s_per_core",
                       "decode_jpeg_images_per_s", "input_fn_over_decode"],
    "train_step": ["tiny_train_gflop_per_image"]
                  + ["matmul_peak_gflops_%s" % p for p in train_step.available_precisions()]
                  + ["tiny_%s_%s" % (precision, figure)
                     for precision in train_step.available_precisions()
                     for figure in ("real_images_per_s", "synthetic_images_per_s",
                                    "real_over_synthetic", "gflops", "over_matmul_peak")]
                  + (["tiny_bf16_over_fp32"] if len(train_step.available_precisions()) > 1
                     else []),
    "head_cost": ["circle_1000_ms_per_step", "softmax_1000_ms_per_step",
                  "circle_over_softmax_1000", "circle_10000_ms_per_step",
                  "softmax_10000_ms_per_step", "circle_over_softmax_10000"],
    "evaluation": ["embed_seconds_measured", "embed_images_per_s",
                   "embed_seconds_6000_pairs_extrapolated", "evaluate_seconds"],
}


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One scratch directory: the generated JPEGs and records are shared, as in run_all."""
    return str(tmp_path_factory.mktemp("bench"))


@pytest.mark.parametrize("name", list(run_all.BENCHMARKS))
def test_benchmark_prints_one_json_line_with_its_figures(name, workdir, capsys):
    result = run_all.BENCHMARKS[name](quick=True, workdir=workdir)
    lines = _json_lines(capsys.readouterr().out)
    assert lines == [result]
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
