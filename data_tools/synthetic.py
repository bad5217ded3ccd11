"""Write the embedded synthetic face dataset (command line; the library is
``data_tools.synthetic_dataset``, the renderer ``data_tools.synthetic_faces``).

    python -m data_tools.synthetic --output_dir=DIR      # or: circle-synthetic-faces

writes ``DIR/train/`` (training identities), ``DIR/lfw/`` (verification identities),
``DIR/pairs.txt`` (LFW View 2 format) and ``DIR/synthetic.json``; re-running with the same options
reuses a complete dataset.
"""

import sys

from absl import app, flags

from data_tools.synthetic_dataset import generate


def _define_flags():
    # Defined at run time, not import time: other modules of the package define flags of the
    # same names (--output_dir, --seed) and may be imported in the same process.
    flags.DEFINE_string("output_dir", None, "Directory to write train/, lfw/ and pairs.txt to.")
    flags.DEFINE_integer("num_train_identities", 100, "Training identities.")
    flags.DEFINE_integer("train_images_per_identity", 24, "Images per training identity.")
    flags.DEFINE_integer("num_folds", 10, "Folds of pairs.txt (LFW View 2 has 10).")
    flags.DEFINE_integer("pair_identities_per_fold", 8,
                         "Verification identities per fold; folds share no identity.")
    flags.DEFINE_integer("pair_images_per_identity", 4, "Images per verification identity.")
    flags.DEFINE_integer("pairs_per_fold", 60, "Pairs per fold, half matched (LFW: 600).")
    flags.DEFINE_integer("image_size", 112, "Output image size in pixels.")
    flags.DEFINE_float("grayscale_fraction", 0.02, "Fraction of images saved as grayscale.")
    flags.DEFINE_integer("seed", 0, "Random seed; the same seed gives byte-identical files.")
    flags.DEFINE_integer("num_workers", None, "Worker processes (default: CPU count).")
    flags.DEFINE_boolean("progress", True, "Show a progress bar.")
    flags.mark_flag_as_required("output_dir")


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
    f = flags.FLAGS
    try:
        summary = generate(f.output_dir, num_train_identities=f.num_train_identities,
                           train_images_per_identity=f.train_images_per_identity,
                           num_folds=f.num_folds,
                           pair_identities_per_fold=f.pair_identities_per_fold,
                           pair_images_per_identity=f.pair_images_per_identity,
                           pairs_per_fold=f.pairs_per_fold, image_size=f.image_size,
                           seed=f.seed, num_workers=f.num_workers, progress=f.progress,
                           grayscale_fraction=f.grayscale_fraction)
    except ValueError as e:
        sys.stderr.write("error: %s\n" % e)
        return 2
    if summary["reused"]:
        print("%s already holds this synthetic dataset (same options); nothing to do."
              % summary["output_dir"])
    else:
        print("synthetic faces: %d train images of %d identities in %s; %d verification images "
              "of %d identities in %s; %d pairs in %d folds in %s; %.1f s, %.0f images/s"
              % (summary["num_train_images"], summary["num_train_identities"],
                 summary["train_dir"], summary["num_verification_images"],
                 summary["num_verification_identities"], summary["lfw_dir"],
                 summary["num_pairs"], summary["num_folds"], summary["pairs_path"],
                 summary["seconds"], summary["images_per_second"]))
    return 0


def run():
    """Console-script entry point (``circle-synthetic-faces``)."""
    _define_flags()
    app.run(_main)


if __name__ == "__main__":
    run()
