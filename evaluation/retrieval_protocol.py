"""The retrieval protocol: Recall@K, R-precision and MAP@R on image records of held-out
identities (``--eval_protocol=retrieval``; the metric: ``evaluation.retrieval_metric``).

The records are presented in the pair layout (records ``2i``, ``2i + 1`` as pair ``i``), so
the model's pair EVAL spec serves it unchanged. Its metric runs in the graph: no Ascend host
path yet. The best export is ranked by ``retrieval/map@r``.
"""

import os

from data_tools import input_fns, manifest
from evaluation import protocol, retrieval_metric


class RetrievalProtocol(protocol.EvalProtocol):
    """``records``: one directory of image records; ``num_images``: how many (0 for a run that
    evaluates nothing)."""

    name = "retrieval"
    runs_on_host = False

    def __init__(self, records, num_images=0, **common):
        super().__init__(**common)
        self.records = records
        self.num_images = int(num_images or 0)

    @classmethod
    def resolve(cls, p, eval_sets, named):
        if named:
            raise ValueError("--eval_protocol=retrieval takes one directory of image records "
                             "in --eval_records, not named sets (several sets are "
                             "verification pairs)")
        if p["best_metric"]:
            raise ValueError("--best_metric applies to --eval_protocol=verification (the "
                             "retrieval exporter keeps the best "
                             f"{retrieval_metric.PREFIX}/{retrieval_metric.BEST_METRIC})")
        cls._check_device(p)
        info = manifest.read_manifest(p["eval_records"])
        if info.get("kind") != "images":
            raise ValueError("--eval_protocol=retrieval needs image records of held-out "
                             f"identities; --eval_records={p['eval_records']} holds "
                             f"{info.get('kind')} records")
        p["num_eval_images"] = int(info["num_images"])
        if p["num_eval_images"] < 2:
            raise ValueError(f"--eval_records={p['eval_records']} holds fewer than 2 images")
        protocol.verify_records(p["eval_records"], p["verify_records"])

    @classmethod
    def from_params(cls, p):
        return cls(p.get("eval_records"), p.get("num_eval_images"), **cls._common(p))

    @property
    def eval_name(self):
        return retrieval_metric.PREFIX

    def input_fn(self):
        return input_fns.image_pairs_input_fn_builder(
            self.records, image_size=self.image_size, flip_tta=self.flip,
            num_images=self.num_images, batch_size=self.batch_size)

    def metric_fn(self):
        if not self.num_images:
            return None
        return retrieval_metric.retrieval_metrics_fn_builder(
            input_fns.image_record_labels(self.records))

    @property
    def best_metric(self):
        return f"{retrieval_metric.PREFIX}/{retrieval_metric.BEST_METRIC}"

    def export_report_fn(self):
        return retrieval_metric.report_fn()

    def round_summary(self, eval_result):
        step = eval_result.get("global_step")
        prefix = retrieval_metric.PREFIX
        scores = ", ".join(f"{name} {float(eval_result[f'{prefix}/{name}']):.4f}"
                           for name in retrieval_metric.scalar_names()[:-1]
                           if f"{prefix}/{name}" in eval_result)
        return f"evaluation at step {step}: {scores}"

    def write_report(self, eval_result, model_dir, extra):
        metrics = retrieval_metric.metrics_from_eval_result(eval_result)
        path = retrieval_metric.write_report(metrics, os.path.join(model_dir, "eval"), extra)
        scores = ", ".join(f"{k} {metrics[k]:.4f}" for k in retrieval_metric.scalar_names()[:-1])
        print(f"Retrieval at step {metrics.get('global_step')}: {scores} -> {path}")
        return metrics
