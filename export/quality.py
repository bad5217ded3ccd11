"""Face-quality score: the error-versus-reject curve of a SavedModel's ``embedding_norm`` (the
command line; the curve itself is ``export.quality_metrics``).

    python -m export.quality --model DIR --pairs lfw.bin --output_dir out/
    python -m export.quality --model DIR --pairs pairs.txt --image_dir lfw/ --output_dir out/

Every image of the pairs is embedded once; a pair's quality is the lower of its two images'
``embedding_norm`` (the pre-normalisation norm the serving signature returns), as MagFace's
``eval/eval_quality/eval_quality.py`` and the TFace quality work take it. Rejecting the
lowest-quality fraction r of the pairs (r = 0, 0.05, ... up to ``--max_reject``), the curve is the
FNMR (genuine pairs rejected by the matcher) at a fixed FMR on the pairs kept. A quality score
that works makes the curve fall; a useless one keeps it flat, like the random-order baseline drawn
beside it (the mean over 20 seeded random rejections).

Thresholds (``--threshold``): ``recomputed`` (MagFace's): on the kept pairs, the threshold that
gives the FMR is found again at each r; ``fixed`` (the ERC of Grother and Tabassi, used by
ISO/IEC 29794-1): it is found once on all pairs and kept. The FMR's threshold is the k-th highest
impostor similarity with k = floor(FMR · (impostors - 1)), as MagFace's code picks it (so at
FMR 1e-3 and fewer than 1,001 impostor pairs it is the highest impostor score).

The norm says most for heads trained to make it a quality (MagFace by construction, AdaFace
whose margin reads it); for the others (ArcFace, CosFace, Circle) it is a by-product, and the
curve shows whether it happens to work. Writes ``evr.png`` and ``evr.json`` (atomically) to
``--output_dir``. Flip TTA is off by default: the quality is one image's norm.
"""

import os
import sys

import cli

cli.quiet_tensorflow()  # before TensorFlow is imported

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from cli import flag_groups  # noqa: E402
from data_tools import pairs as pairs_lib  # noqa: E402
from export.embedder import EmbedError, load_saved_model  # noqa: E402
from export.pair_verification import read_pair_images  # noqa: E402
from export.quality_metrics import THRESHOLDS, evaluate, write_evr  # noqa: E402


def define_flags(flag_values=flags.FLAGS):
    fv = flag_values
    flag_groups.define_model_path(fv, "Its serving signature must return embedding_norm.")
    flag_groups.define_pairs(fv, "an insightface .bin, a directory of pair records, or an "
                             "LFW-format pairs.txt with --image_dir.",
                             image_dir="the identity folders of a pairs.txt.")
    flag_groups.define_output_dir(fv, "where evr.png and evr.json go.")
    flags.DEFINE_list("fmr", ["1e-3", "1e-2"], "False-match rates of the curves.",
                      flag_values=fv)
    flags.DEFINE_enum("threshold", "recomputed", list(THRESHOLDS), "recomputed: the FMR's "
                      "threshold on the kept pairs at each fraction (MagFace); fixed: on all "
                      "pairs, once (ERC).", flag_values=fv)
    flags.DEFINE_float("max_reject", 0.9, "Largest rejected fraction (steps of 0.05).",
                       lower_bound=0.0, upper_bound=0.95, flag_values=fv)
    flag_groups.define_flip(fv, default=False, note="Of the embeddings and their norms; off: "
                            "one image's norm, as MagFace scores quality.")
    flag_groups.define_batch_size(fv)
    return fv


def _fmrs(values):
    try:
        fmrs = [float(v) for v in values]
    except ValueError:
        raise EmbedError(f"--fmr takes numbers, got {','.join(values)}") from None
    if not fmrs or not all(0.0 < f < 1.0 for f in fmrs):
        raise EmbedError(f"--fmr values must be in (0, 1), got {','.join(values)}")
    return fmrs


def _embed_pairs(fv, embedder):
    """``(embeddings, norms, issame)``: rows 2i and 2i+1 are pair i's images."""
    if os.path.isdir(fv.pairs) or fv.pairs.endswith(".bin"):
        images, issame = read_pair_images(fv.pairs)[:2]
        result = embedder.embed_bytes(images, batch_size=fv.batch_size, flip=fv.flip,
                                      progress=True, with_norm=True)
        return result.embeddings, result.norms, np.array(issame, bool)
    if not fv.image_dir:
        raise EmbedError(f"--pairs={fv.pairs} is a pairs file: give its --image_dir")
    try:
        pairs_file = pairs_lib.read_pairs(fv.pairs)
        relpaths, kept, _ = pairs_lib.resolve_pairs(pairs_file, fv.image_dir)
    except OSError as e:
        raise EmbedError(f"cannot read pairs file {fv.pairs}: {e.strerror or e}") from None
    except ValueError as e:
        raise EmbedError(str(e)) from None
    files = [os.path.join(fv.image_dir, *path.split("/")) for pair in relpaths for path in pair]
    result = embedder.embed_files(files, batch_size=fv.batch_size, flip=fv.flip, progress=True,
                                  transform=embedder.transform(), with_norm=True)
    return result.embeddings, result.norms, np.array([p.issame for p in kept], bool)


def main(argv, flag_values=flags.FLAGS):
    """Exit status: 0, 1 for unusable input, 2 for missing or extra arguments."""
    fv = flag_values
    missing = [name for name in ("model", "pairs", "output_dir") if not fv[name].value]
    if missing or len(argv) > 1:
        what = (f"--{missing[0]} is required" if missing
                else f"unexpected arguments: {' '.join(argv[1:])}")
        print(f"error: {what} (python -m export.quality --model DIR --pairs PAIRS "
              "--output_dir OUT)", file=sys.stderr)
        return 2
    try:
        fmrs = _fmrs(fv.fmr)
        with load_saved_model(fv.model) as embedder:
            if not embedder.has_norm:
                raise EmbedError(f"SavedModel {embedder.saved_model_dir} has no "
                                 "'embedding_norm' output (exported before it existed): "
                                 "export the checkpoint again (estimator_main.py --mode=export)")
            print(f"model: {embedder.saved_model_dir}", file=sys.stderr)
            embeddings, norms, issame = _embed_pairs(fv, embedder)
            model = os.path.abspath(embedder.saved_model_dir)
        result = evaluate(embeddings[0::2], embeddings[1::2], norms[0::2], norms[1::2], issame,
                          fmrs=fmrs, threshold=fv.threshold, max_reject=fv.max_reject)
    except EmbedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    result.update(model=model, pairs=os.path.abspath(fv.pairs), flip=fv.flip)
    png_path, json_path = write_evr(result, fv.output_dir)
    for fmr, curve in result["curves"].items():
        print(f"FMR {fmr}: FNMR {curve['fnmr'][0]:.4f} with every pair, "
              f"{curve['fnmr'][-1]:.4f} with {100 * curve['fractions'][-1]:.0f}% rejected by "
              f"quality ({curve['random_fnmr'][-1]:.4f} at random); mean over the curve "
              f"{curve['mean_fnmr']:.4f} vs {curve['mean_random_fnmr']:.4f}")
    print(f"wrote {png_path}, {json_path}")
    return 0


def run():
    cli.run(define_flags, main)


if __name__ == "__main__":
    run()
