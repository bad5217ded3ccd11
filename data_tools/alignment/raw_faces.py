"""Raw photos to aligned faces: the library behind ``python -m data_tools.alignment.align``, the
converter's ``--align`` and ``export.embed --align``.

Each photo is read like the converter reads images (:func:`image_files.open_image`: corrupt,
truncated, decompression-bomb and exotic-mode files are refused with a reason; the EXIF
orientation is applied), its five landmarks come from a landmark file or from the detector
(``data_tools.alignment.face_detector``, imported only when it is needed), and the face is
warped onto the 5-point template (``data_tools.alignment.face_alignment``). Several faces: the
largest box is kept and the count is reported; no face: reported, no output.

:func:`align_folder` mirrors a tree (same folders, same file names, each written in the format
its extension names: JPEG at quality 95, everything else lossless) and writes a JSON report
listing every image with its status, face count, score and landmarks. It resumes: images the
report already holds (same options, same file size and time, output present) are not redone.
"""

import io
import json
import math
import os
import sys
import time

import numpy as np
from PIL import Image
from tqdm import tqdm

from data_tools import image_files
from data_tools.alignment import face_alignment
from data_tools.fileio import atomic_write, atomic_write_text, sha256_file

REPORT_NAME = "align_report.json"
REPORT_VERSION = 1
# Recorded with the options: raised whenever the same options give other pixels, so that a
# resumed run never mixes two alignments in one tree. 2 (issue 26): the half-pixel mapping of
# resized photos, and insightface's template at multiples of 128.
ALIGNMENT_REVISION = 2
DEFAULT_IMAGE_SIZE = 112
# How often (in processed images) the report is saved, so that an interrupted run resumes.
SAVE_EVERY = 50
JPEG_QUALITY = 95

ALIGNED = "aligned"
NO_FACE = "no_face"
UNREADABLE = "unreadable"
NOT_LISTED = "not_in_landmark_file"
FAILED = "failed"
STATUSES = (ALIGNED, NO_FACE, UNREADABLE, NOT_LISTED, FAILED)

_LANCZOS = getattr(Image, "Resampling", Image).LANCZOS
# Below this scale (aligned face smaller than half the photo's face), bilinear sampling skips
# pixels and aliases: the face region is first shrunk with an antialiasing filter.
_MIN_WARP_SCALE = 0.5


class AlignError(ValueError):
    """Bad arguments or an output that belongs to another run: one line for the CLI."""


class AlignedFace:
    """What aligning one photo gave: ``face`` (uint8 array, None when there is none), ``status``
    (one of :data:`STATUSES`), ``num_faces``, ``score``, ``landmarks`` ([5, 2] or None),
    ``box`` (or None) and ``reason`` (for anything but ``aligned``)."""

    def __init__(self, status, face=None, num_faces=0, score=None, landmarks=None, box=None,
                 reason=None):
        self.status, self.face, self.num_faces = status, face, num_faces
        self.score, self.landmarks, self.box, self.reason = score, landmarks, box, reason

    def entry(self, relpath):
        """The report entry of this result for ``relpath``."""
        entry = {"path": relpath, "status": self.status, "faces": self.num_faces,
                 "score": None if self.score is None else round(float(self.score), 6),
                 "landmarks": None if self.landmarks is None else
                 [[round(float(v), 3) for v in point] for point in self.landmarks]}
        if self.box is not None:
            entry["box"] = [round(float(v), 2) for v in self.box]
        if self.reason:
            entry["reason"] = self.reason
        return entry


