"""IJB-B / IJB-C 1:1 template verification, as insightface's ``eval_ijbc.py`` computes it
(command line; the library is ``evaluation.ijb``).

    python -m export.ijb --model=runs/r100/export/best --image_dir=IJBC/loose_crop \\
        --meta_dir=IJBC/meta --report_dir=out/ijbc

reads the three standard meta files (``ijbc_`` or ``ijbb_`` prefix, found in ``--meta_dir``:
``<set>_face_tid_mid.txt``, ``<set>_template_pair_label.txt``, ``<set>_name_5pts_score.txt``),
aligns each face of ``--image_dir`` from its five points, embeds it with flip test-time
augmentation (``--flip``), weights it by its detector score (``--detector_score``), pools the
faces into template features and scores each pair by their cosine, as insightface does
(:mod:`evaluation.ijb` has the details). It prints TAR at FAR = 1e-6 ... 1e-1 read two
ways: the best TAR at FAR <= target, and insightface's nearest ROC point, for both template
poolings when the SavedModel returns ``embedding_norm``: N0 (faces normalised before pooling)
and N1 (faces weighted by their feature norm, insightface's default); older exports give N0
only. ``--pooling`` picks the mode of ``report.json``'s main figures, ``roc.png`` and
``templates.npz``; the report names it (``pooling``) and holds both modes' figures
(``pooling_modes``).

``report.json`` (every figure, the ROC) and ``roc.png`` (log-FAR axis) go to ``--report_dir``;
``--save_features`` also stores the template features there (``templates.npz``).
"""

import os
import sys

import cli

cli.quiet_tensorflow()  # before anything imports TensorFlow

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from cli import flag_groups  # noqa: E402
from evaluation.ijb import (  # noqa: E402
    DATASETS,
    POOLINGS,
    IJBError,
    evaluate,
    image_features,
    meta_paths,
    read_landmarks,
    read_template_media,
    read_template_pairs,
    write_report,
)


def define_flags(flag_values=flags.FLAGS):
    """Define the command-line flags (once; safe to call again)."""
    if "meta_dir" in flag_values:
        return
    flag_groups.define_model_path(flag_values)
    flag_groups.define_image_dir(flag_values, "the loose-crop face images (IJB-C 'loose_crop').")
    flags.DEFINE_string("meta_dir", None, "Folder of <set>_face_tid_mid.txt, "
                        "<set>_template_pair_label.txt and <set>_name_5pts_score.txt.",
                        flag_values=flag_values)
    flag_groups.define_report(flag_values, "report.json and roc.png", flip=False, batch=False)
    flags.DEFINE_enum("dataset", None, DATASETS, "Meta file prefix; default: whichever is in "
                      "--meta_dir.", flag_values=flag_values)
    flag_groups.define_flip(flag_values, note="(insightface F1)")
    flags.DEFINE_bool("detector_score", True, "Weight each face by its detector score "
                      "(insightface D1).", flag_values=flag_values)
    flags.DEFINE_enum("pooling", "N1", POOLINGS, "Template pooling of the report's main figures: "
                      "N1 weights each face by its feature norm (insightface's default; needs "
                      "the SavedModel's embedding_norm output, else N0 is used), N0 normalises "
                      "faces first. Both are printed when the model allows.",
                      flag_values=flag_values)
    flags.DEFINE_integer("align_size", 112, "Side of the aligned face sent to the model (the "
                         "template is scaled to it).", lower_bound=8, flag_values=flag_values)
    flag_groups.define_batch_size(flag_values, "Faces per SavedModel call.")
    flags.DEFINE_bool("save_features", False, "Also write templates.npz (template ids and "
                      "features) to --report_dir.", flag_values=flag_values)


