"""IJB-B / IJB-C 1:1 template verification, as insightface's ``eval_ijbc.py`` computes it: the
library behind ``python -m export.ijb``.

The protocol reads the three standard meta files (``ijbc_`` or ``ijbb_`` prefix, found by
:func:`meta_paths`):

* ``<set>_face_tid_mid.txt``: ``image template_id media_id`` per face;
* ``<set>_template_pair_label.txt``: ``template1 template2 label`` per comparison (1 = mated);
* ``<set>_name_5pts_score.txt``: ``image x1 y1 ... x5 y5 detector_score`` per face.

Each face of the image folder is aligned from its five points onto the 112x112 template
(``data_tools.alignment.face_alignment``), embedded with the model with flip test-time augmentation
(F1, insightface's ``use_flip_test``), weighted by its detector score (D1, ``detector_score``),
averaged within each media (frames of one video, or one photo) and summed over the medias of a
template; template features are L2-normalised and each pair is scored by their cosine.

Two template poolings, insightface's ``use_norm_score`` (``_evaluation_/ijb/ijb_11.py``):

* N0: each face's feature is L2-normalised before pooling, so every face counts the same
  (before the detector score). The feature is the model's flip-TTA embedding, the one the LFW
  evaluation and ``export.embed`` use: the normalised sum of the normalised embeddings of the
  face and of its mirror image (insightface adds the two raw features before normalising; the
  two agree when both norms are equal);
* N1: each face's feature is its embedding before normalisation (with flip, the sum of the
  face's and its mirror's: insightface's feature exactly, up to a common factor that the
  template normalisation cancels), so a face counts in proportion to its feature norm, the
  network's own quality signal: blurred or non-faces weigh less. It needs the SavedModel's
  ``embedding_norm`` output (``export.embedder.NormedEmbeddings``).

Reported: TAR at FAR = 1e-6 ... 1e-1, read two ways from the ROC of the pair scores:

* ``tar@far=1e-06`` ...: the best TAR of any threshold whose FAR is at most the target (the
  step ROC read at FAR <= target), with the threshold and the FAR reached;
* ``tar_nearest@far=1e-06`` ...: insightface's figure, the TPR of the ROC point whose FPR is
  nearest to the target (on scikit-learn's ``roc_curve`` with its default
  ``drop_intermediate``); it may sit above the target. Several ROC points share an FPR (a
  vertical run: mated pairs accepted between two non-mated ones); insightface flips the ROC
  (``np.flipud``, "select largest tpr at same fpr") before taking the first nearest point, so
  the highest TPR of the run is read, and of two points equally far on either side of the
  target, the one above it.

Below 1 / (number of non-mated pairs) no false accept is allowed and both read TAR at FAR 0.
:func:`write_report` writes ``report.json`` (every figure, the ROC) and ``roc.png`` (log-FAR
axis).
"""

import datetime
import io
import json
import math
import os

import numpy as np
from PIL import Image
from tqdm import tqdm

from data_tools.alignment import face_alignment
from data_tools.fileio import atomic_write

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
META_FILES = ("face_tid_mid", "template_pair_label", "name_5pts_score")
DATASETS = ("ijbc", "ijbb")
REPORT_JSON = "report.json"
ROC_PNG = "roc.png"


class IJBError(ValueError):
    """Bad input (missing or malformed meta files, unknown templates): one line for the CLI."""


# ---------------------------------------------------------------------------------------------
# Meta files.


def _rows(path, columns, what):
    """Whitespace-separated rows of ``path`` with ``columns`` fields (None: at least 2)."""
    if not os.path.isfile(path):
        raise IJBError(f"{path} not found")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != columns:
                raise IJBError(f"{path} line {number}: expected {columns} fields ({what}), got "
                               f"{len(fields)}")
            rows.append((number, fields))
    if not rows:
        raise IJBError(f"{path} holds no {what}")
    return rows


def _ints(path, number, values):
    try:
        return [int(v) for v in values]
    except ValueError:
        raise IJBError(f"{path} line {number}: expected integers, got {' '.join(values)}"
                       ) from None


