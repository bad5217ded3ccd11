"""Image files of a face dataset: scanning identity folders, validating and encoding images.

Everything here runs in the converter's worker processes, so it imports PIL and numpy only,
never TensorFlow: the workers are forked from a parent that has TensorFlow loaded, and they must
not touch it.

Storage rules (what ends up in a record):

* JPEG and PNG files that hold 8-bit grayscale or RGB pixels are stored as they are, byte for
  byte: no generation loss, and the record is as small as the source;
* every other readable image (PGM, PPM, BMP, TIFF, WebP, and JPEG/PNG in palette, alpha, 16-bit,
  1-bit or CMYK modes) becomes 8-bit grayscale or RGB and is stored as PNG, which is lossless and
  which every reader decodes the same way (TensorFlow 1.15 included);
* ``crop_box`` and ``image_size`` crop and resize the pixels and store the result as PNG.

Grayscale stays grayscale (one channel) on disk; readers expand it to RGB.
"""

import collections
import functools
import hashlib
import io
import os
import stat
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps

# Lower-case extensions that mark a file as an image. The order is also the order in which a
# pairs file's `name_%04d` is looked up on disk (pairs.py).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".pnm", ".pbm", ".bmp", ".tif",
                    ".tiff", ".webp")

# The formats the records can hold unchanged; values are the record's `image/format`.
_AS_IS_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png"}
_CHANNELS = {"L": 1, "RGB": 3}
# Pillow 9.1 moved the filters into an enum; older releases only have the module constant.
_LANCZOS = getattr(Image, "Resampling", Image).LANCZOS
# Pillow < 7 raises a plain OSError for unknown formats.
_UNIDENTIFIED = getattr(Image, "UnidentifiedImageError", OSError)
# Magic numbers: PIL says "cannot identify" both for non-images and for images whose header is
# broken; these tell the two apart in the reason shown to the user.
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"BM", "BMP"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"RIFF", "WebP"), (b"GIF8", "GIF"))


class ImageError(Exception):
    """A file that cannot become a record. ``str(error)`` is the reason shown to the user."""


class ImageChanged(ImageError):
    """The file's bytes are no longer those :func:`check_image` validated."""


ImageEntry = collections.namedtuple("ImageEntry", ["identity", "relpath", "size"])
ImageEntry.__doc__ = """A candidate image: identity folder, path relative to the input dir
(``/``-separated), size in bytes."""

ScanResult = collections.namedtuple("ScanResult", ["entries", "skipped"])
ScanResult.__doc__ = """Result of :func:`scan_identity_folders`: ``entries`` (list of
:class:`ImageEntry`, sorted by identity then path) and ``skipped`` (list of ``(relpath, reason)``
for image-named files that cannot be used whatever their content)."""

ImageInfo = collections.namedtuple(
    "ImageInfo", ["source_format", "width", "height", "reencode", "sha256", "stored_format",
                  "channels"])
ImageInfo.__doc__ = """What :func:`check_image` learnt: the source format (PIL's name), its size,
whether the record will hold re-encoded PNG rather than the file's bytes, and the sha256 (hex) of
the file's bytes, which pins the content the plan was made from. For a file stored as it is,
``stored_format`` (``'jpeg'`` or ``'png'``) and ``channels`` are the record's fields, so that
:func:`encode_image` needs no decoder for it; both are None when ``reencode``."""

EncodedImage = collections.namedtuple(
    "EncodedImage", ["encoded", "format", "height", "width", "channels", "sha256"])
EncodedImage.__doc__ = """The bytes a record stores, with the fields of the schema (``format`` is
``'jpeg'`` or ``'png'``) and the sha256 (hex) of the source file's bytes."""