def _antialiased(image, landmarks, image_size):
    """``(image, landmarks)`` with the face region pre-shrunk when the warp would alias."""
    target = face_alignment.template(image_size)
    matrix = face_alignment.similarity_transform(landmarks, target)
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if scale >= _MIN_WARP_SCALE:
        return image, landmarks
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    corners = face_alignment.transform_points(
        inverse, [[0, 0], [image_size, 0], [0, image_size], [image_size, image_size]])
    width, height = image.size
    x0, y0 = np.maximum(np.floor(corners.min(axis=0)) - 2, 0).astype(int)
    x1 = int(min(np.ceil(corners[:, 0].max()) + 2, width))
    y1 = int(min(np.ceil(corners[:, 1].max()) + 2, height))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return image, landmarks  # the face lies outside the photo: nothing to shrink
    size = (max(1, int(round((x1 - x0) * scale))), max(1, int(round((y1 - y0) * scale))))
    region = image.crop((int(x0), int(y0), x1, y1)).resize(size, _LANCZOS)
    factor = np.array([size[0] / float(x1 - x0), size[1] / float(y1 - y0)])
    # PIL scales pixel edges: the landmarks follow the half-pixel mapping.
    return region, face_alignment.points_in_resized(landmarks, factor, origin=(x0, y0))


def align_image(image, faces, image_size=DEFAULT_IMAGE_SIZE):
    """Align the largest of ``faces`` (``face_detector.Face``-like: box, score, landmarks;
    the order given, largest first) in the PIL ``image`` (``L`` or ``RGB``)."""
    if not faces:
        return AlignedFace(NO_FACE, reason="no face detected")
    chosen = faces[0]
    try:
        region, points = _antialiased(image, chosen.landmarks, image_size)
        face = face_alignment.align_face(region, points, image_size=image_size)
    except ValueError as e:  # degenerate landmarks
        return AlignedFace(FAILED, num_faces=len(faces), score=chosen.score,
                           landmarks=chosen.landmarks, box=chosen.box,
                           reason=f"cannot align: {e}")
    return AlignedFace(ALIGNED, face, len(faces), chosen.score, chosen.landmarks, chosen.box)


class _Listed:
    """A face from a landmark file (no box: the only face of its image)."""

    box = None

    def __init__(self, landmarks, score):
        self.landmarks, self.score = landmarks, score


def align_file(path, image_size=DEFAULT_IMAGE_SIZE, detector=None, landmarks=None):
    """Read, detect (or take ``landmarks``: ``(points [5, 2], score)``) and align one photo.

    Exactly one of ``detector`` (anything with ``detect(image)`` returning faces, largest
    first) and ``landmarks`` must be given. Never raises for a bad photo: the result's status
    says what happened.
    """
    if (detector is None) == (landmarks is None):
        raise ValueError("give exactly one of detector and landmarks")
    try:
        image = image_files.open_image(path, exif_transpose=True)
    except image_files.ImageError as e:
        return AlignedFace(UNREADABLE, reason=str(e))
    if landmarks is not None:
        return align_image(image, [_Listed(*landmarks)], image_size)
    try:
        faces = detector.detect(image)
    except Exception as e:  # noqa: BLE001 - a detector failing on one photo must not stop a run
        return AlignedFace(FAILED, reason=f"detector error: {type(e).__name__}: {e}")
    return align_image(image, faces, image_size)


def encode_face(face, filename):
    """The bytes of the aligned ``face`` (uint8 array) in the format ``filename``'s extension
    names (JPEG at quality :data:`JPEG_QUALITY` without chroma subsampling; PNG when the
    extension names no format PIL writes)."""
    extension = os.path.splitext(filename)[1].lower()
    image_format = Image.registered_extensions().get(extension)
    buffer = io.BytesIO()
    image = Image.fromarray(face)
    if image_format == "JPEG":
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    elif image_format in (None, "PNG") or image_format not in Image.SAVE:
        image.save(buffer, format="PNG", compress_level=6)
    else:
        image.save(buffer, format=image_format)
    return buffer.getvalue()


def aligned_png(path, image_size=DEFAULT_IMAGE_SIZE, detector=None, landmarks=None):
    """``(png bytes or None, AlignedFace)`` of one photo, for embedding without a file."""
    result = align_file(path, image_size, detector=detector, landmarks=landmarks)
    if result.face is None:
        return None, result
    return encode_face(result.face, "face.png"), result


# ------------------------------------------------------------------ folders