def read_template_media(path):
    """``(image_names, template_ids, media_ids)`` of ``*_face_tid_mid.txt`` (file order)."""
    names, templates, medias = [], [], []
    for number, fields in _rows(path, 3, "image template_id media_id"):
        template, media = _ints(path, number, fields[1:])
        names.append(fields[0])
        templates.append(template)
        medias.append(media)
    return names, np.array(templates, np.int64), np.array(medias, np.int64)


def read_template_pairs(path):
    """``(template1, template2, labels)`` of ``*_template_pair_label.txt``; labels are 0/1."""
    rows = [_ints(path, number, fields)
            for number, fields in _rows(path, 3, "template1 template2 label")]
    pairs = np.array(rows, np.int64)
    bad = ~np.isin(pairs[:, 2], (0, 1))
    if bad.any():
        raise IJBError(f"{path}: labels must be 0 or 1, found "
                       f"{int(pairs[np.flatnonzero(bad)[0], 2])}")
    return pairs[:, 0], pairs[:, 1], pairs[:, 2].astype(bool)


def read_landmarks(path):
    """``{image: (landmarks [5, 2], detector score)}`` of ``*_name_5pts_score.txt``."""
    out = {}
    for number, fields in _rows(path, 12, "image, 5 (x, y) points, score"):
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise IJBError(f"{path} line {number}: expected numbers after the image name"
                           ) from None
        if not all(math.isfinite(v) for v in values):
            raise IJBError(f"{path} line {number}: non-finite value")
        if fields[0] in out:
            raise IJBError(f"{path} line {number}: {fields[0]} listed twice")
        out[fields[0]] = (np.array(values[:10]).reshape(5, 2), values[10])
    return out


def meta_paths(meta_dir, dataset=None):
    """``(dataset, {kind: path})``; ``dataset`` None picks the prefix whose files exist."""
    candidates = [dataset] if dataset else list(DATASETS)
    for name in candidates:
        paths = {kind: os.path.join(meta_dir, f"{name}_{kind}.txt") for kind in META_FILES}
        if all(os.path.isfile(p) for p in paths.values()):
            return name, paths
    expected = ", ".join(f"{candidates[0]}_{kind}.txt" for kind in META_FILES)
    raise IJBError(f"--meta_dir {meta_dir} does not hold the meta files ({expected})")


# ---------------------------------------------------------------------------------------------
# Pooling and scores.


def template_features(image_features, templates, medias):
    """insightface's ``image2template_feature``, vectorised.

    Within a template, the features of the images of one media are averaged; the media
    averages are summed and the sum is L2-normalised. Returns ``(unique_template_ids,
    features [T, D] float64)``, templates in increasing id order.
    """
    x = np.asarray(image_features, np.float64)
    templates = np.asarray(templates)
    medias = np.asarray(medias)
    unique_templates, template_index = np.unique(templates, return_inverse=True)
    template_index = template_index.reshape(-1)
    keys = np.stack([template_index, medias], axis=1)
    _, group, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    sums = np.zeros((counts.size, x.shape[1]))
    np.add.at(sums, group, x)
    group_template = np.zeros(counts.size, np.int64)
    group_template[group] = template_index
    pooled = np.zeros((unique_templates.size, x.shape[1]))
    np.add.at(pooled, group_template, sums / counts[:, None])
    norms = np.sqrt(np.sum(np.square(pooled), axis=1, keepdims=True))
    norms[norms == 0.0] = 1.0
    return unique_templates, pooled / norms


def pair_scores(unique_templates, features, template1, template2):
    """Cosine of the template features of each pair (the features are normalised)."""
    unique_templates = np.asarray(unique_templates)
    rows = []
    for ids in (template1, template2):
        side = np.asarray(ids)
        where = np.minimum(np.searchsorted(unique_templates, side), unique_templates.size - 1)
        missing = unique_templates[where] != side
        if missing.any():
            raise IJBError(f"template {int(side[np.flatnonzero(missing)[0]])} of the pair list has "
                           "no face in the face list")
        rows.append(where)
    scores = np.empty(rows[0].size)
    step = 100000
    for start in range(0, scores.size, step):
        a = features[rows[0][start:start + step]]
        b = features[rows[1][start:start + step]]
        scores[start:start + step] = np.sum(a * b, axis=1)
    return scores


