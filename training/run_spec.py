"""The run spec: every setting of one run as one frozen, typed value, saved as params.json.

``training.params.build_params`` resolves the flag values (record sizes from the manifests,
steps from epochs, the worker count from TF_CONFIG) and hands them to :meth:`RunSpec.build`,
which builds the typed configs, one per concern, once: their constructors are the validation (a
bad value is a :class:`ParamsError` of one line), and what they resolve (the backbone's image
size, the head's default margin and options) is written into the spec before it is frozen.
From then on nothing changes it: the builders, the runner and the run record read it, and a
variation is a new spec (:meth:`RunSpec.replace`).

The spec is a read-only mapping of its flat settings (``spec["batch_size"]``: the keys of
``params.json``, each in one section) and holds the typed sections as attributes:

=================  =====================================================================
section            type (its constructor validates)
=================  =====================================================================
``data``           :class:`DataConfig`: mode, model_dir, records, sizes, transforms
``backbone``       ``model.config.BackboneConfig``
``head``           the built ``model.heads.Head`` (None for ``--head=none``); its options
                   are the head's own declarations (``Head.options``)
``optimization``   ``model.config.OptimizationConfig``
``input``          ``data_tools.input_config.InputConfig``
``runtime``        ``runtime.config.RuntimeConfig``
``distillation``   ``model.distillation.DistillationConfig``
``protocol``       :class:`ProtocolConfig`: the evaluation protocol's settings
``checkpoints``    :class:`CheckpointConfig`: checkpoints, warm start, logging
=================  =====================================================================

It is written as ``params.json`` in model_dir and read back from there by evaluate and export
(:meth:`RunSpec.from_run_dir`, as BERT's ``BertConfig.from_json_file``). params.json files of
older versions load: a key they lack takes the value that reproduces what that version did
(the flag default, or for ``distill_center`` "off": older runs did not centre the teacher), and
a file that cannot describe a model fails with one line saying what to do.
"""

import collections
import collections.abc
import json
import os

import tensorflow.compat.v1 as tf

from data_tools import input_config
from data_tools.checks import check as _check
from data_tools.checks import is_int as _int
from data_tools.checks import is_real as _real
from evaluation import registry
from model import config as model_config
from model import distillation, heads
from runtime.config import RuntimeConfig

MODES = ("train", "evaluate", "train_and_evaluate", "export")
NO_HEAD = "none"  # --head=none: the distillation term alone (no identity labels needed)
EVAL_PROTOCOLS = registry.names()  # those registered when training/ is imported
WARM_START_VARS = ("auto", "backbone", "all")
PARAMS_NAME = "params.json"


class ParamsError(ValueError):
    """Inconsistent settings, reported before any graph is built."""