def list_images(input_dir):
    """``/``-separated paths of the image files under ``input_dir`` (any depth, the top level
    included; hidden files and folders skipped), sorted. Top-level folders that are symlinks
    are followed, as the converter follows them (``data_tools.lfw_holdout`` links its identity
    folders), unless they link to a folder containing ``input_dir``; deeper links are not."""
    found = []
    for name in sorted(os.listdir(input_dir)):
        path = os.path.join(input_dir, name)
        if name.startswith("."):
            continue
        if not os.path.isdir(path):
            if image_files.is_image_filename(name):
                found.append(name)
            continue
        if image_files.links_to_ancestor(path, input_dir):
            continue
        found.extend(image_files.walk_images(input_dir, name)[0])  # the converter's walk
    return sorted(found)


def _stat_key(path):
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _inside(path, root):
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _read_report(path):
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def align_folder(input_dir, output_dir, landmarks_path=None, image_size=DEFAULT_IMAGE_SIZE,
                 report_path=None, overwrite=False, progress=True, detector=None,
                 make_detector=None, detector_options=None, only=None):
    """Align every photo under ``input_dir`` into the same tree under ``output_dir``.

    The five points come from ``landmarks_path`` (see
    :func:`face_alignment.read_landmark_file`; images it does not list are reported, not
    aligned) or from ``detector``, else from ``make_detector()`` (default:
    ``face_detector.load_detector``), called only when an image needs detecting;
    ``detector_options`` (a dict, e.g. the minimum face size) are recorded with the options so
    that a resumed run uses the same detector settings; ``only`` (relpaths) restricts the run
    to those images (the converter's pairs mode aligns the images of the pairs file). The report
    (default ``<output_dir>/align_report.json``) is rewritten every :data:`SAVE_EVERY` images
    and at the end; a run with other options refuses to reuse it unless ``overwrite``. Returns
    a summary dict (counts per status, ``several_faces``, ``kept``, ``processed``,
    ``listed_missing``, ``report``, ``seconds``, ``entries``). Raises :class:`AlignError` and
    ``face_alignment.LandmarkFileError`` for bad arguments, and
    ``face_detector.DetectorUnavailableError`` when a detector is needed and not installed.
    """
    start = time.time()
    input_dir, output_dir = os.path.abspath(input_dir), os.path.abspath(output_dir)
    if image_size is None or isinstance(image_size, bool) or int(image_size) != image_size \
            or image_size < 8:
        raise AlignError(f"--image_size must be an integer >= 8, got {image_size!r}")
    if not os.path.isdir(input_dir):
        raise AlignError(f"--input_dir {input_dir} is not a directory")
    if _inside(output_dir, input_dir):
        raise AlignError(f"--output_dir {output_dir} lies inside --input_dir {input_dir}: the "
                         "aligned faces would be read back as photos")
    relpaths = list_images(input_dir)
    if only is not None:
        wanted = set(only)
        relpaths = [relpath for relpath in relpaths if relpath in wanted]
    if not relpaths:
        raise AlignError(f"--input_dir {input_dir} holds no image files")
    listed = None
    options = {"input_dir": input_dir, "image_size": int(image_size),
               "alignment_revision": ALIGNMENT_REVISION}
    if landmarks_path is not None:
        listed = face_alignment.read_landmark_file(landmarks_path)
        options["landmarks"] = os.path.abspath(landmarks_path)
        options["landmarks_sha256"] = sha256_file(landmarks_path)
    else:
        from data_tools.alignment import face_detector  # noqa: PLC0415 - light: the package loads later

        options["detector"] = getattr(detector, "name", None) or face_detector.PACKAGE
        options.update(detector_options or {})

    report_path = os.path.abspath(report_path or os.path.join(output_dir, REPORT_NAME))
    previous = _read_report(report_path) if os.path.exists(report_path) else None
    if os.path.exists(report_path) and previous is None and not overwrite:
        raise AlignError(f"{report_path} exists and is not an alignment report; pass --overwrite "
                         "to replace it")
    kept, earlier_detector = {}, None
    if previous is not None and not overwrite:
        earlier_detector = previous.get("detector")
        if previous.get("options") != options:
            raise AlignError(f"{report_path} was written with other options "
                             f"({json.dumps(previous.get('options'), sort_keys=True)}); pass "
                             "--overwrite to redo the alignment")
        for entry in previous.get("images") or []:
            if isinstance(entry, dict) and entry.get("path") is not None:
                kept[entry["path"]] = entry
    os.makedirs(output_dir, exist_ok=True)
    os.makedirs(os.path.dirname(report_path), exist_ok=True)

    entries, state = [], {"kept": 0, "processed": 0}
    if listed is not None:
        present = set(relpaths)
        listed_missing = sorted(name for name in listed if name not in present)
    else:
        listed_missing = []

    def save():
        report = {"version": REPORT_VERSION, "options": options,
                  "detector": getattr(detector, "description", None) or earlier_detector,
                  "summary": _summary(entries, state, listed_missing),
                  "listed_missing": listed_missing, "images": entries}
        atomic_write_text(report_path, dump_report(report))

    bar = tqdm(total=len(relpaths), unit="img", desc="aligning", file=sys.stderr,
               disable=None if progress else True)
    try:
        for relpath in relpaths:
            source = os.path.join(input_dir, *relpath.split("/"))
            target = os.path.join(output_dir, *relpath.split("/"))
            try:
                stat_key = _stat_key(source)
            except OSError:
                stat_key = None
            old = kept.get(relpath)
            if (old is not None and old.get("stat") == stat_key
                    and (old.get("status") != ALIGNED or os.path.isfile(target))):
                entries.append(old)
                state["kept"] += 1
                bar.update(1)
                continue
            if listed is not None:
                if relpath in listed:
                    result = align_file(source, image_size, landmarks=listed[relpath])
                else:
                    result = AlignedFace(NOT_LISTED, reason="not in the landmark file")
            else:
                if detector is None:
                    detector = (make_detector or _default_detector)()
                result = align_file(source, image_size, detector=detector)
            if result.face is not None:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                data = encode_face(result.face, relpath)
                atomic_write(target, lambda f, data=data: f.write(data))
            elif os.path.isfile(target):
                os.remove(target)  # a stale face of an earlier run on another file
            entry = result.entry(relpath)
            entry["stat"] = stat_key
            entries.append(entry)
            state["processed"] += 1
            bar.update(1)
            if state["processed"] % SAVE_EVERY == 0:
                save()
    finally:
        bar.close()
        save()
    summary = _summary(entries, state, listed_missing)
    summary.update({"report": report_path, "output_dir": output_dir,
                    "seconds": time.time() - start, "entries": entries,
                    "listed_missing": listed_missing})
    return summary


