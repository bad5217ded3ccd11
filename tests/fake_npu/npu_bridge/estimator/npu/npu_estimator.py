"""Fake ``NPUEstimator``: a ``tf.estimator.Estimator`` that insists on an ``NPURunConfig``.

Like the real one it wraps the user's ``model_fn`` (passing only the arguments it declares) and
hands ``params`` on as a dict; the wrapper records every mode it builds a graph for.
"""

import inspect

import tensorflow.compat.v1 as tf

from npu_bridge.estimator.npu.npu_config import NPURunConfig

CREATED = []
MODEL_FN_MODES = []


def _arg_names(fn):
    return set(inspect.signature(fn).parameters)


class NPUEstimator(tf.estimator.Estimator):
    """Estimator for Ascend; here it runs the wrapped model_fn on the CPU."""

    def __init__(self, model_fn=None, model_dir=None, config=None, params=None,
                 job_start_file="", warm_start_from=None):
        if config is None or not isinstance(config, NPURunConfig):
            raise ValueError("`config` must be provided with type `NPURunConfig`")
        if model_fn is None:
            raise ValueError("model_fn must be provided")
        declared = _arg_names(model_fn)
        if params and "params" not in declared:
            raise ValueError(f"model_fn does not include params argument, but params ({params!r}) "
                             "are passed to Estimator.")
        self.job_start_file = job_start_file

        def npu_model_fn(features, labels, mode, params, config):
            kwargs = {}
            for name, value in (("labels", labels), ("mode", mode), ("params", params),
                                ("config", config)):
                if name in declared:
                    kwargs[name] = value
            spec = model_fn(features=features, **kwargs)
            if not isinstance(spec, tf.estimator.EstimatorSpec):
                raise RuntimeError("estimator_spec used by NPU must have type "
                                   f"`NPUEstimatorSpec` or `EstimatorSpec`. Got {type(spec)}")
            MODEL_FN_MODES.append(mode)
            return spec

        super().__init__(model_fn=npu_model_fn, model_dir=model_dir,
                                           config=config, params=params or {},
                                           warm_start_from=warm_start_from)
        CREATED.append(self)
