"""The service's decision thresholds, read from the model's reports (cosine similarity).

Verification (``/v1/verify``): the threshold at a target FAR from the verification report the
exporter stores with the model (``export.embedder.find_report``: ``assets.extra/report.json``,
then ``eval/`` above it). That report holds VAL@FAR's per-fold thresholds at its
``far_target`` (``fold_val_threshold``, squared L2 distance d on unit vectors); asked for that
FAR the service uses their mean, the report's own operating point. For another FAR it takes
the fold-averaged ROC (``fpr`` over ``roc_thresholds``): the largest threshold whose FPR does
not exceed the target. A distance d is the cosine 1 - d / 2.

Identification (``/v1/identify``): ``threshold@fpir=<fpir>`` of an identification report
(``python -m export.identification``), when one is given or found next to the model; without
one, the verification threshold at the FAR stands in (one probe against one identity is a
verification), and the source says so.

A report measured with the other flip test-time augmentation setting than the service's is
refused (``report.report_flip``): its thresholds would judge other scores.
"""

import math
import os

from evaluation import reports as report_lib
from export import embedder as embedder_lib

IDENTIFICATION_REPORT_DIR = "identification"


def _cosine(distance):
    return 1.0 - float(distance) / 2.0


def _finite_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def threshold_at_far(data, far):
    """``(cosine threshold, how)`` at ``far`` from a verification report dict, or
    ``(None, why not)``."""
    report_far = data.get("far_target")
    fold = data.get("fold_val_threshold")
    if _finite_number(report_far) and math.isclose(report_far, far, rel_tol=1e-9) and \
            isinstance(fold, list) and fold and all(_finite_number(t) for t in fold):
        distance = sum(fold) / len(fold)
        return _cosine(distance), (f"VAL@FAR={far:g} operating point (squared L2 "
                                   f"{distance:.4f}, mean of {len(fold)} folds)")
    fpr, thresholds = data.get("fpr"), data.get("roc_thresholds")
    if isinstance(fpr, list) and isinstance(thresholds, list) and len(fpr) == len(thresholds):
        best = None
        for rate, distance in zip(fpr, thresholds):
            if _finite_number(rate) and _finite_number(distance) and rate <= far:
                best = distance if best is None else max(best, distance)
        if best is not None:
            return _cosine(best), (f"largest ROC threshold with FPR <= {far:g} (squared L2 "
                                   f"{best:.4f})")
    return None, f"the report has no operating point at FAR {far:g}"


def check_flip(data, path, flip):
    """Refuse (ValueError, one line) a report measured with the other flip TTA setting than the
    service's embeddings: its thresholds would judge other scores (as ``export.embed`` and
    ``export.gallery`` refuse it)."""
    measured = report_lib.report_flip(data)
    if measured is not None and measured != flip:
        words = report_lib.flip_words
        raise ValueError(f"the thresholds of {path} were measured {words(measured)} flip "
                         f"test-time augmentation and the service embeds {words(flip)} it: "
                         f"start it with {'--flip' if measured else '--noflip'}")


def verification_threshold(saved_model_dir, far, flip=True):
    """``(cosine threshold or None, source)`` of the model's verification report at ``far``;
    ValueError for a report of the other ``flip`` setting."""
    path = embedder_lib.find_report(saved_model_dir)
    if path is None:
        return None, ("no verification report found; looked in: "
                      f"{', '.join(embedder_lib.report_candidates(saved_model_dir))}")
    data = report_lib.read_report(path)
    check_flip(data, path, flip)
    threshold, how = threshold_at_far(data, far)
    return threshold, f"{how}, from {path}"


def identification_threshold(saved_model_dir, fpir, report_path=None, far=1e-3, flip=True):
    """``(cosine threshold or None, source)`` of the open-set decision at ``fpir``."""
    candidates = [report_path] if report_path else [
        os.path.join(saved_model_dir, embedder_lib.ASSETS_EXTRA, IDENTIFICATION_REPORT_DIR,
                     report_lib.REPORT_JSON)]
    key = f"threshold@fpir={fpir:g}"
    for path in candidates:
        if not os.path.isfile(path):
            if report_path:
                raise ValueError(f"no identification report at {path}")
            continue
        data = report_lib.read_report(path)
        check_flip(data, path, flip)
        if _finite_number(data.get(key)):
            return float(data[key]), f"{key} from {path}"
        if report_path:
            raise ValueError(f"{path} holds no finite {key}")
    threshold, source = verification_threshold(saved_model_dir, far, flip)
    if threshold is None:
        return None, source
    return threshold, (f"no identification report: the verification threshold at FAR {far:g} "
                       f"stands in ({source})")
