"""1:N identification and retrieval metrics of a model on image records of held-out identities
(command line; the library is ``evaluation.identification``).

    python -m export.identification --model=runs/lfw/export/best \\
        --records=lfw_output/fold10/records/identities --report_dir=out/ident

The protocol (README "Identification, IJB and a face gallery"): every identity with two or more
images puts its first image (by file name) in the gallery and the others in the probes (mated
probes); every image of an identity with a single image is a non-mated probe. Reported, from
:mod:`evaluation.retrieval`: ``rank1``, ``rank5`` (closed set, mated probes), ``tpir@fpir=0.01``,
``tpir@fpir=0.1`` (open set) with their thresholds, and Recall@K / R-precision / MAP@R of the
whole set (leave one out). Embeddings use flip test-time augmentation (``--flip``) and the
records' own pixels, so faces are cropped exactly as for training.

The report (``report.json``) keeps the thresholds (cosine), so ``python -m export.gallery
search --report=...`` can answer "unknown" at the same operating point.
"""

import os
import sys

import cli

cli.quiet_tensorflow()  # before anything imports TensorFlow

from absl import app, flags  # noqa: E402

from cli import flag_groups  # noqa: E402
from evaluation.identification import (  # noqa: E402
    IdentificationError,
    evaluate,
    read_image_records,
    record_files,
    write_report,
)


def format_metrics(metrics):
    lines = [f"gallery: {metrics['num_gallery_identities']} identities; probes: "
             f"{metrics['num_mated_probes']} mated, {metrics['num_nonmated_probes']} non-mated"]
    names = [k for k in sorted(metrics) if k.startswith("rank") or k.startswith("tpir@")]
    names += ["recall@1", "recall@5", "recall@10", "r_precision", "map@r"]
    for name in names:
        if name in metrics:
            lines.append(f"{name!s:<16} {metrics[name]:.4f}")
    return "\n".join(lines)


def define_flags(flag_values=flags.FLAGS):
    if "records" in flag_values:
        return
    flag_groups.define_model_path(flag_values)
    flags.DEFINE_string("records", None, "Image records (make_tfrecords.py output) of the "
                        "held-out identities.", flag_values=flag_values)
    flag_groups.define_report(flag_values, "report.json", batch=False)
    flags.DEFINE_list("fpirs", ["0.01", "0.1"], "Target FPIRs of the open-set TPIR.",
                      flag_values=flag_values)
    flag_groups.define_batch_size(flag_values)


def main(argv, flag_values=flags.FLAGS):
    fv = flag_values
    cli.check_usage(argv, fv, required=("model", "records"))
    try:
        fpirs = [float(f) for f in fv.fpirs]
    except ValueError:
        raise app.UsageError(f"--fpirs takes numbers, got {','.join(fv.fpirs)}") from None
    from export import embedder as embed  # noqa: PLC0415

    try:
        files = record_files(fv.records)
        encoded, identities, filenames = read_image_records(files)
        if not encoded:
            raise IdentificationError(f"no image records in {fv.records}")
        with embed.load_saved_model(fv.model) as embedder:
            embeddings = embedder.embed_bytes(encoded, batch_size=fv.batch_size, flip=fv.flip,
                                              names=filenames, progress=True)
            model_dir = embedder.saved_model_dir
        metrics = evaluate(embeddings, identities, filenames, fpirs=fpirs)
    except (IdentificationError, embed.EmbedError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_metrics(metrics))
    if fv.report_dir:
        extra = {"model": os.path.abspath(model_dir), "records": os.path.abspath(fv.records),
                 "flip": bool(fv.flip)}
        print(f"report: {write_report(metrics, fv.report_dir, extra)}")
    return 0


def run():
    """Entry point of ``python -m export.identification``."""
    cli.run(define_flags, main)


if __name__ == "__main__":
    run()
