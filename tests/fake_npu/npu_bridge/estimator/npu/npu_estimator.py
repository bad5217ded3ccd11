"""Fake ``NPUEstimator``: a ``tf.estimator.Estimator`` that insists on an ``NPURunConfig``.

Like the real one it wraps the user's ``model_fn`` (passing only the arguments it declares) and
hands ``params`` on as a dict; the wrapper records every mode it builds a graph for. It refuses
what the device refuses: a graph with a ``py_func`` (CANN's default mode runs the whole graph on
the device, which cannot call back into Python), and training or evaluation hooks that fetch
graph tensors (the device runs ``iterations_per_loop`` steps per session call; such hooks see
nothing or break the loop).
"""

import inspect

import tensorflow.compat.v1 as tf

from npu_bridge.estimator.npu.npu_config import NPURunConfig

CREATED = []
MODEL_FN_MODES = []

HOST_OPS = ("PyFunc", "PyFuncStateless", "EagerPyFunc")


def _holds_tensors(value, depth=0):
    if isinstance(value, tf.Tensor):
        return True
    if depth > 3:
        return False
    if isinstance(value, dict):
        return any(_holds_tensors(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_tensors(v, depth + 1) for v in value)
    return False


def _check_device_graph(spec):
    host_ops = [f"{op.name} ({op.type})" for op in tf.get_default_graph().get_operations()
                if op.type in HOST_OPS]
    if host_ops:
        raise RuntimeError(f"the graph holds {host_ops}, which the NPU cannot run in this mode "
                           "(mix_compile_mode with iterations_per_loop=1 is needed)")
    for hooks in (spec.training_hooks, spec.evaluation_hooks):
        for hook in hooks or ():
            if any(_holds_tensors(v) for v in vars(hook).values()):
                raise RuntimeError(f"{type(hook).__name__} fetches device tensors; the NPU "
                                   "estimator does not run such hooks")


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
                raise RuntimeError("estimator_spec used by NPU must have type `NPUEstimatorSpec` "
                                   f"or `EstimatorSpec`. Got {type(spec)}")
            _check_device_graph(spec)
            MODEL_FN_MODES.append(mode)
            return spec

        super().__init__(model_fn=npu_model_fn, model_dir=model_dir,
                                           config=config, params=params or {},
                                           warm_start_from=warm_start_from)
        CREATED.append(self)
