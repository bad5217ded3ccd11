"""Fake ``NPURunConfig``: a ``tf.estimator.RunConfig`` that records the Ascend settings.

The constructor keeps the real keyword names and defaults (CANN's TF 1.15 adapter) for the
settings a training script passes, and the real checks on them; unknown keywords fail as they
would on the real class. It adds no public attribute the real class lacks, so code that works
with the fake cannot depend on anything the real one does not have. Nothing here talks to a
device.
"""

import tensorflow.compat.v1 as tf

CREATED = []


class NPURunConfig(tf.estimator.RunConfig):
    """RunConfig with the Ascend fields (``iterations_per_loop``, ``precision_mode``, ...)."""

    def __init__(self, iterations_per_loop=1, profiling_config=None, model_dir=None,
                 tf_random_seed=None, save_summary_steps=0, save_checkpoints_steps=None,
                 save_checkpoints_secs=None, session_config=None, keep_checkpoint_max=5,
                 keep_checkpoint_every_n_hours=10000, log_step_count_steps=100, distribute=None,
                 enable_data_pre_proc=True, precision_mode=None, enable_reduce_precision=False,
                 variable_format_optimize=True, mix_compile_mode=False, hcom_parallel=False,
                 graph_memory_max_size=None, variable_memory_max_size=None,
                 auto_tune_mode=None, dump_config=None, stream_max_parallel_num=None,
                 is_tailing_optimization=False, horovod_mode=False, graph_run_mode=1,
                 op_debug_level=0, enable_scope_fusion_passes=None):
        if (isinstance(iterations_per_loop, bool) or not isinstance(iterations_per_loop, int)
                or iterations_per_loop <= 0):
            raise ValueError("iterations_per_loop must be a positive integer, got "
                             f"{iterations_per_loop!r}")
        if not isinstance(mix_compile_mode, bool):
            raise ValueError('"mix_compile_mode" type must be bool')
        if mix_compile_mode and iterations_per_loop != 1:
            raise ValueError('"iterations_per_loop" must be 1 with "mix_compile_mode" is True')
        if distribute is not None:
            raise ValueError("the fake NPURunConfig does not model parameter-server training")
        self.iterations_per_loop = iterations_per_loop
        self.mix_compile_mode = mix_compile_mode
        self.enable_data_pre_proc = enable_data_pre_proc
        self.is_tailing_optimization = is_tailing_optimization
        self.horovod_mode = horovod_mode
        self.graph_run_mode = graph_run_mode
        self.op_debug_level = op_debug_level
        self.enable_scope_fusion_passes = enable_scope_fusion_passes
        # The real class keeps these private; NPUEstimator reads them into the session config.
        self._profiling_config = profiling_config
        self._precision_mode = precision_mode
        self._enable_reduce_precision = enable_reduce_precision
        self._variable_format_optimize = variable_format_optimize
        self._hcom_parallel = hcom_parallel
        self._graph_memory_max_size = graph_memory_max_size
        self._variable_memory_max_size = variable_memory_max_size
        self._auto_tune_mode = auto_tune_mode
        self._dump_config = dump_config
        self._stream_max_parallel_num = stream_max_parallel_num
        # As the real one: checkpoints every 100 steps unless told otherwise.
        if save_checkpoints_secs is None and save_checkpoints_steps is None:
            save_checkpoints_steps = 100
        super().__init__(
            model_dir=model_dir, tf_random_seed=tf_random_seed,
            save_summary_steps=save_summary_steps,
            save_checkpoints_steps=save_checkpoints_steps,
            save_checkpoints_secs=save_checkpoints_secs, session_config=session_config,
            keep_checkpoint_max=keep_checkpoint_max,
            keep_checkpoint_every_n_hours=keep_checkpoint_every_n_hours,
            log_step_count_steps=log_step_count_steps)
        CREATED.append(self)