def main(argv, flag_values=flags.FLAGS):
    """CLI body for ``absl.app.run``: returns 0, or 1 with a one-line message on bad input."""
    fv = flag_values
    cli.check_usage(argv, fv, required=("model", "image_dir", "meta_dir", "report_dir"))
    # Imported here: export.embed loads TensorFlow, which the metric functions do not need.
    from export import embedder as embed  # noqa: PLC0415

    try:
        if not os.path.isdir(fv.image_dir):
            raise IJBError(f"--image_dir {fv.image_dir} is not a directory")
        dataset, paths = meta_paths(fv.meta_dir, fv.dataset)
        names, templates, medias = read_template_media(paths["face_tid_mid"])
        template1, template2, labels = read_template_pairs(paths["template_pair_label"])
        landmarks = read_landmarks(paths["name_5pts_score"])
        print(f"{dataset}: {len(names)} faces, {np.unique(templates).size} templates, "
              f"{labels.size} pairs",
              file=sys.stderr)
        with embed.load_saved_model(fv.model) as embedder:
            has_norm = embedder.has_norm
            pooling = _pooling(fv, has_norm, embedder.saved_model_dir)
            features = image_features(embedder, fv.image_dir, names, landmarks,
                                      batch_size=fv.batch_size, flip=fv.flip,
                                      align_size=fv.align_size, with_norm=has_norm)
            model_dir = embedder.saved_model_dir
        # N0 pools the flip-TTA embeddings, N1 the embeddings before normalisation.
        inputs = dict(zip(POOLINGS, features)) if has_norm else {"N0": features}
        scores = np.array([landmarks[name][1] for name in names])
        results = {mode: evaluate(x, templates, medias, scores, template1, template2, labels,
                                  detector_score=fv.detector_score, pooling=mode)
                   for mode, x in inputs.items()}
    except (IJBError, embed.EmbedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    metrics, unique_templates, feats = results[pooling]
    metrics["pooling_modes"] = {mode: _figures(result[0]) for mode, result in results.items()}
    metrics["dataset"] = dataset
    extra = {"model": os.path.abspath(model_dir), "image_dir": os.path.abspath(fv.image_dir),
             "meta_dir": os.path.abspath(fv.meta_dir), "flip": bool(fv.flip),
             "detector_score": bool(fv.detector_score), "align_size": fv.align_size}
    json_path, png_path = write_report(metrics, fv.report_dir, extra)
    if fv.save_features:
        np.savez(os.path.join(fv.report_dir, "templates.npz"), templates=unique_templates,
                 features=feats.astype(np.float32))
    print(_table(metrics["fars"], {mode: result[0] for mode, result in results.items()}))
    print(f"report ({pooling}): {json_path}, {png_path}")
    return 0


def _pooling(fv, has_norm, model_dir):
    """The report's pooling mode: ``--pooling``, or N0 for a model without ``embedding_norm``
    (an error when N1 was asked for explicitly)."""
    if fv.pooling == "N0" or has_norm:
        return fv.pooling
    if fv["pooling"].present:
        raise IJBError(f"--pooling=N1 needs the embedding_norm output, which {model_dir} lacks "
                       "(exported before it existed): export it again, or use --pooling=N0")
    print(f"note: {model_dir} has no embedding_norm output: N0 pooling only",
          file=sys.stderr)
    return "N0"


def _figures(metrics):
    """The TAR figures of one pooling mode, for ``report.json``'s ``pooling_modes``."""
    return {key: value for key, value in metrics.items()
            if key.startswith(("tar@far=", "tar_nearest@far=", "far@far=", "far_nearest@far=",
                               "threshold@far=", "auc"))}


def _table(fars, by_mode):
    """insightface's table: one row per pooling mode and reading, one column per FAR."""
    width = 26
    lines = ["pooling / reading".ljust(width) + " ".join(f"{far:<8g}" for far in fars)]
    for mode, metrics in by_mode.items():
        for label, key in (("TAR@<=FAR", "tar@far"), ("nearest (insightface)", "tar_nearest@far")):
            values = " ".join(f"{metrics[f'{key}={far:g}']:<8.4f}" for far in fars)
            lines.append(f"{mode} {label}".ljust(width) + values)
    return "\n".join(lines)


def run():
    """Console entry point (``python -m export.ijb``)."""
    cli.run(define_flags, main)


if __name__ == "__main__":
    run()
