"""A distillation teacher on an LFW-format pairs file, by the protocol every student is judged by.

    python scripts/teacher_pairs.py --teacher=dlib --pairs=fold10/pairs.txt \
        --image_dir=lfw_gray250 --report_dir=teacher_report

The teacher (``data_tools.teachers``: ``dlib``, ``onnx:FILE``, ``saved_model:DIR``) embeds every
distinct frame of the pairs with its own preprocessing (dlib: its HOG detector, 5-point chip and
descriptor; a frame without a detection is embedded whole and counted), and the pairs go through
``export.pair_verification``'s code path: the pairs file's folds, the same accuracy, threshold
and VAL@FAR as ``python -m export.embed --pairs`` reports for a student. Embeddings are compared
by cosine (L2-normalised, as the students' are); dlib's own rule, a Euclidean distance of 0.6
between raw descriptors, is printed beside it. The README's results table takes the teacher's
row from here (``scripts/model_recipe.sh`` runs it).
"""

import argparse
import os
import sys

import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_tools import teachers  # noqa: E402
from evaluation import reports as report  # noqa: E402
from export import pair_verification  # noqa: E402


class TeacherEmbedder:
    """What ``pair_verification.evaluate_pairs`` asks of an embedder, for a teacher: raw vectors
    per file (kept in ``self.raw`` for dlib's distance rule), returned L2-normalised."""

    def __init__(self, teacher):
        self.teacher = teacher
        self.raw = {}

    def embed_files(self, paths, batch_size=64, flip=False, names=None, progress=False,
                    transform=None, fallbacks=None):
        del batch_size, transform  # one frame at a time, the teacher's own preprocessing
        if flip:
            raise ValueError("a teacher is evaluated as it embeds: without flip")
        vectors = []
        with tqdm(total=len(paths), unit="img", disable=None if progress else True) as bar:
            for path, name in zip(paths, names if names is not None else paths):
                with open(path, "rb") as handle:
                    vector = np.asarray(self.teacher.embed(handle.read()), np.float64)
                if getattr(self.teacher, "fell_back", False) and fallbacks is not None:
                    fallbacks.append(name)
                self.raw[name] = vector
                vectors.append(vector / max(np.linalg.norm(vector), 1e-12))
                bar.update(1)
        return np.stack(vectors).astype(np.float32)


def dlib_rule_accuracy(raw, pairs_path, image_dir, threshold=0.6):
    """Share of the pairs dlib's rule (Euclidean distance of the raw descriptors < 0.6) gets
    right; the reference figure of dlib's documentation (LFW 0.9938)."""
    from data_tools import pairs as pairs_lib  # noqa: PLC0415

    pairs_file = pairs_lib.read_pairs(pairs_path)
    relpaths, kept, _ = pairs_lib.resolve_pairs(pairs_file, image_dir)
    right = [(np.linalg.norm(raw[a] - raw[b]) < threshold) == pair.issame
             for (a, b), pair in zip(relpaths, kept)]
    return float(np.mean(right))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="dlib")
    parser.add_argument("--pairs", required=True)
    parser.add_argument("--image_dir", required=True)
    parser.add_argument("--report_dir", default=None)
    args = parser.parse_args(argv)
    embedder = TeacherEmbedder(teachers.load_teacher(args.teacher))
    fallbacks = []
    evaluation = pair_verification.evaluate_pairs(embedder, args.pairs, args.image_dir,
                                                  progress=True, fallbacks=fallbacks)
    metrics = evaluation.metrics
    print(f"teacher {args.teacher}: accuracy {metrics['accuracy']:.4f} "
          f"± {metrics['accuracy_std']:.4f} over {evaluation.n_folds} folds, "
          f"VAL@FAR=1e-3 {metrics['val']:.4f}, {len(fallbacks)} frame(s) without a detection "
          "(embedded whole)")
    if args.teacher == "dlib":
        print(f"dlib's own rule (raw distance < 0.6): "
              f"{dlib_rule_accuracy(embedder.raw, args.pairs, args.image_dir):.4f}")
    if args.report_dir:
        report.write_report(metrics, args.report_dir,
                            extra={"teacher": args.teacher, "pairs": os.path.abspath(args.pairs),
                                   "align_fallbacks": len(fallbacks)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