class DataConfig(collections.namedtuple("DataConfig", [
        "mode", "model_dir", "train_records", "eval_records", "data_url", "train_url",
        "num_classes", "num_train_images", "train_transform", "eval_transform",
        "verify_records", "allow_transform_mismatch"])):
    """What the run reads and where it writes: mode, model_dir, the records and what their
    manifests say (class and image counts, the conversion transforms)."""

    __slots__ = ()

    def __new__(cls, mode, model_dir, train_records=None, eval_records=None, data_url=None,
                train_url=None, num_classes=None, num_train_images=None, train_transform=None,
                eval_transform=None, verify_records=True, allow_transform_mismatch=False):
        _check(mode in MODES, f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
        _check(bool(model_dir), "--model_dir (or --train_url) is required")
        _check(num_classes is None or (_int(num_classes) and num_classes >= 1),
               f"num_classes must be a positive integer, got {num_classes!r}")
        return super().__new__(cls, mode, model_dir, train_records, eval_records, data_url,
                               train_url, num_classes, num_train_images, train_transform,
                               eval_transform, bool(verify_records),
                               bool(allow_transform_mismatch))


class ProtocolConfig(collections.namedtuple("ProtocolConfig", [
        "eval_protocol", "eval_sets", "eval_sets_named", "num_pairs", "num_folds",
        "num_eval_images", "best_metric", "far_target", "eval_flip", "eval_batch_size",
        "eval_throttle_secs", "exports_to_keep"])):
    """How the run evaluates: the protocol, its sets (read from their manifests), the metric
    the best exporter keeps, and the evaluation's batch, flip and pace."""

    __slots__ = ()

    def __new__(cls, eval_protocol="verification", eval_sets=None, eval_sets_named=None,
                num_pairs=None, num_folds=None, num_eval_images=None, best_metric=None,
                far_target=1e-3, eval_flip=True, eval_batch_size=64, eval_throttle_secs=60,
                exports_to_keep=3):
        # The registry now, not at import: a protocol registered later (a test's) is valid.
        _check(eval_protocol in registry.names(), "--eval_protocol must be one of "
               f"{', '.join(registry.names())}, got {eval_protocol!r}")
        _check(_real(far_target) and 0.0 < far_target < 1.0,
               f"--far_target must be in (0, 1), got {far_target!r}")
        _check(_int(eval_batch_size) and eval_batch_size > 0, "batch sizes must be positive")
        _check(_int(eval_throttle_secs) and eval_throttle_secs >= 0,
               f"--eval_throttle_secs must not be negative, got {eval_throttle_secs!r}")
        _check(_int(exports_to_keep) and exports_to_keep >= 1,
               f"--exports_to_keep must be at least 1, got {exports_to_keep!r}")
        return super().__new__(cls, eval_protocol, eval_sets, eval_sets_named, num_pairs,
                               num_folds, num_eval_images, best_metric, float(far_target),
                               bool(eval_flip), int(eval_batch_size), int(eval_throttle_secs),
                               int(exports_to_keep))


class CheckpointConfig(collections.namedtuple("CheckpointConfig", [
        "save_checkpoints_steps", "save_summary_steps", "keep_checkpoint_max",
        "checkpoint_path", "warm_start_from", "warm_start_vars", "warm_start_scopes",
        "log_every_n_steps", "progress", "check_finite_loss"])):
    """Checkpoints (interval, how many kept, which one evaluate/export restore), the warm start
    of a fine-tuning run, and what the run logs while it trains."""

    __slots__ = ()

    def __new__(cls, save_checkpoints_steps=500, save_summary_steps=100, keep_checkpoint_max=5,
                checkpoint_path=None, warm_start_from=None, warm_start_vars="auto",
                warm_start_scopes=None, log_every_n_steps=100, progress=True,
                check_finite_loss=True):
        _check(_int(save_checkpoints_steps) and save_checkpoints_steps > 0,
               f"--save_checkpoints_steps must be positive, got {save_checkpoints_steps!r}")
        _check(_int(save_summary_steps) and save_summary_steps >= 0,
               f"--save_summary_steps must not be negative, got {save_summary_steps!r}")
        _check(_int(keep_checkpoint_max) and keep_checkpoint_max >= 0,
               f"--keep_checkpoint_max must not be negative, got {keep_checkpoint_max!r}")
        _check(warm_start_vars in WARM_START_VARS, "--warm_start_vars must be one of "
               f"{', '.join(WARM_START_VARS)}, got {warm_start_vars!r}")
        _check(_int(log_every_n_steps) and log_every_n_steps > 0,
               f"--log_every_n_steps must be positive, got {log_every_n_steps!r}")
        return super().__new__(cls, int(save_checkpoints_steps), int(save_summary_steps),
                               int(keep_checkpoint_max), checkpoint_path, warm_start_from,
                               warm_start_vars, warm_start_scopes, int(log_every_n_steps),
                               bool(progress), bool(check_finite_loss))


# The shared hyperparameters of the heads (one flag each); a head's own options come from its
# declaration (``heads.declared_options``).
HEAD_SETTINGS = ("head", "margin", "gamma", "scale", "class_weight", "pair_weight",
                 "proxy_partitions", "partial_fc_rate", "head_config")

# Each key of params.json and the section it belongs to (head options: see head_keys()).
SECTIONS = collections.OrderedDict([
    ("data", DataConfig._fields),
    ("backbone", ("backbone", "embedding_size", "image_size", "dropout_rate", "precision",
                  "grayscale")),
    ("head", HEAD_SETTINGS),
    ("optimization", ("optimizer", "learning_rate", "momentum", "weight_decay", "train_steps",
                      "train_epochs", "warmup_steps", "schedule", "decay_boundaries",
                      "decay_factor")),
    ("input", ("batch_size", "random_flip", "random_crop", "brightness_delta", "min_crop_scale",
               "contrast_delta", "shuffle_buffer", "images_per_identity", "seed")
     + input_config.Degradations._fields),
    ("runtime", ("device", "npu_precision_mode", "iterations_per_loop", "distribution",
                 "num_gpus", "num_cpu_devices", "num_workers", "worker_timeout_secs",
                 "num_replicas", "intra_op_threads", "inter_op_threads")),
    ("distillation", ("distill_weight", "distill_loss", "distill_center", "teacher_dim",
                      "teacher_mean")),
    ("protocol", ProtocolConfig._fields),
    ("checkpoints", CheckpointConfig._fields),
])

# What a key an older params.json lacks stands for: the value that reproduces what that
# version ran (the flag default; None for a value it had not resolved). distill_center: runs
# before it existed compared the teacher's vectors uncentred.
LEGACY_DEFAULTS = {
    "train_records": None, "eval_records": None, "data_url": None, "train_url": None,
    "num_train_images": None, "train_transform": None, "eval_transform": None,
    "verify_records": True, "allow_transform_mismatch": False, "teacher_dim": 0,
    "embedding_size": 512, "image_size": None, "dropout_rate": 0.0, "precision": "fp32",
    "grayscale": False,
    "margin": None, "gamma": None, "scale": 64.0, "class_weight": 1.0, "pair_weight": 1.0,
    "proxy_partitions": 1, "partial_fc_rate": 1.0, "head_config": None,
    "optimizer": "momentum", "learning_rate": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
    "train_steps": 1, "train_epochs": None, "warmup_steps": 0, "schedule": "piecewise",
    "decay_boundaries": (0.5, 0.7, 0.9), "decay_factor": 0.1,
    "batch_size": 128, "random_flip": True, "random_crop": False, "brightness_delta": 0.0,
    "min_crop_scale": 1.0, "contrast_delta": 0.0, "shuffle_buffer": 10000,
    "images_per_identity": 0, "seed": 0,
    # The degradations' defaults: off (runs before them had none).
    **input_config.Degradations()._asdict(),
    "device": "cpu", "npu_precision_mode": "allow_mix_precision", "iterations_per_loop": 100,
    "distribution": "none", "num_gpus": 0, "num_cpu_devices": 1, "num_workers": 1,
    "worker_timeout_secs": 600, "num_replicas": 1, "intra_op_threads": 0,
    "inter_op_threads": 0,
    "distill_weight": 0.0, "distill_loss": "cosine", "distill_center": False,
    "teacher_mean": None,
    "eval_protocol": "verification", "eval_sets": None, "eval_sets_named": None,
    "num_pairs": None, "num_folds": None, "num_eval_images": None, "best_metric": None,
    "far_target": 1e-3, "eval_flip": True, "eval_batch_size": 64, "eval_throttle_secs": 60,
    "exports_to_keep": 3,
    "save_checkpoints_steps": 500, "save_summary_steps": 100, "keep_checkpoint_max": 5,
    "checkpoint_path": None, "warm_start_from": None, "warm_start_vars": "auto",
    "warm_start_scopes": None, "log_every_n_steps": 100, "progress": True,
    "check_finite_loss": True,
}
# Without these a params.json does not say which network its checkpoints hold.
REQUIRED = ("mode", "backbone", "head", "num_classes")


def head_keys():
    """The keys of the head section: the shared hyperparameters and every declared option."""
    return HEAD_SETTINGS + tuple(heads.declared_options())


def section_of(key):
    """The section a params.json key belongs to, or None (a key no section knows)."""
    if key in heads.declared_options():
        return "head"
    for section, keys in SECTIONS.items():
        if key in keys:
            return section
    return None


Configs = collections.namedtuple("Configs", ["backbone", "head", "optimization", "input",
                                             "runtime", "distillation", "data", "protocol",
                                             "checkpoints"])


class _FrozenDict(dict):
    """A nested dict of the spec (an eval set, a transform): still a dict to its readers (JSON,
    ``isinstance``), but refusing changes."""

    __slots__ = ()

    def _frozen(self, *args, **kwargs):
        raise TypeError("a RunSpec is frozen: use spec.replace(name=value) for another one")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _frozen

    def __reduce__(self):
        return (_FrozenDict, (dict(self),))


class _FrozenList(list):
    """A sequence of the spec (decay boundaries, a crop box): a list to its readers (JSON),
    equal to the list or tuple of the same items (JSON has no tuples, so a spec read back from
    params.json equals the one written), refusing changes."""

    __slots__ = ()

    def _frozen(self, *args, **kwargs):
        raise TypeError("a RunSpec is frozen: use spec.replace(name=value) for another one")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _frozen
    append = extend = insert = remove = pop = clear = sort = reverse = _frozen

    def __eq__(self, other):
        if isinstance(other, (list, tuple)):
            return list.__eq__(self, list(other))
        return NotImplemented

    def __ne__(self, other):
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None

    def __reduce__(self):
        return (_FrozenList, (list(self),))


def _freeze(value):
    if isinstance(value, dict):
        return _FrozenDict((key, _freeze(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return _FrozenList(_freeze(item) for item in value)
    return value


def _thaw(value):
    """JSON-ready plain dicts and lists."""
    if isinstance(value, dict):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(item) for item in value]
    return value


def _config(config_type, **values):
    try:
        return config_type(**values)
    except ValueError as e:
        raise ParamsError(str(e)) from None


def _trains(mode):
    return mode in ("train", "train_and_evaluate")


def _build_head(p, backbone):
    """The head of ``p`` (None for --head=none), built from its declaration: the shared
    hyperparameters and the options the head declares; what it resolves is written back."""
    if p["head"] == NO_HEAD:
        p["margin"] = p["gamma"] = p["head_config"] = None
        return None
    options = head_options(p)
    try:
        head = heads.build_head(p["head"], num_classes=p["num_classes"],
                                embedding_size=backbone.embedding_size, margin=p["margin"],
                                gamma=p["gamma"], scale=p["scale"],
                                class_weight=p["class_weight"], pair_weight=p["pair_weight"],
                                proxy_partitions=p["proxy_partitions"],
                                partial_fc_rate=p["partial_fc_rate"], **options)
    except (ValueError, TypeError) as e:
        raise ParamsError(f"--head={p['head']}: {e}") from None
    p["margin"], p["gamma"] = head.margin, head.gamma
    for option in head.options:
        p[option.name] = getattr(head, option.name)
    # What the reports show of the head (export/report_table.py reads it; no model import).
    p["head_config"] = {key: value for key, value in head.config.items()
                        if key not in ("head", "num_sample")}
    if head.partial_fc and _trains(p["mode"]):
        # Static shapes: a step's sample holds every class of the (per-replica) batch.
        batch = p["batch_size"] // max(p.get("num_replicas") or 1, 1)
        if not (batch <= head.num_sample or head.num_sample == head.num_classes):
            raise ParamsError(
                f"--partial_fc_rate={p['partial_fc_rate']:g} keeps {head.num_sample} of "
                f"{head.num_classes} classes per step, fewer than the {batch} examples of a "
                "batch (which may all be different classes): raise --partial_fc_rate or "
                "lower --batch_size")
    return head


def head_options(p):
    """The options the chosen head declares (``Head.options``: e.g. --subcenters for
    subcenter_arcface), those set; the head fills in its defaults for the others. An option of
    another head is refused, so that it is not silently ignored."""
    if p["head"] not in heads.HEADS:
        raise ParamsError(f"--head: unknown head {p['head']!r}; valid heads: "
                          f"{', '.join(heads.HEADS)}, {NO_HEAD}")
    declared = [option.name for option in heads.HEADS[p["head"]].options]
    stray = [name for name in heads.declared_options()
             if name not in declared and p.get(name) is not None]
    if stray:
        raise ParamsError(f"--{stray[0]} is an option of another head, not of "
                          f"--head={p['head']}")
    return {name: p[name] for name in declared if p.get(name) is not None}


def _distillation_config(p):
    """The distillation term's settings; only a training run needs the records' teacher (an
    export or evaluation builds no loss on image records)."""
    training = _trains(p["mode"])
    weight = p.get("distill_weight") or 0.0
    return _config(distillation.DistillationConfig,
                   weight=weight if training else 0.0, loss=p.get("distill_loss") or "cosine",
                   teacher_dim=p.get("teacher_dim") or 0,
                   teacher_mean=p.get("teacher_mean") if training and p.get("distill_center")
                   else None)


def _fields(config_type, p, renamed=None):
    """The entries of ``p`` that ``config_type``'s constructor takes, under its names."""
    renamed = renamed or {}
    return {field: p[renamed.get(field, field)] for field in config_type._fields
            if renamed.get(field, field) in p}


def runtime_config(p):
    """The RuntimeConfig of the flat settings ``p`` (their precision is the backbone's)."""
    values = _fields(RuntimeConfig, p)
    values.pop("num_replicas", None)  # derived by the config
    return _config(RuntimeConfig, **values)


def build_configs(p, runtime=None):
    """The typed configs of the flat settings ``p``, each validated by its constructor; the
    values they resolve (image size, margin, gamma, the head's options, the runtime's
    distribution and replicas) are written back into ``p``. ``runtime``: the RuntimeConfig of
    ``p`` when already built."""
    # Every spec has every key: those its mode leaves unresolved are None.
    p.update((key, None) for key, default in LEGACY_DEFAULTS.items()
             if default is None and key not in p)
    backbone = _config(model_config.BackboneConfig, name=p["backbone"],
                       embedding_size=p["embedding_size"], image_size=p["image_size"],
                       dropout_rate=p["dropout_rate"], precision=p["precision"],
                       grayscale=bool(p["grayscale"]))
    p["image_size"] = backbone.image_size
    runtime = runtime or runtime_config(p)
    p["distribution"], p["num_replicas"] = runtime.distribution, runtime.num_replicas
    head = _build_head(p, backbone)
    p["decay_boundaries"] = tuple(float(b) for b in p["decay_boundaries"])
    optimization = _config(model_config.OptimizationConfig, **_fields(
        model_config.OptimizationConfig, p, {"total_steps": "train_steps"}))
    input_values = _fields(input_config.InputConfig, p)
    input_values["images_per_identity"] = p["images_per_identity"] or None
    input_values["degradations"] = _config(input_config.Degradations,
                                           **_fields(input_config.Degradations, p))
    inputs = _config(input_config.InputConfig, **input_values)
    return Configs(backbone, head, optimization, inputs, runtime, _distillation_config(p),
                   _config(DataConfig, **_fields(DataConfig, p)),
                   _config(ProtocolConfig, **_fields(ProtocolConfig, p)),
                   _config(CheckpointConfig, **_fields(CheckpointConfig, p)))


class RunSpec(collections.abc.Mapping):
    """One run's settings, frozen: a read-only mapping of the flat settings (the keys of
    params.json) with the typed sections as attributes (see the module docstring).

    Build one with :meth:`build` (flat, resolved settings), :meth:`from_json_dict`,
    :meth:`from_json_file` or :meth:`from_run_dir`; assignment raises ``TypeError`` (items) or
    ``AttributeError`` (attributes); :meth:`replace` makes another one.
    """

    __slots__ = ("_values", "_configs")

    def __init__(self, values, configs):
        """Prefer :meth:`build`: ``values`` must be what ``configs`` were built from."""
        object.__setattr__(self, "_values", _freeze(dict(values)))
        object.__setattr__(self, "_configs", configs)

    @classmethod
    def build(cls, values, runtime=None):
        """The spec of flat, resolved settings: the configs are built (and validate) here."""
        values = dict(values)
        configs = build_configs(values, runtime)
        return cls(values, configs)

    def __setattr__(self, name, value):
        raise AttributeError(f"a RunSpec is frozen: cannot set {name!r}; use "
                             "spec.replace(name=value) for another one")

    __delattr__ = __setattr__

    def __setitem__(self, key, value):
        raise TypeError(f"a RunSpec is frozen: cannot set {key!r}; use "
                        "spec.replace(name=value) for another one")

    __delitem__ = __setitem__

    def __getitem__(self, key):
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)

    def __repr__(self):
        return (f"RunSpec(mode={self.data.mode!r}, backbone={self.backbone.name!r}, "
                f"head={self['head']!r}, model_dir={self.data.model_dir!r})")

    def __reduce__(self):
        return (RunSpec.build, (_thaw(dict(self._values)),))

    # The typed sections.
    configs = property(lambda self: self._configs,
                       doc="All sections (``Configs``); the builders take theirs from it.")
    data = property(lambda self: self._configs.data)
    backbone = property(lambda self: self._configs.backbone)
    head = property(lambda self: self._configs.head)
    optimization = property(lambda self: self._configs.optimization)
    input = property(lambda self: self._configs.input)
    runtime = property(lambda self: self._configs.runtime)
    distillation = property(lambda self: self._configs.distillation)
    protocol = property(lambda self: self._configs.protocol)
    checkpoints = property(lambda self: self._configs.checkpoints)

    def section(self, name):
        """The flat settings of one section (``"head"``: the shared hyperparameters and the
        declared options), as a dict."""
        keys = head_keys() if name == "head" else SECTIONS[name]
        return {key: self._values[key] for key in keys if key in self._values}

    @property
    def extra(self):
        """Settings no section knows (a flag added without its section line): kept and
        written, but untyped."""
        return {key: value for key, value in self._values.items() if section_of(key) is None}

    def replace(self, **changes):
        """Another spec with ``changes`` applied, built and validated again."""
        return RunSpec.build(dict(self._values, **changes))

    # params.json
    def to_json_dict(self):
        """The JSON object of params.json (lists for tuples)."""
        return _thaw(dict(self._values))

    def to_json_file(self, path):
        """Write params.json (gfile: model_dir may be an object store)."""
        with tf.io.gfile.GFile(path, "w") as fh:
            json.dump(self.to_json_dict(), fh, indent=2, sort_keys=True)

    @classmethod
    def from_json_dict(cls, recorded, source=PARAMS_NAME):
        """The spec of a params.json object, of this version or an older one (the keys it
        lacks take :data:`LEGACY_DEFAULTS`); ParamsError (one line) when it cannot be one."""
        if not isinstance(recorded, dict):
            raise ParamsError(f"{source} is not a JSON object of settings: "
                              "re-run evaluate/export with --train_records and the training "
                              "flags (--flagfile=MODEL_DIR/flags.txt)")
        missing = [key for key in REQUIRED if recorded.get(key) is None]
        if missing:
            raise ParamsError(f"{source} has no {missing[0]!r} (written by an older version "
                              "or by hand): re-run evaluate/export with --train_records and "
                              "the training flags (--flagfile=MODEL_DIR/flags.txt)")
        values = dict(LEGACY_DEFAULTS)
        values.update((name, None) for name in heads.declared_options())
        values.update(recorded)
        values.setdefault("model_dir", os.path.dirname(source) or ".")
        try:
            return cls.build(values)
        except ParamsError as e:
            raise ParamsError(f"{source}: {e} (re-run evaluate/export with --train_records "
                              "and the training flags, --flagfile=MODEL_DIR/flags.txt)") from None
        except (KeyError, TypeError) as e:
            raise ParamsError(f"{source}: unreadable setting ({type(e).__name__}: {e}): "
                              "re-run evaluate/export with --train_records and the training "
                              "flags (--flagfile=MODEL_DIR/flags.txt)") from None

    @classmethod
    def from_json_file(cls, path):
        """The spec saved at ``path`` (BERT's ``BertConfig.from_json_file``)."""
        with tf.io.gfile.GFile(path) as fh:
            try:
                recorded = json.load(fh)
            except ValueError as e:
                raise ParamsError(f"{path} is not JSON ({e}): re-run evaluate/export with "
                                  "--train_records and the training flags "
                                  "(--flagfile=MODEL_DIR/flags.txt)") from None
        return cls.from_json_dict(recorded, path)

    @classmethod
    def from_run_dir(cls, model_dir):
        """The spec of the run in ``model_dir`` (its params.json), or None when it has none."""
        path = os.path.join(model_dir, PARAMS_NAME)
        if not model_dir or not tf.io.gfile.exists(path):
            return None
        return cls.from_json_file(path)
