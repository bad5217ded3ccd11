"""The verification protocol (LFW View 2) over N named pair sets; one set is N = 1.

``--eval_records=DIR`` is one set named ``lfw``; ``--eval_records=lfw=DIR,cfp_fp=DIR`` names
several, evaluated in one pass (``evaluation.sets``). In the graph the metric ops are
``evaluation.verification_metric``'s; on Ascend the device computes the pair embeddings and the
same protocol runs on the host. The best export is ranked by ``--best_metric`` (default: the
first set's accuracy) and carries each set's report.
"""

import os

from data_tools import input_fns, manifest
from evaluation import protocol, reports, sets, verification_metric

SETS_EVAL_NAME = "verification"  # several sets: model_dir/eval_verification


class VerificationProtocol(protocol.EvalProtocol):
    """``eval_sets``: ``[(name, records, num_pairs, num_folds)]`` in evaluation order (empty
    for a run that evaluates nothing); ``named``: the sets were given as ``name=DIR`` (their
    reports go to ``eval/<name>/``, with a table per round)."""

    name = "verification"
    runs_on_host = True

    def __init__(self, eval_sets, named=False, far_target=1e-3, best_metric=None, **common):
        super().__init__(**common)
        self.sets = [(str(n), records, int(pairs), int(folds))
                     for n, records, pairs, folds in eval_sets]
        self.named = bool(named)
        self.far_target = far_target
        self._best_metric = best_metric or (f"{self.sets[0][0]}/accuracy" if self.sets
                                            else None)

    @classmethod
    def resolve(cls, p, eval_sets, named):
        """``p["eval_sets"]``: each set's name, records, pairs and folds, from its manifest;
        ``p["best_metric"]`` resolved against them."""
        p["eval_sets"] = []
        for set_name, records in eval_sets:
            info = manifest.read_manifest(records)
            if info.get("kind") != "pairs":
                if named:
                    raise ValueError(
                        f"--eval_records: set {set_name} ({records}) holds {info.get('kind')} "
                        "records, not pairs (several sets are verification pairs; "
                        "--eval_protocol=retrieval takes one directory of image records)")
                raise ValueError(f"--eval_records={records} holds {info.get('kind')} records, "
                                 "not pairs")
            p["eval_sets"].append({"name": set_name, "records": records,
                                   "num_pairs": int(info["num_pairs"]),
                                   "num_folds": int(info.get("num_folds", 10))})
            protocol.verify_records(records, p["verify_records"])
        p["eval_sets_named"] = named
        if len(eval_sets) == 1:
            p["num_pairs"] = p["eval_sets"][0]["num_pairs"]
            p["num_folds"] = p["eval_sets"][0]["num_folds"]
        p["best_metric"] = sets.resolve_best_metric(p["best_metric"],
                                                    [set_name for set_name, _ in eval_sets])

    @classmethod
    def from_params(cls, p):
        eval_sets = [(s["name"], s["records"], s["num_pairs"], s["num_folds"])
                     for s in p.get("eval_sets") or []]
        return cls(eval_sets, named=p.get("eval_sets_named", False),
                   far_target=p["far_target"], best_metric=p.get("best_metric"),
                   **cls._common(p))

    @property
    def eval_name(self):
        if len(self.sets) > 1:
            return SETS_EVAL_NAME
        return self.sets[0][0] if self.sets else sets.DEFAULT_NAME

    def _sizes(self):
        return [(set_name, pairs, folds) for set_name, _, pairs, folds in self.sets]

    def input_fn(self):
        if len(self.sets) == 1:
            _, records, num_pairs, _ = self.sets[0]
            return input_fns.pairs_input_fn_builder(
                records, image_size=self.image_size, flip_tta=self.flip, num_pairs=num_pairs,
                batch_size=self.batch_size)
        return input_fns.pair_sets_input_fn_builder(
            [(records, pairs) for _, records, pairs, _ in self.sets], image_size=self.image_size,
            flip_tta=self.flip, batch_size=self.batch_size)

    def metric_fn(self):
        if not self.sets:
            return None
        if len(self.sets) == 1:
            set_name, _, num_pairs, n_folds = self.sets[0]
            return verification_metric.verification_metrics_fn_builder(
                num_pairs, n_folds=n_folds, far_target=self.far_target, prefix=set_name)
        return verification_metric.verification_sets_metrics_fn_builder(
            self._sizes(), far_target=self.far_target)

    def host_metrics(self, predictions, global_step):
        if len(self.sets) == 1:
            set_name, _, num_pairs, n_folds = self.sets[0]
            return verification_metric.verification_on_host(
                predictions, num_pairs, n_folds, self.far_target, set_name,
                global_step=global_step)
        return verification_metric.verification_sets_on_host(
            predictions, self._sizes(), self.far_target, global_step=global_step)

    @property
    def best_metric(self):
        return self._best_metric

    def _names(self):
        return [set_name for set_name, _, _, _ in self.sets]

    def export_report_fn(self):
        if self.named:
            return sets.sets_report_fn(self._names())
        return verification_metric.report_fn(sets.DEFAULT_NAME)

    def round_loggers(self):
        if not self.named:
            return []
        return [sets.SetsTableLogger([(n, pairs) for n, _, pairs, _ in self.sets],
                                     self.far_target)]

    def round_summary(self, eval_result):
        step = eval_result.get("global_step")
        if self.named:
            scores = ", ".join(f"{n} {float(eval_result[n + '/accuracy']):.4f}"
                               for n in self._names() if n + "/accuracy" in eval_result)
            return f"evaluation at step {step}: accuracy {scores}"
        prefix = sets.DEFAULT_NAME
        m = {key: float(eval_result[f"{prefix}/{key}"])
             for key in ("accuracy", "accuracy_std", "auc", "eer")
             if f"{prefix}/{key}" in eval_result}
        return (f"evaluation at step {step}: accuracy {m.get('accuracy', float('nan')):.4f} ± "
                f"{m.get('accuracy_std', float('nan')):.4f}, AUC {m.get('auc', float('nan')):.4f}"
                f", EER {m.get('eer', float('nan')):.4f}")

    def write_report(self, eval_result, model_dir, extra):
        eval_dir = os.path.join(model_dir, "eval")
        if self.named:
            return self._write_sets_reports(eval_result, eval_dir, extra)
        metrics = verification_metric.metrics_from_eval_result(eval_result, sets.DEFAULT_NAME)
        paths = reports.write_report(metrics, eval_dir, extra=extra)
        m = metrics
        print(f"LFW-style verification at step {m.get('global_step')}: accuracy "
              f"{m['accuracy']:.4f} ± {m['accuracy_std']:.4f}, VAL@FAR={self.far_target:g} "
              f"{m['val']:.4f}, AUC {m['auc']:.4f}, EER {m['eer']:.4f} (threshold "
              f"{m['threshold']:.2f}) -> {paths[0]}")
        if "threshold_single" in metrics:
            print("  without flip TTA (one embedding per image): accuracy "
                  f"{m['accuracy_single']:.4f}, threshold {m['threshold_single']:.2f}")
        return metrics

    def _write_sets_reports(self, eval_result, eval_dir, extra):
        """Named sets: report.json and roc.png of each in eval/<name>/ (the first set's also in
        eval/), and the table of the sets."""
        names = self._names()
        sets.write_sets_reports(eval_result, names, eval_dir, extra)
        print(sets.sets_table(eval_result, [(n, pairs) for n, _, pairs, _ in self.sets],
                              self.far_target))
        written = [os.path.join(eval_dir, n, reports.REPORT_JSON) for n in names]
        print(f"reports: {', '.join(written)}")
        if self.best_metric in eval_result:
            print(f"{self.best_metric}: {float(eval_result[self.best_metric]):.4f}")
        return {n: verification_metric.metrics_from_eval_result(eval_result, n) for n in names}
