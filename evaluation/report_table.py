"""One Markdown table row per training run, from its verification report and its parameters
(the library behind ``python -m evaluation.compare_reports``).

    python -m evaluation.compare_reports lfw_output/fold10/models/*    [--copy_reports=DIR]

Each argument is a ``model_dir`` holding ``params.json`` (written by ``estimator_main.py``) and
``eval/report.json`` (the evaluation of its final checkpoint). Runs that differ only in
``--seed`` (or in threads, logging and other settings that do not change the model) are averaged
into one row (mean of the accuracies, the seeds
listed), as the README's head comparison reports them. ``--copy_reports`` keeps each report as
``<run name>.json`` next to the table, so the figures stay checkable after the models are gone.
"""

import collections
import json
import os

from evaluation import reports as report_lib

# Metrics averaged over the seeds of a row (keys of report.json).
_METRICS = ("accuracy", "accuracy_std", "val", "auc", "eer")
# Settings that do not change what is trained: runs differing only in these (and the seed) share
# a row, e.g. the same head run with one thread (make lfw-heads JOBS=2) and with two.
_RUN_MECHANICS = frozenset([
    "seed", "model_dir", "intra_op_threads", "inter_op_threads", "progress",
    "log_every_n_steps", "save_summary_steps", "eval_throttle_secs", "keep_checkpoint_max",
    "exports_to_keep", "verify_records", "check_finite_loss"])
# Settings the table shows in columns of their own (or that follow from those).
_SHOWN = frozenset(["head", "images_per_identity", "margin", "gamma", "scale", "train_steps",
                    "far_target"])


def load_run(model_dir):
    """``(name, params, report)`` of one run; ValueError naming what is missing."""
    params_path = os.path.join(model_dir, "params.json")
    if not os.path.isfile(params_path):
        raise ValueError(f"{model_dir} has no params.json: not a model_dir of estimator_main.py")
    with open(params_path, encoding="utf-8") as f:
        params = json.load(f)
    try:
        report = report_lib.read_report(os.path.join(model_dir, "eval"))
    except FileNotFoundError:
        raise ValueError(f"{model_dir} has no eval/report.json: its training has not "
                         "finished") from None
    return os.path.basename(os.path.normpath(model_dir)), params, report


def _mean(values):
    return sum(values) / float(len(values))


def summarize(runs):
    """Rows (dicts) of the table: runs with the same head and settings but another seed are one
    row, with the mean of each metric, the per-seed accuracies and the seeds."""
    groups = collections.OrderedDict()
    for name, params, report in runs:
        key = tuple(sorted((k, json.dumps(v)) for k, v in params.items()
                           if k not in _RUN_MECHANICS))
        groups.setdefault(key, []).append((name, params, report))
    rows = []
    for members in groups.values():
        params = members[0][1]
        row = collections.OrderedDict([
            ("runs", [name for name, _, _ in members]),
            ("head", params["head"]),
            ("batches", f"P×K, K={params['images_per_identity']}"
             if params.get("images_per_identity") else "shuffled"),
            ("margin", head_setting(params, "margin")),
            ("gamma", head_setting(params, "gamma", "scale")),
            ("seeds", [p.get("seed") for _, p, _ in members]),
            ("steps", [r.get("global_step") for _, _, r in members]),
            ("seed_accuracy", [r["accuracy"] for _, _, r in members]),
            ("far_target", members[0][2].get("far_target") or params.get("far_target")),
        ])
        row["params"] = params
        minutes = [r.get("extra", {}).get("wall_seconds") for _, _, r in members]
        row["wall_minutes"] = (_mean(minutes) / 60.0 if all(m is not None for m in minutes)
                               else None)
        for metric in _METRICS:
            row[metric] = _mean([r[metric] for _, _, r in members])
        rows.append(row)
    return rows


def head_setting(params, *names):
    """The first of ``names`` the run's head uses, as its params.json records the head's
    declared settings (``head_config``), or None; runs recorded before it: plain softmax has no
    margin (its --margin was ignored), the circle heads' scale is gamma, the others' scale."""
    config = params.get("head_config")
    if not isinstance(config, dict):
        head = params.get("head") or ""
        config = {"margin": None if head == "softmax" else params.get("margin"),
                  ("gamma" if head.startswith("circle") else "scale"):
                      params.get("gamma") if head.startswith("circle") else params.get("scale")}
    return next((config[name] for name in names if name in config), None)


def differing_settings(rows):
    """Names of the settings, other than the table's own columns, in which the rows differ
    (e.g. ``partial_fc_rate``, ``backbone``, ``train_records``), sorted."""
    names = set()
    for row in rows:
        names.update(row.get("params", {}))
    names -= _SHOWN | _RUN_MECHANICS
    return sorted(name for name in names if not name.startswith("num_")  # sizes read from data
                  and all(_is_scalar(row.get("params", {}).get(name)) for row in rows)
                  and len({json.dumps(row.get("params", {}).get(name)) for row in rows}) > 1)


def _is_scalar(value):
    # Lists and dicts in params.json are derived (eval sets, transforms), not settings.
    return not isinstance(value, (list, dict))


def _setting(value):
    """A setting's value as the table shows it: paths by their last two parts."""
    if isinstance(value, str) and "/" in value:
        return "/".join(value.rstrip("/").split("/")[-2:])
    return json.dumps(value) if not isinstance(value, str) else value


def markdown_table(rows):
    """The Markdown table of :func:`summarize`'s rows; when the rows differ in settings the
    columns do not show (Partial FC rate, backbone, records...), a last column names them."""
    far = (rows[0]["far_target"] if rows else None) or 1e-3
    others = differing_settings(rows)
    lines = ["| head | batches | m | γ / s | accuracy ± std | seeds (accuracy each) | "
             f"VAL@FAR={far:g} | AUC | EER | steps | minutes |" + (" settings |" if others else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if others else "")]
    for row in rows:
        seeds = ", ".join(f"{s}: {a:.4f}" for s, a in zip(row["seeds"], row["seed_accuracy"]))
        minutes = f"{row['wall_minutes']:.0f}" if row["wall_minutes"] is not None else "—"
        lines.append(f"| `{row['head']}` | {row['batches']} | {_number(row['margin'])} | "
                     f"{_number(row['gamma'])} | {row['accuracy']:.4f} ± {row['accuracy_std']:.4f} "
                     f"| {seeds} | {row['val']:.4f} | {row['auc']:.4f} | {row['eer']:.4f} | "
                     f"{'/'.join(str(s) for s in sorted(set(row['steps'])))} | {minutes} |")
        if others:
            # null: an option of another head (--subcenters on an arcface row), or a setting
            # older runs did not record.
            lines[-1] += " " + ", ".join(f"{name}={_setting(row['params'].get(name))}"
                                         for name in others
                                         if row["params"].get(name) is not None) + " |"
    return "\n".join(lines)


def _number(value):
    return "—" if value is None else f"{value:g}"