def is_image_filename(name):
    """True when ``name`` ends with one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def parse_crop_box(text):
    """Parse ``'x0,y0,x1,y1'`` (pixels, x1/y1 exclusive) into a tuple of four ints.

    ``None`` or an empty string gives ``None``. Raises ``ValueError`` for anything that is not
    four non-negative integers with ``x0 < x1`` and ``y0 < y1``.
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        box = tuple(int(str(p).strip()) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4 or min(box) < 0 or box[0] >= box[2] or box[1] >= box[3]:
        raise ValueError("crop box must be 'x0,y0,x1,y1' with 0 <= x0 < x1 and 0 <= y0 < y1, "
                         f"got {text!r}")
    return box


def _name_problem(name):
    """Why a file or folder name cannot go into a record, or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    if "\n" in name or "\r" in name:
        # labels.txt and the manifest's skip list are line-oriented.
        return "name contains a line break"
    return None


def scan_identity_folders(input_dir):
    """List the candidate images of a folder tree with one sub-folder per identity.

    Every file under ``input_dir/<identity>/`` (nested folders included) whose extension is an
    image extension is a candidate; other files (``Thumbs.db``, ``.txt``) are ignored, and so are
    hidden files and folders (``.DS_Store``, macOS ``._*`` resource forks). Image-named files
    that can never become records are returned in ``skipped`` with the reason: files lying
    directly in ``input_dir`` (no identity), names that are not UTF-8, entries that are not
    regular files (a FIFO would hang the reader) or cannot be stat'ed (a symlink loop), folders
    that cannot be listed, and identity folders that are symlinks to a folder containing them.
    """
    entries = []
    skipped = []
    for identity in sorted(os.listdir(input_dir)):
        if identity.startswith("."):
            continue
        path = os.path.join(input_dir, identity)
        if not os.path.isdir(path):
            if is_image_filename(identity):
                skipped.append((identity, "image outside an identity folder"))
            continue
        if links_to_ancestor(path, input_dir):
            # os.walk does not follow links below the top, but this link is the top: the
            # whole tree would come back as images of one more identity.
            skipped.append((identity, "symlink loop: the identity folder links to a folder "
                                      "that contains it"))
            continue
        identity_problem = _name_problem(identity)
        found, unlistable = walk_images(input_dir, identity)
        skipped.extend(unlistable)
        for relpath in found:
            problem = identity_problem or _name_problem(relpath)
            if problem is not None:
                skipped.append((relpath, problem))
                continue
            try:
                st = os.stat(os.path.join(input_dir, relpath))
            except OSError as e:
                skipped.append((relpath, f"cannot stat: {e.strerror or e}"))
                continue
            if not stat.S_ISREG(st.st_mode):
                skipped.append((relpath, "not a regular file"))
                continue
            entries.append(ImageEntry(identity, relpath, st.st_size))
    entries.sort(key=lambda e: (e.identity, e.relpath))
    skipped.sort()
    return ScanResult(entries, skipped)


def links_to_ancestor(path, input_dir):
    """True when the folder ``path`` is ``input_dir`` or contains it (a symlink loop)."""
    real, root = os.path.realpath(path), os.path.realpath(input_dir)
    return root == real or root.startswith(real.rstrip(os.sep) + os.sep)


def walk_images(input_dir, identity):
    """Paths (relative, ``/``-separated) of the image-named files under one identity folder.

    Returns ``(found, unlistable)``: ``unlistable`` holds ``(relpath, reason)`` of the folders
    that cannot be listed (os.walk would silently leave them out).
    """
    found, unlistable = [], []

    def onerror(error):
        where = os.path.relpath(error.filename or os.path.join(input_dir, identity), input_dir)
        unlistable.append((where.replace(os.sep, "/"),
                           f"cannot list folder: {error.strerror or error}"))

    for dirpath, dirnames, filenames in os.walk(os.path.join(input_dir, identity),
                                                onerror=onerror):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, input_dir).replace(os.sep, "/")
        for filename in sorted(filenames):
            if not filename.startswith(".") and is_image_filename(filename):
                found.append(rel_dir + "/" + filename)
    return found, unlistable


def _describe(error):
    text = str(error).strip().splitlines()
    detail = text[0] if text else ""
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


def _read_file(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ImageError(f"cannot read: {e.strerror or e}") from None
    if not data:
        raise ImageError("empty file (0 bytes)")
    return data


def _check_pixel_count(size):
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and size[0] * size[1] > limit:
        raise ImageError(f"{size[0]}x{size[1]} pixels exceed PIL's decompression-bomb limit of "
                         f"{limit} pixels")


def _open_header(data):
    """Open (header only) with the decompression-bomb guard; returns the lazy PIL image."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageError(f"decompression-bomb guard: {_describe(e)}") from None
    except _UNIDENTIFIED:
        for signature, name in _SIGNATURES:
            if data.startswith(signature):
                raise ImageError(f"corrupt {name} header (the file starts like a {name} but "
                                 "cannot be parsed)") from None
        raise ImageError("not an image (format not recognised)") from None
    except Exception as e:  # noqa: BLE001 - decoders raise anything on hostile input
        raise ImageError(f"corrupt image header ({_describe(e)})") from None
    _check_pixel_count(image.size)
    return image


# Image.verify() of every plugin but PNG only closes the file. PNG's checks the CRC of every chunk
# from the first IDAT on, which load() skips, so it stays, with the reopen it needs.
_NO_OP_VERIFY = (Image.Image.verify, ImageFile.ImageFile.verify)


def _verify_checks_more(image):
    return getattr(type(image), "verify", None) not in _NO_OP_VERIFY


def _load(image):
    try:
        image.load()
    except Exception as e:  # noqa: BLE001
        raise ImageError(f"corrupt or truncated image data ({_describe(e)})") from None
    return image


def _decode(data):
    """Verify and fully decode ``data``; returns ``(format, loaded PIL image)``.

    A full ``load()`` is the only way to notice a truncated or corrupt JPEG (PIL's
    ``LOAD_TRUNCATED_IMAGES`` stays False); ``verify()`` adds the PNG chunk CRCs, and runs (on
    a header of its own: a verified image cannot be loaded) only for formats where it checks
    anything, so that a JPEG's header is parsed once.
    """
    image = _open_header(data)
    source_format = image.format
    if _verify_checks_more(image):
        try:
            image.verify()
        except Exception as e:  # noqa: BLE001
            raise ImageError(f"corrupt image ({_describe(e)})") from None
        image = _open_header(data)
    return source_format, _load(image)


def _stored_format(source_format, mode, data, image_size, crop_box):
    """The record format when the file's bytes can be stored as they are, else None."""
    if image_size is not None or crop_box is not None or mode not in _CHANNELS:
        return None
    stored = _AS_IS_FORMATS.get(source_format)
    # PIL reports 16-bit RGB PNGs as "RGB"; the IHDR bit depth (byte 24) tells them apart.
    if stored == "png" and (len(data) < 26 or data[24] != 8):
        return None
    return stored


def _to_8bit(image):
    """Convert any PIL mode to 8-bit "L" or "RGB", dropping alpha (readers drop it too)."""
    mode = image.mode
    if mode in _CHANNELS:
        return image
    if mode in ("1", "LA", "La"):
        return image.convert("L")
    if mode == "I" or mode.startswith("I;16"):
        # 16-bit grayscale: keep the high byte, as TensorFlow's uint16 -> uint8 conversion does.
        pixels = np.asarray(image).astype(np.int64) >> 8
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")
    if mode == "F":
        raise ImageError("floating-point (mode F) images are not supported")
    return image.convert("RGB")


def _check_crop_box(size, crop_box):
    if crop_box is not None and (crop_box[2] > size[0] or crop_box[3] > size[1]):
        box = ",".join(str(c) for c in crop_box)
        raise ImageError(f"crop box {box} lies outside the {size[0]}x{size[1]} image")


# The converter's resampling, as recorded in a records manifest's ``transform``.
RESAMPLING = "lanczos"


def transform_image(image, image_size=None, crop_box=None):
    """The converter's crop and resize of a PIL image (any mode PIL can crop and resize).

    ``crop_box`` (``(x0, y0, x1, y1)``, x1/y1 exclusive, see :func:`parse_crop_box`) crops
    first; ``image_size`` then centre-crops to a square (the larger side loses
    ``(long - short) // 2`` pixels at its start) and resizes to ``image_size`` x ``image_size``
    with PIL's Lanczos filter (:data:`RESAMPLING`). Either may be None. Raises
    :class:`ImageError` when the crop box does not fit inside the image.

    The converter (``make_tfrecords.py``) and ``export.embed`` both call this, so that a face
    embedded from a raw photo gets the pixels the records hold.
    """
    if crop_box is not None:
        _check_crop_box(image.size, crop_box)
        image = image.crop(tuple(crop_box))
    if image_size is not None:
        width, height = image.size
        side = min(width, height)
        if width != height:
            left, top = (width - side) // 2, (height - side) // 2
            image = image.crop((left, top, left + side, top + side))
        if side != image_size:
            image = image.resize((image_size, image_size), _LANCZOS)
    return image


def _encode_png(image):
    buffer = io.BytesIO()
    # No metadata is passed, so no timestamps: equal pixels give equal bytes.
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _quiet(function):
    """Run ``function`` with warnings silenced: the bomb limit is enforced explicitly, and EXIF
    or palette-transparency warnings from thousands of files would bury the real messages."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return function(*args, **kwargs)
    return wrapper


@_quiet
def transformed_png(data, image_size=None, crop_box=None, exif_transpose=False):
    """PNG bytes of encoded image ``data`` (any format PIL reads) after the converter's
    transform: 8-bit grayscale or RGB, cropped and resized by :func:`transform_image`, encoded
    as the converter encodes the records it re-encodes (same pixels, same bytes).
    ``exif_transpose`` turns the image by its EXIF orientation tag first, as
    :func:`open_image` does for the aligner (a phone photo's frame, upright).

    Raises :class:`ImageError` (with the reason) for data that is not a usable image, or
    smaller than ``crop_box``.
    """
    image = _decode(data)[1]
    if exif_transpose:
        image = ImageOps.exif_transpose(image)
    return _encode_png(transform_image(_to_8bit(image), image_size, crop_box))


@_quiet
def check_image(path, image_size=None, crop_box=None):
    """Validate one image file fully (decode; PNG: CRCs too); returns an :class:`ImageInfo`.

    The file is read once and decoded once. Raises :class:`ImageError` with the reason when the
    file is empty, unreadable, not an image, truncated or corrupt, too large (PIL's
    ``MAX_IMAGE_PIXELS``), or smaller than ``crop_box``.
    """
    return _check_data(_read_file(path), image_size, crop_box)


def _check_data(data, image_size, crop_box):
    source_format, image = _decode(data)
    _check_crop_box(image.size, crop_box)
    stored = _stored_format(source_format, image.mode, data, image_size, crop_box)
    if stored is None:
        # Convert now so that an exotic mode fails here, as a skip, not while writing a shard.
        try:
            _to_8bit(image)
        except ImageError:
            raise
        except Exception as e:  # noqa: BLE001
            raise ImageError(f"unsupported pixel mode {image.mode} ({_describe(e)})") from None
    return ImageInfo(source_format, image.size[0], image.size[1], stored is None,
                     hashlib.sha256(data).hexdigest(), stored,
                     None if stored is None else _CHANNELS[image.mode])


@_quiet
def encode_image(path, info, image_size=None, crop_box=None):
    """The record content of an image file that :func:`check_image` accepted, as an
    :class:`EncodedImage`; ``info`` is its :class:`ImageInfo` (same ``image_size`` and
    ``crop_box``).

    The file is read again and must still hash to ``info.sha256`` (else :class:`ImageChanged`):
    then it is the content already verified and decoded once, so a file stored as it is (JPEG/PNG
    in 8-bit grayscale or RGB) is not parsed at all, and any other is decoded without a second
    verification, converted to 8-bit L/RGB, cropped/resized and encoded as PNG.
    """
    data = _read_file(path)
    digest = hashlib.sha256(data).hexdigest()
    if digest != info.sha256:
        raise ImageChanged("the file's content changed since it was checked")
    if info.stored_format is not None:
        return EncodedImage(data, info.stored_format, info.height, info.width, info.channels,
                            digest)
    image = transform_image(_to_8bit(_load(_open_header(data))), image_size, crop_box)
    width, height = image.size
    return EncodedImage(_encode_png(image), "png", height, width, _CHANNELS[image.mode], digest)


@_quiet
def open_image(path, exif_transpose=False):
    """Read, verify and fully decode one image file; returns a loaded PIL image in 8-bit ``L``
    or ``RGB`` (as the records hold it), for code that works on pixels (face alignment).

    ``exif_transpose`` applies the EXIF orientation tag first (phone photos). Raises
    :class:`ImageError` with the reason for the same files :func:`check_image` rejects.
    """
    _, image = _decode(_read_file(path))
    if exif_transpose:
        try:
            image = ImageOps.exif_transpose(image)
        except Exception as e:  # noqa: BLE001 - a damaged EXIF block
            raise ImageError(f"cannot apply the EXIF orientation ({_describe(e)})") from None
    try:
        return _to_8bit(image)
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ImageError(f"unsupported pixel mode {image.mode} ({_describe(e)})") from None


def check_task(task):
    """Pool task: ``(index, path, image_size, crop_box)`` → ``(index, ImageInfo, reason)``.

    Exactly one of ``ImageInfo`` and ``reason`` is None.
    """
    index, path, image_size, crop_box = task
    try:
        return index, check_image(path, image_size, crop_box), None
    except ImageError as e:
        return index, None, str(e)


def encode_task(task):
    """Pool task: ``(index, path, info, image_size, crop_box)`` → ``(index, EncodedImage,
    error)``; exactly one of ``EncodedImage`` and ``error`` (the :class:`ImageError`) is None."""
    index, path, info, image_size, crop_box = task
    try:
        return index, encode_image(path, info, image_size, crop_box), None
    except ImageError as e:
        return index, None, e


# ------------------------------------------------------------------ images inside containers


@_quiet
def check_bytes(data, image_size=None, crop_box=None):
    """:func:`check_image` for an image already in memory (an image of an insightface ``.rec``
    or ``.bin`` container); the :class:`ImageInfo` pins ``data`` by its sha256."""
    if not data:
        raise ImageError("empty image (0 bytes)")
    return _check_data(data, image_size, crop_box)


@_quiet
def encode_bytes(data, info, image_size=None, crop_box=None):
    """:func:`encode_image` for an image in memory that :func:`check_bytes` accepted."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != info.sha256:
        raise ImageChanged("the image's bytes changed since they were checked")
    if info.stored_format is not None:
        return EncodedImage(bytes(data), info.stored_format, info.height, info.width,
                            info.channels, digest)
    image = transform_image(_to_8bit(_load(_open_header(data))), image_size, crop_box)
    width, height = image.size
    return EncodedImage(_encode_png(image), "png", height, width, _CHANNELS[image.mode], digest)
