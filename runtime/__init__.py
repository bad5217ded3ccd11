"""Where things run: the estimator factory (CPU, GPU, Ascend NPU), the runtime settings and
their device rules, the cluster a process belongs to (TF_CONFIG, the Ascend rank) and the part
of the training records it reads. ``model/`` and ``data_tools/`` do not import it; ``training/``
hands it a ``model_fn`` and hands the input_fns what it computes (docs/DESIGN.md, "Where things
run")."""
