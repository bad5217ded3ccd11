"""The head-comparison table: rows from real reports, seeds averaged, reports kept."""

import json
import os

import numpy as np
import pytest

import cli
from evaluation import compare_reports, report_table, verification
from evaluation import reports as report


def run_main(*args):
    return cli.run_main(compare_reports.define_flags, compare_reports.main,
                        ["compare_reports"] + list(args))


def _run(root, name, head, seed, accuracy_noise, wall_seconds=600.0):
    """A model_dir with params.json and the report of a real evaluate() on noisy embeddings."""
    rng = np.random.RandomState(seed)
    base = rng.normal(size=(40, 8))
    issame = np.arange(40) % 20 < 10
    other = np.where(issame[:, None], base + accuracy_noise * rng.normal(size=base.shape),
                     rng.normal(size=base.shape))
    metrics = verification.evaluate(base, other, issame)
    metrics["global_step"] = 1000
    model_dir = os.path.join(str(root), name)
    report.write_report(metrics, os.path.join(model_dir, "eval"),
                        extra={"wall_seconds": wall_seconds})
    params = {"head": head, "seed": seed, "margin": 0.25, "gamma": 64.0, "scale": 64.0,
              "backbone": "tiny", "model_dir": model_dir}
    with open(os.path.join(model_dir, "params.json"), "w") as f:
        json.dump(params, f)
    return model_dir, metrics


def _set_params(model_dir, **changes):
    with open(os.path.join(model_dir, "params.json")) as f:
        params = json.load(f)
    params.update(changes)
    with open(os.path.join(model_dir, "params.json"), "w") as f:
        json.dump(params, f)


def test_seeds_of_one_head_are_averaged(tmp_path):
    a, ma = _run(tmp_path, "circle-s0", "circle", 0, 0.3)
    b, mb = _run(tmp_path, "circle-s1", "circle", 1, 0.8, wall_seconds=1200.0)
    # Thread counts do not change what is trained: still one row.
    _set_params(b, intra_op_threads=1, inter_op_threads=1)
    c, mc = _run(tmp_path, "softmax-s0", "softmax", 0, 1.5)
    rows = report_table.summarize([report_table.load_run(d) for d in (a, b, c)])
    assert [r["head"] for r in rows] == ["circle", "softmax"]
    circle, softmax = rows
    assert circle["seeds"] == [0, 1]
    assert circle["accuracy"] == pytest.approx((ma["accuracy"] + mb["accuracy"]) / 2)
    assert circle["auc"] == pytest.approx((ma["auc"] + mb["auc"]) / 2)
    assert circle["wall_minutes"] == pytest.approx(15.0)
    assert softmax["accuracy"] == pytest.approx(mc["accuracy"])
    assert softmax["gamma"] == 64.0  # the scale s for non-Circle heads
    assert softmax["margin"] is None  # plain softmax ignores --margin

    table = report_table.markdown_table(rows).splitlines()
    assert len(table) == 4
    assert table[2].startswith(f"| `circle` | shuffled | 0.25 | 64 | {circle['accuracy']:.4f} ± ")
    assert f"0: {ma['accuracy']:.4f}, 1: {mb['accuracy']:.4f}" in table[2]


def test_pk_batches_make_their_own_row(tmp_path):
    a, _ = _run(tmp_path, "circle-s0", "circle", 0, 0.3)
    b, _ = _run(tmp_path, "circle-pk-s0", "circle", 0, 0.3)
    _set_params(b, images_per_identity=4)
    rows = report_table.summarize([report_table.load_run(d) for d in (a, b)])
    assert [r["batches"] for r in rows] == ["shuffled", "P×K, K=4"]


def test_settings_the_columns_do_not_show_get_a_column(tmp_path):
    a, _ = _run(tmp_path, "r1", "circle", 0, 0.3)
    b, _ = _run(tmp_path, "pfc05", "circle", 0, 0.3)
    _set_params(a, partial_fc_rate=1.0, train_records="/data/fold10/records/train",
                num_train_images=7829, eval_transform={"crop_box": [70, 60, 180, 190]})
    _set_params(b, partial_fc_rate=0.5, train_records="/data/fold10/records_aligned/train",
                num_train_images=7806, eval_transform={"crop_box": None})
    rows = report_table.summarize([report_table.load_run(d) for d in (a, b)])
    assert report_table.differing_settings(rows) == ["partial_fc_rate", "train_records"]
    header, rule, first, second = report_table.markdown_table(rows).splitlines()
    assert header.endswith("| minutes | settings |") and rule.count("|") == header.count("|")
    assert first.endswith("| partial_fc_rate=1.0, train_records=records/train |")
    assert second.endswith("| partial_fc_rate=0.5, train_records=records_aligned/train |")
    # Seeds of one setting still share a row, and a lone row has no settings column.
    assert "settings" not in report_table.markdown_table(rows[:1]).splitlines()[0]


def test_options_of_other_heads_are_left_out_of_the_settings(tmp_path):
    a, _ = _run(tmp_path, "subcenter", "subcenter_arcface", 0, 0.3)
    b, _ = _run(tmp_path, "arcface", "arcface", 0, 0.3)
    _set_params(a, subcenters=3, magface_lambda_g=None)
    _set_params(b, subcenters=None, magface_lambda_g=None)
    rows = report_table.summarize([report_table.load_run(d) for d in (a, b)])
    _, _, first, second = report_table.markdown_table(rows).splitlines()
    assert first.endswith("| subcenters=3 |") and second.endswith("|  |")
    assert "null" not in first + second


def test_cli_copies_reports_and_prints_the_table(tmp_path, capsys):
    a, _ = _run(tmp_path, "arcface-s0", "arcface", 0, 0.5)
    kept = tmp_path / "kept"
    assert run_main(a, "--copy_reports", str(kept)) == 0
    assert "| `arcface` |" in capsys.readouterr().out
    assert report.read_report(str(kept / "arcface-s0.json"))["global_step"] == 1000


def test_unfinished_run_is_named(tmp_path, capsys):
    model_dir = tmp_path / "running"
    model_dir.mkdir()
    (model_dir / "params.json").write_text("{}")
    assert run_main(str(model_dir)) == 1
    assert "has no eval/report.json" in capsys.readouterr().err
    assert run_main(str(tmp_path)) == 1
    assert "no params.json" in capsys.readouterr().err


def test_far_target_falls_back_to_the_runs_params(tmp_path):
    """Reports written from estimator.evaluate() carry no far_target: params.json has it."""
    model_dir, _ = _run(tmp_path, "cosface-s0", "cosface", 0, 0.5)
    path = os.path.join(model_dir, "eval", "report.json")
    with open(path) as f:
        stored = json.load(f)
    del stored["far_target"]
    with open(path, "w") as f:
        json.dump(stored, f)
    _set_params(model_dir, far_target=0.01)
    table = report_table.markdown_table(
        report_table.summarize([report_table.load_run(model_dir)]))
    assert "VAL@FAR=0.01 |" in table.splitlines()[0]
