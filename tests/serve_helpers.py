"""What the service tests share: the tiny SavedModel with a verification report, synthetic
faces of a few identities, hostile image files (built byte by byte, so that a 12,000 x 12,000
image or a decompression bomb costs nothing to make)."""

import io
import json
import os
import socket
import struct
import zlib

import numpy as np
from PIL import Image

from tests import tiny_model

SIZE = tiny_model.SIZE
# The verification report's VAL@FAR operating point: squared L2 distances per fold.
FOLD_THRESHOLDS = [0.9, 1.1]
REPORT_COSINE = 1.0 - np.mean(FOLD_THRESHOLDS) / 2.0


def write_report(saved_model_dir, far_target=1e-3):
    extra = os.path.join(saved_model_dir, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    report = {"threshold": 1.0, "far_target": far_target, "fold_val_threshold": FOLD_THRESHOLDS,
              "roc_thresholds": [0.5, 1.0, 1.5, 2.0], "fpr": [0.0, 0.0005, 0.01, 0.2],
              "tpr": [0.5, 0.8, 0.9, 1.0], "accuracy": 0.9, "extra": {"flip": True}}
    with open(os.path.join(extra, "report.json"), "w") as f:
        json.dump(report, f)


def build_model(directory, seed=5, report=True, transform=None, norm_output=True):
    """The tiny model (pixels signature: the embedder's flip path), its numpy Reference."""
    weights = tiny_model.projection(seed)
    path = tiny_model.build_saved_model(str(directory), weights, pixels_signature=True,
                                        norm_output=norm_output)
    if report:
        write_report(path)
    if transform is not None:
        with open(os.path.join(path, "assets.extra", "transform.json"), "w") as f:
            json.dump(transform, f)
    return path, tiny_model.Reference(weights)


def face_pixels(identity, index, size=SIZE, noise=12):
    """A synthetic face of ``identity``: the identity's fixed pattern plus per-image noise."""
    base = np.random.RandomState(1000 + identity).randint(0, 256, (size, size, 3))
    jitter = np.random.RandomState(identity * 7919 + index).randint(-noise, noise + 1,
                                                                     base.shape)
    return np.clip(base + jitter, 0, 255).astype(np.uint8)


def png_bytes(pixels):
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def jpeg_bytes(pixels, quality=95):
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_header_only(width, height, rows=4):
    """A PNG of ``width`` x ``height`` grey pixels whose IDAT holds only the first ``rows``
    rows of zeros: the header says the size, nothing large is ever allocated."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = zlib.compress(b"\0" * (rows * (width + 1)), 9)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", raw)
            + _chunk(b"IEND", b""))


def decompression_bomb(side=30000):
    """A complete, valid PNG of ``side`` x ``side`` black 1-byte pixels: a few hundred KB that
    inflate to ``side**2`` bytes (900 MB at 30,000)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    parts = [compressor.compress(row * 1000) for _ in range(side // 1000)]
    parts.append(compressor.flush())
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts))
            + _chunk(b"IEND", b""))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