def dump_report(report):
    """The report as JSON text: the header indented, one line per image (greppable)."""
    header = dict(report, images=[])
    text = json.dumps(header, indent=1, sort_keys=True)
    lines = ",\n".join("  " + json.dumps(entry, sort_keys=True) for entry in report["images"])
    empty = '"images": []'
    return text.replace(empty, f'"images": [\n{lines}\n ]' if lines else empty) + "\n"


def _default_detector():
    from data_tools.alignment import face_detector  # noqa: PLC0415 - optional, loads TensorFlow

    return face_detector.load_detector()


def _summary(entries, state, listed_missing):
    counts = {status: 0 for status in STATUSES}
    for entry in entries:
        counts[entry.get("status")] = counts.get(entry.get("status"), 0) + 1
    counts.update({"num_images": len(entries),
                   "several_faces": sum(1 for e in entries if (e.get("faces") or 0) > 1),
                   "kept": state["kept"], "processed": state["processed"],
                   "num_listed_missing": len(listed_missing)})
    return counts


def format_summary(summary):
    """One paragraph for the CLI."""
    text = (f"{summary['num_images']} images: {summary[ALIGNED]} aligned "
            f"({summary['several_faces']} with several faces, the largest kept), "
            f"{summary[NO_FACE]} without a face, {summary[UNREADABLE]} unreadable, "
            f"{summary[FAILED]} failed")
    if summary[NOT_LISTED] or summary["num_listed_missing"]:
        text += (f", {summary[NOT_LISTED]} not in the landmark file (and "
                 f"{summary['num_listed_missing']} listed images not found)")
    return text + (f"; {summary['processed']} done now, {summary['kept']} kept from an earlier "
                   f"run; {summary['seconds']:.1f} s -> {summary['output_dir']}, report "
                   f"{summary['report']}")
