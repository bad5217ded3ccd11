"""Write the embedded synthetic face dataset (command line; the library is
``data_tools.synthetic.dataset``, the renderer ``data_tools.synthetic.faces``).

    python -m data_tools.synthetic --output_dir=DIR      # or: circle-synthetic-faces

writes ``DIR/train/`` (training identities), ``DIR/lfw/`` (verification identities),
``DIR/pairs.txt`` (LFW View 2 format) and ``DIR/synthetic.json``; re-running with the same options
reuses a complete dataset.
"""

import sys

import cli

cli.quiet_tensorflow()  # before anything imports TensorFlow

from absl import flags  # noqa: E402

from cli import flag_groups  # noqa: E402
from data_tools.synthetic.dataset import generate  # noqa: E402


def define_flags(flag_values=flags.FLAGS):
    """Define the command-line flags in ``flag_values``."""
    fv = flag_values
    flag_groups.define_output_dir(fv, "where train/, lfw/ and pairs.txt go.")
    flags.DEFINE_integer("num_train_identities", 100, "Training identities.", flag_values=fv)
    flags.DEFINE_integer("train_images_per_identity", 24, "Images per training identity.",
                         flag_values=fv)
    flags.DEFINE_integer("pair_identities_per_fold", 8,
                         "Verification identities per fold; folds share no identity.",
                         flag_values=fv)
    flags.DEFINE_integer("pair_images_per_identity", 4, "Images per verification identity.",
                         flag_values=fv)
    flag_groups.define_pair_folds(fv, pairs_per_fold=30, lower_bound=None)  # main checks
    flag_groups.define_image_size(fv, "the rendered faces.", default=112)
    flags.DEFINE_float("grayscale_fraction", 0.02, "Fraction of images saved as grayscale.",
                       flag_values=fv)
    flag_groups.define_seed(fv, "the identities and their images (byte-identical files)")
    flag_groups.define_workers(fv, progress=True)
    flags.mark_flag_as_required("output_dir", flag_values=fv)


def main(argv, flag_values=flags.FLAGS):
    """CLI body for ``absl.app.run``: returns 0, or 2 with a message for unusable options."""
    cli.check_usage(argv)
    f = flag_values
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
        sys.stderr.write(f"error: {e}\n")
        return 2
    if summary["reused"]:
        print(f"{summary['output_dir']} already holds this synthetic dataset (same options); "
              "nothing to do.")
    else:
        print(f"synthetic faces: {summary['num_train_images']} train images of "
              f"{summary['num_train_identities']} identities in {summary['train_dir']}; "
              f"{summary['num_verification_images']} verification images "
              f"of {summary['num_verification_identities']} identities in {summary['lfw_dir']}; "
              f"{summary['num_pairs']} pairs in {summary['num_folds']} folds in "
              f"{summary['pairs_path']}; {summary['seconds']:.1f} s, "
              f"{summary['images_per_second']:.0f} images/s")
    return 0


def run():
    """Console-script entry point (``circle-synthetic-faces``)."""
    cli.run(define_flags, main)


if __name__ == "__main__":
    run()