def roc_curve(labels, scores, drop_intermediate=True):
    """``(fpr, tpr, thresholds)`` as ``sklearn.metrics.roc_curve(labels, scores)`` returns them.

    One point per distinct score (accept when ``score >= threshold``), in decreasing threshold
    order after a first point (0, 0) at threshold +inf; ``drop_intermediate`` removes the
    points inside straight horizontal, vertical or diagonal runs, as scikit-learn does.
    """
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(labels)[last]
    fps = 1 + last - tps
    thresholds = scores[last]
    if drop_intermediate and tps.size > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)),
                                    True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    tps = np.r_[0, tps]
    fps = np.r_[0, fps]
    thresholds = np.r_[np.inf, thresholds]
    return fps / float(fps[-1]), tps / float(tps[-1]), thresholds


def tar_at_far(labels, scores, fars=FARS):
    """TAR at each target FAR, both ways (module docstring). Returns a dict of figures."""
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise IJBError("labels and scores must be two 1-D arrays of one length")
    if not np.all(np.isfinite(scores)):
        raise IJBError("scores contain NaN or infinite values")
    num_pos = int(np.count_nonzero(labels))
    num_neg = int(labels.size - num_pos)
    if not num_pos or not num_neg:
        raise IJBError(f"the pair list needs mated and non-mated pairs (got {num_pos} and "
                       f"{num_neg})")
    full_fpr, full_tpr, full_thr = roc_curve(labels, scores, drop_intermediate=False)
    fpr, tpr, _ = roc_curve(labels, scores)
    out = {"num_pairs": int(labels.size), "num_mated": num_pos, "num_nonmated": num_neg,
           "fars": [float(f) for f in fars]}
    for far in fars:
        key = f"{far:g}"
        # The step ROC at FAR <= target: FPR rises with the index, TPR never falls.
        index = int(np.searchsorted(full_fpr, far, side="right")) - 1
        out[f"tar@far={key}"] = float(full_tpr[index])
        out[f"threshold@far={key}"] = float(full_thr[index])
        out[f"far@far={key}"] = float(full_fpr[index])
        # insightface flips the ROC, then min(zip(distance, index)) takes the first of equal
        # distances: the last of them in ROC order, the top of a vertical run.
        nearest = fpr.size - 1 - int(np.argmin(np.abs(fpr[::-1] - far)))
        out[f"tar_nearest@far={key}"] = float(tpr[nearest])
        out[f"far_nearest@far={key}"] = float(fpr[nearest])
    out["auc"] = float(np.sum(np.diff(full_fpr) * (full_tpr[1:] + full_tpr[:-1]) / 2.0))
    out["fpr"], out["tpr"] = _thin_roc(full_fpr, full_tpr)
    return out


def _thin_roc(fpr, tpr, points=2000):
    """At most about ``points`` ROC points, evenly spaced in log FPR, for the report and plot."""
    if fpr.size <= points:
        return fpr.tolist(), tpr.tolist()
    grid = np.unique(np.r_[0.0, np.logspace(-7, 0, points)])
    index = np.searchsorted(fpr, grid, side="right") - 1
    index = np.unique(np.clip(index, 0, fpr.size - 1))
    return fpr[index].tolist(), tpr[index].tolist()


# ---------------------------------------------------------------------------------------------
# Faces -> features.


def aligned_png(path, landmarks, image_size=112):
    """The face of ``path`` aligned from its landmarks, as PNG bytes (lossless)."""
    with Image.open(path) as image:
        image.load()
        face = face_alignment.align_face(
            image if image.mode in ("L", "RGB") else image.convert("RGB"), landmarks,
            image_size=image_size)
    buffer = io.BytesIO()
    Image.fromarray(face).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def image_features(embedder, image_dir, names, landmarks, batch_size=64, flip=True,
                   align_size=112, progress=True, with_norm=False):
    """Embeddings [N, D] of the named faces, aligned; ``landmarks`` as :func:`read_landmarks`.

    ``embedder`` is an ``export.embedder.Embedder`` (anything with ``embed_bytes``).
    ``with_norm``: ``(embeddings, unnormalised)``, the second for N1 pooling.
    """
    missing = [name for name in names if name not in landmarks]
    if missing:
        raise IJBError(f"{len(missing)} faces have no landmarks in the 5-point file (first: "
                       f"{missing[0]})")
    chunks = []
    bar = tqdm(total=len(names), unit="face", disable=not progress, desc="faces")
    try:
        for start in range(0, len(names), batch_size):
            batch = names[start:start + batch_size]
            blobs = []
            for name in batch:
                path = os.path.join(image_dir, name)
                try:
                    blobs.append(aligned_png(path, landmarks[name][0], align_size))
                except (OSError, ValueError) as e:
                    raise IJBError(f"cannot use {path}: {e}") from None
            chunks.append(embedder.embed_bytes(blobs, batch_size=len(blobs), flip=flip,
                                               names=batch, with_norm=with_norm))
            bar.update(len(batch))
    finally:
        bar.close()
    if with_norm:
        # float32 (as the model gives them): two [N, D] arrays of IJB-C are 1 GB each so.
        return tuple(np.concatenate(part).astype(np.float32) for part in zip(*chunks))
    return np.concatenate(chunks).astype(np.float64)


