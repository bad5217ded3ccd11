"""``model_fn_builder`` from flat keyword settings, for tests and benchmarks that vary a few.

The builder takes typed configs and a built head; this sorts flat settings (``backbone="tiny",
gamma=32, total_steps=20, ...``) into them, with the same defaults as the configs. The pair
EVAL/PREDICT settings ``eval_metrics_fn`` and ``eval_flip`` become the verification protocol's
``eval_spec_fn`` (``evaluation.pair_specs``), as ``training/builders.py`` hands it over.
"""

from evaluation import pair_specs
from model import config as model_config
from model import heads, model_fn

HEAD_KEYS = ("margin", "gamma", "scale", "class_weight", "pair_weight", "proxy_partitions",
             "partial_fc_rate") + tuple(heads.declared_options())
BACKBONE_KEYS = ("embedding_size", "image_size", "dropout_rate", "precision")


def build_model_fn(backbone, head, num_classes, **settings):
    head_settings = {k: settings.pop(k) for k in HEAD_KEYS if k in settings}
    backbone_settings = {k: settings.pop(k) for k in BACKBONE_KEYS if k in settings}
    optimization_settings = {k: settings.pop(k) for k in model_config.OptimizationConfig._fields
                             if k in settings}
    backbone_config = model_config.BackboneConfig(backbone, **backbone_settings)
    built_head = heads.build_head(head, num_classes=num_classes,
                                  embedding_size=backbone_config.embedding_size, **head_settings)
    optimization = model_config.OptimizationConfig(**optimization_settings)
    if "eval_spec_fn" not in settings:
        settings["eval_spec_fn"] = pair_specs.pair_spec_fn_builder(
            settings.pop("eval_metrics_fn", None), settings.pop("eval_flip", True))
    return model_fn.model_fn_builder(backbone_config, built_head, optimization, **settings)
