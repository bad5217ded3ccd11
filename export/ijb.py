"""IJB-B / IJB-C 1:1 template verification, as insightface's ``eval_ijbc.py`` computes it
(command line; the library is ``export.ijb_protocol``).

    python -m export.ijb --model=runs/r100/export/best --image_dir=IJBC/loose_crop \\
        --meta_dir=IJBC/meta --report_dir=out/ijbc

reads the three standard meta files (``ijbc_`` or ``ijbb_`` prefix, found in ``--meta_dir``:
``<set>_face_tid_mid.txt``, ``<set>_template_pair_label.txt``, ``<set>_name_5pts_score.txt``),
aligns each face of ``--image_dir`` from its five points, embeds it with flip test-time
augmentation (``--flip``), weights it by its detector score (``--detector_score``), pools the
faces into template features and scores each pair by their cosine, as insightface does
(:mod:`export.ijb_protocol` has the details). It prints TAR at FAR = 1e-6 ... 1e-1 read two
ways: the best TAR at FAR <= target, and insightface's nearest ROC point.

``report.json`` (every figure, the ROC) and ``roc.png`` (log-FAR axis) go to ``--report_dir``;
``--save_features`` also stores the template features there (``templates.npz``).
"""

import os
import sys

from data_tools import cli

cli.quiet_tensorflow()  # before anything imports TensorFlow

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from export.ijb_protocol import (  # noqa: E402
    DATASETS,
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
    flags.DEFINE_string("model", None, "SavedModel directory, or an exporter's base directory "
                        "(the newest SavedModel in it is used).", flag_values=flag_values)
    flags.DEFINE_string("image_dir", None, "The loose-crop face images (IJB-C 'loose_crop').",
                        flag_values=flag_values)
    flags.DEFINE_string("meta_dir", None, "Folder of <set>_face_tid_mid.txt, "
                        "<set>_template_pair_label.txt and <set>_name_5pts_score.txt.",
                        flag_values=flag_values)
    flags.DEFINE_string("report_dir", None, "report.json and roc.png go here.",
                        flag_values=flag_values)
    flags.DEFINE_enum("dataset", None, DATASETS, "Meta file prefix; default: whichever is in "
                      "--meta_dir.", flag_values=flag_values)
    flags.DEFINE_bool("flip", True, "Flip test-time augmentation (insightface F1).",
                      flag_values=flag_values)
    flags.DEFINE_bool("detector_score", True, "Weight each face by its detector score "
                      "(insightface D1).", flag_values=flag_values)
    flags.DEFINE_integer("align_size", 112, "Side of the aligned face sent to the model (the "
                         "template is scaled to it).", lower_bound=8, flag_values=flag_values)
    flags.DEFINE_integer("batch_size", 64, "Faces per SavedModel call.", lower_bound=1,
                         flag_values=flag_values)
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
            features = image_features(embedder, fv.image_dir, names, landmarks,
                                      batch_size=fv.batch_size, flip=fv.flip,
                                      align_size=fv.align_size)
            model_dir = embedder.saved_model_dir
        scores = np.array([landmarks[name][1] for name in names])
        metrics, unique_templates, feats = evaluate(
            features, templates, medias, scores, template1, template2, labels,
            detector_score=fv.detector_score)
    except (IJBError, embed.EmbedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    metrics["dataset"] = dataset
    extra = {"model": os.path.abspath(model_dir), "image_dir": os.path.abspath(fv.image_dir),
             "meta_dir": os.path.abspath(fv.meta_dir), "flip": bool(fv.flip),
             "detector_score": bool(fv.detector_score), "align_size": fv.align_size}
    json_path, png_path = write_report(metrics, fv.report_dir, extra)
    if fv.save_features:
        np.savez(os.path.join(fv.report_dir, "templates.npz"), templates=unique_templates,
                 features=feats.astype(np.float32))
    print("FAR      TAR@<=FAR  nearest (insightface)")
    for far in metrics["fars"]:
        tar, nearest = metrics[f"tar@far={far:g}"], metrics[f"tar_nearest@far={far:g}"]
        print(f"{far:<8g} {tar:<10.4f} {nearest:<10.4f}")
    print(f"report: {json_path}, {png_path}")
    return 0


def run():
    """Console entry point (``python -m export.ijb``)."""
    cli.run(define_flags, main)


if __name__ == "__main__":
    run()
