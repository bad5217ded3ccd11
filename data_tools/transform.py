"""The conversion transform: what the converter did to a photo's pixels, as one value.

A model only recognises faces cut out the way its records were. The converter
(``make_tfrecords.py``) makes a :class:`Transform` from its ``--crop_box``, ``--image_size`` and
``--align``; the records' ``manifest.json`` stores it (``transform``), every export carries its
evaluation records' one (``assets.extra/transform.json``), and every program that takes photos
(``export.embed``, ``export.gallery``, the service) applies it, so that a raw photo reaches the
model as the pixels the records hold. On disk it is JSON (:meth:`Transform.to_dict`); in code it
is always this type.

Fields:

* ``crop_box``: ``(x0, y0, x1, y1)`` pixels, x1/y1 exclusive, cropped first (or None);
* ``image_size``: the side of the square the crop is centre-cut to and resized to (or None);
* ``align``: the faces were detected and aligned onto the 5-point template at ``image_size``
  (``data_tools.alignment.raw_faces``) instead of cropped;
* ``resampling``: the resize filter, ``"lanczos"`` (PIL's) whenever something is resized;
* ``record_shape``: ``(height, width)`` of the stored images when they all share one (derived
  from ``image_size`` or the crop box; recorded by the converter for images kept at their own
  size, where the serving graph needs it to follow the evaluation's resize exactly), else None.

PIL and numpy only: the converter's worker processes use it, and they never touch TensorFlow.
"""

import collections

from data_tools import image_files

RESAMPLING = image_files.RESAMPLING
# The size of 5-point aligned faces when a record does not say (insightface's template).
DEFAULT_ALIGNED_SIZE = 112


def _shape(value):
    """``(height, width)`` positive ints of a recorded shape, or a TransformError."""
    try:
        height, width = (int(side) for side in value)
    except (TypeError, ValueError):
        raise TransformError(f"a record shape is [height, width], got {value!r}") from None
    if height < 1 or width < 1:
        raise TransformError(f"a record shape is positive, got {value!r}")
    return height, width


class TransformError(ValueError):
    """A transform that cannot be read or applied; the message says why."""


