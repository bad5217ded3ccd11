"""The evaluation protocol interface: one object answers every question the run asks about
its evaluation, so the composition layer (``training/``) asks none of them itself.

``--eval_protocol`` names a protocol (``evaluation.registry``). A protocol:

* checks its settings against its records once, when the run's params are built
  (:meth:`EvalProtocol.resolve`: one-line ``ValueError``), and is then bound to them
  (:meth:`EvalProtocol.from_params`);
* supplies its eval ``input_fn``, its metric function and the pair EVAL/PREDICT spec that
  ``model.model_fn.model_fn_builder`` receives (``eval_spec_fn``);
* evaluates a checkpoint (:meth:`EvalProtocol.evaluate`: in the graph, or on the Ascend host
  path: the device computes the embeddings (PREDICT), :meth:`host_metrics` the numbers);
* says which metric ranks the best export and which report files go with it
  (``export.exporters`` builds the exporters from them), what to log each round, and writes
  its report.

As in tensorflow/models' ``resnet_run_loop``, the run loop is shared (``training/runner.py``)
and the suppliers are thin: a new protocol is one module with a subclass plus its line in
``evaluation/registry.py``.
"""

import tensorflow.compat.v1 as tf

from data_tools import manifest
from evaluation import pair_specs


def verify_records(records, enabled):
    """A damaged or cut-short shard is named now, not met as a DataLossError mid-training."""
    if enabled and "://" not in records:  # object stores: the copy tool checks, not us
        manifest.verify_shards(records)


class EvalProtocol:
    """Base of the evaluation protocols; subclasses set :attr:`name` and supply the pieces.

    ``image_size``, ``flip`` (flip test-time augmentation), ``batch_size``: the eval input;
    ``on_host``: evaluate on the host from PREDICT outputs (Ascend: no ``py_func`` on the
    device), not with metric ops in the graph.
    """

    name = None  # the --eval_protocol value
    # Whether the protocol has a host path (--device=npu): checked by resolve().
    runs_on_host = False

    def __init__(self, image_size, flip=True, batch_size=64, on_host=False):
        self.image_size = image_size
        self.flip = flip
        self.batch_size = batch_size
        self.on_host = on_host

    # ---- settings ---------------------------------------------------------------------------

    @classmethod
    def resolve(cls, p, sets, named):
        """Check this protocol's settings against its records' manifests and record what the
        run needs (sizes, the resolved best metric) in the params dict ``p``; ``sets``, ``named``
        as ``evaluation.sets.parse_eval_records`` gives them. ``ValueError``: one line."""
        raise NotImplementedError

    @classmethod
    def from_params(cls, p):
        """The protocol bound to a params dict (``training/params.py``); before
        :meth:`resolve` ran (a run that evaluates nothing) it has no records to evaluate."""
        raise NotImplementedError

    @classmethod
    def _check_device(cls, p):
        if p["device"] == "npu" and not cls.runs_on_host:
            raise ValueError(f"--eval_protocol={cls.name} is not available on --device=npu "
                             "yet (its metric runs in the graph; the Ascend host path covers "
                             "verification)")

    @staticmethod
    def _common(p):
        return dict(image_size=p["image_size"], flip=p["eval_flip"],
                    batch_size=p["eval_batch_size"], on_host=p["device"] == "npu")

    # ---- the pieces the run asks for --------------------------------------------------------

    @property
    def eval_name(self):
        """The evaluation's name (its summaries go to model_dir/eval_<name>)."""
        return self.name

    def input_fn(self):
        """The eval ``input_fn`` (pair features, see ``evaluation.pair_specs``)."""
        raise NotImplementedError

    def metric_fn(self):
        """The metric function of the pair EVAL spec, or None (nothing to evaluate yet)."""
        raise NotImplementedError

    def eval_spec_fn(self):
        """What ``model_fn_builder`` receives: the pair EVAL/PREDICT specs with this protocol's
        metric (none in the graph on the host path)."""
        return pair_specs.pair_spec_fn_builder(None if self.on_host else self.metric_fn(),
                                               self.flip)

    @property
    def best_metric(self):
        """The ``eval_result`` key that ranks the best export (higher is better)."""
        raise NotImplementedError

    def export_report_fn(self):
        """``fn(eval_result, directory) -> {name: path}``: the report files of a best export."""
        raise NotImplementedError

    def round_loggers(self):
        """``tf.estimator.Exporter`` objects that only log each evaluation round."""
        return []

    def round_summary(self, eval_result):
        """The one line of an evaluation round: the step and the headline metrics."""
        raise NotImplementedError

    def write_report(self, eval_result, model_dir, extra):
        """Write the evaluation's report under ``model_dir/eval``, print where; returns its
        metrics."""
        raise NotImplementedError

    # ---- evaluating a checkpoint ------------------------------------------------------------

    def evaluate(self, estimator, checkpoint_path=None):
        """One evaluation of a checkpoint (default: the latest), as ``estimator.evaluate``'s
        dict: metric ops in the graph, or on the host path the device's PREDICT outputs
        evaluated by :meth:`host_metrics`, in numpy, by the same protocol."""
        if not self.on_host:
            return estimator.evaluate(self.input_fn(), name=self.eval_name,
                                      checkpoint_path=checkpoint_path)
        checkpoint_path = checkpoint_path or tf.train.latest_checkpoint(estimator.model_dir)
        if checkpoint_path is None:
            raise ValueError(f"no checkpoint to evaluate in {estimator.model_dir}")
        step = tf.train.load_variable(checkpoint_path, tf.GraphKeys.GLOBAL_STEP)
        predictions = estimator.predict(self.input_fn(), checkpoint_path=checkpoint_path,
                                        yield_single_examples=True)
        return self.host_metrics(predictions, step)

    def host_metrics(self, predictions, global_step):
        """The metrics of the PREDICT outputs, keyed as ``estimator.evaluate()``'s."""
        raise NotImplementedError