POOLINGS = ("N0", "N1")


def evaluate(features, templates, medias, detector_scores, template1, template2, labels,
             fars=FARS, detector_score=True, pooling="N0"):
    """Image features -> template features -> pair scores -> :func:`tar_at_far` figures.

    ``pooling`` (module docstring): ``"N0"`` L2-normalises the image features first; ``"N1"``
    pools them as given, so pass the embeddings before normalisation. ``detector_score``
    multiplies each by its detector score (insightface's D1). Returns ``(metrics,
    unique_templates, template_feats)``; ``metrics["pooling"]`` names the mode.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    x = np.asarray(features, np.float64)
    if pooling == "N0":
        norms = np.sqrt(np.sum(np.square(x), axis=1, keepdims=True))
        norms[norms == 0.0] = 1.0
        x = x / norms
    if detector_score:
        x = x * np.asarray(detector_scores, np.float64)[:, None]
    unique_templates, feats = template_features(x, templates, medias)
    scores = pair_scores(unique_templates, feats, template1, template2)
    metrics = tar_at_far(labels, scores, fars)
    metrics["num_templates"] = int(unique_templates.size)
    metrics["num_faces"] = int(x.shape[0])
    metrics["pooling"] = pooling
    return metrics, unique_templates, feats


def write_report(metrics, output_dir, extra=None):
    """``report.json`` and ``roc.png`` (TAR against log FAR) in ``output_dir``; their paths."""
    os.makedirs(output_dir, exist_ok=True)
    data = dict(metrics)
    data["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if extra:
        data["extra"] = extra
    text = json.dumps(_finite(data), indent=2, sort_keys=True, allow_nan=False) + "\n"
    json_path = os.path.join(output_dir, REPORT_JSON)
    png_path = os.path.join(output_dir, ROC_PNG)
    figure = _roc_figure(metrics)
    atomic_write(png_path, lambda f: figure.savefig(f, format="png", dpi=100))
    atomic_write(json_path, lambda f: f.write(text.encode("utf-8")))
    return json_path, png_path


def _finite(value):
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _roc_figure(metrics):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fpr = np.asarray(metrics["fpr"])
    tpr = np.asarray(metrics["tpr"])
    figure = Figure(figsize=(6.0, 5.0))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    positive = fpr > 0
    ax.plot(fpr[positive], tpr[positive], color="C0", lw=1.5, label="ROC")
    fars = metrics["fars"]
    ax.plot(fars, [metrics[f"tar@far={f:g}"] for f in fars], "s", color="C3", ms=5,
            label="TAR @ FAR <= target")
    ax.plot([metrics[f"far_nearest@far={f:g}"] or fars[0] for f in fars],
            [metrics[f"tar_nearest@far={f:g}"] for f in fars], "x", color="C2", ms=6,
            label="nearest ROC point (insightface)")
    ax.set_xscale("log")
    ax.set_xlim(min(fars) / 2, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false accept rate (log scale)")
    ax.set_ylabel("true accept rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{metrics.get('dataset', 'IJB')} {metrics.get('pooling', '')}: "
                 f"{metrics.get('num_templates', 0)} templates, "
                 f"{metrics['num_mated']} mated / {metrics['num_nonmated']} non-mated "
                 "pairs", fontsize=9)
    figure.tight_layout()
    return figure