class Transform(collections.namedtuple("Transform",
                                       ["crop_box", "image_size", "align", "resampling",
                                        "record_shape"])):
    """One conversion transform (see the module docstring). Immutable, comparable, hashable."""

    __slots__ = ()

    def __new__(cls, crop_box=None, image_size=None, align=False, resampling=None,
                record_shape=None):
        box = image_files.parse_crop_box(crop_box)
        if image_size is not None:
            if isinstance(image_size, bool) or int(image_size) != image_size or image_size < 1:
                raise TransformError(f"image size must be a positive integer, got "
                                     f"{image_size!r}")
            image_size = int(image_size)
        align = bool(align)
        if align and box is not None:
            raise TransformError("an aligned face is not cropped to a box: give crop_box or "
                                 "align, not both")
        if align and image_size is None:
            image_size = DEFAULT_ALIGNED_SIZE
        if image_size is None:
            resampling = None
        elif resampling is None:
            resampling = RESAMPLING
        if resampling not in (None, RESAMPLING):
            raise TransformError(f"the conversion used {resampling!r} resampling; only the "
                                 f"converter's {RESAMPLING!r} is implemented")
        if image_size is not None:
            record_shape = (image_size, image_size)
        elif box is not None:
            record_shape = (box[3] - box[1], box[2] - box[0])
        elif record_shape is not None:
            record_shape = _shape(record_shape)
        return super().__new__(cls, box, image_size, align, resampling, record_shape)

    @classmethod
    def of_conversion(cls, crop_box=None, image_size=None, align=False, sizes=None):
        """The Transform a conversion applies; ``sizes``: the ``(width, height)`` of its source
        images, which give ``record_shape`` when nothing resizes them."""
        distinct = {(int(height), int(width)) for width, height in (sizes or ())}
        shape = distinct.pop() if len(distinct) == 1 else None
        return cls(crop_box, image_size, align, record_shape=shape)

    @classmethod
    def make(cls, crop_box=None, image_size=None, align=False):
        """The Transform of the converter's spellings (``'x0,y0,x1,y1'`` or 4 ints; a positive
        int; a bool), or None when it changes nothing."""
        transform = cls(crop_box, image_size, align)
        return None if transform.is_identity else transform

    @property
    def is_identity(self):
        """True when the pixels go through unchanged."""
        return self.crop_box is None and self.image_size is None and not self.align

    def same_conversion(self, other):
        """True when ``other`` (a Transform or None) converts photos as this one does; a
        ``record_shape`` only one of them knows (an older manifest) is not a difference."""
        other = other if other is not None else Transform()
        if self.record_shape is None or other.record_shape is None:
            return self._replace(record_shape=None) == other._replace(record_shape=None)
        return self == other

    # ---- JSON: the manifest's ``transform``, an export's ``transform.json``, params.json

    def to_dict(self):
        """The JSON form: ``{"crop_box": [x0, y0, x1, y1] or None, "image_size": int or None,
        "resampling": "lanczos" or None, "record_shape": [height, width] or None}``, plus
        ``"align": true`` for aligned faces (older readers, which know the first three keys
        only, still read crop-box transforms)."""
        record = {"crop_box": None if self.crop_box is None else list(self.crop_box),
                  "image_size": self.image_size, "resampling": self.resampling,
                  "record_shape": None if self.record_shape is None else list(self.record_shape)}
        if self.align:
            record["align"] = True
        return record

    @classmethod
    def from_dict(cls, record):
        """The Transform of a JSON dict (:meth:`to_dict`, or an older export's three keys), or
        None for None, an empty dict or an identity transform of unknown shape."""
        if not record:
            return None
        if isinstance(record, Transform):
            return None if record.is_identity and record.record_shape is None else record
        if not isinstance(record, dict):
            raise TransformError(f"a transform is a JSON object, got {type(record).__name__}")
        try:
            transform = cls(record.get("crop_box"), record.get("image_size"),
                            record.get("align", False), record.get("resampling"),
                            record.get("record_shape"))
        except (TypeError, ValueError) as e:
            raise TransformError(str(e)) from None
        return None if transform.is_identity and transform.record_shape is None else transform

    @classmethod
    def from_manifest(cls, manifest):
        """The transform a records manifest describes, or None (another tool's manifest, or
        records stored as they were).

        Manifests of older converters lack ``transform`` (their ``options`` hold ``crop_box``
        and ``image_size``) or record an alignment only in ``options["align"]``.
        """
        options = manifest.get("options") if isinstance(manifest.get("options"), dict) else {}
        aligned = options.get("align")
        if isinstance(aligned, dict):
            return cls(None, aligned.get("image_size"), True)
        if isinstance(manifest.get("transform"), dict):
            return cls.from_dict(manifest["transform"])
        if not {"crop_box", "image_size"} <= set(options):
            return None
        return cls.make(options["crop_box"], options["image_size"])

    # ---- what it does

    def describe(self):
        """``crop_box=70,60,180,190 image_size=112``, ``align image_size=112`` or ``none``:
        the flags that give this transform."""
        parts = ["align"] if self.align else []
        if self.crop_box is not None:
            parts.append(f"crop_box={','.join(str(c) for c in self.crop_box)}")
        if self.image_size is not None:
            parts.append(f"image_size={self.image_size}")
        return " ".join(parts) or "none"

    def apply_image(self, image):
        """The converter's crop and resize of a PIL image. Aligned transforms need the face
        detector: :func:`data_tools.alignment.raw_faces.aligned_png` applies those."""
        if self.align:
            raise TransformError("an aligned transform needs the face detector: use "
                                 "data_tools.alignment.raw_faces.aligned_png")
        return image_files.transform_image(image, self.image_size, self.crop_box)

    def apply(self, data):
        """PNG bytes of encoded image ``data`` after the (crop-box) transform, as the converter
        stores them; raises ``image_files.ImageError`` with the reason."""
        if self.align:
            raise TransformError("an aligned transform needs the face detector: use "
                                 "data_tools.alignment.raw_faces.aligned_png")
        return image_files.transformed_png(data, self.image_size, self.crop_box)

