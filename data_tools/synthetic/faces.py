"""Synthetic cartoon faces aligned like insightface 112x112 crops: the renderer behind the
embedded dataset (``data_tools.synthetic.dataset``); what it draws, the seeded identity and
nuisance parameters, is ``data_tools.synthetic.parameters``.

Built to make face verification *learnable but not trivial*:

* an identity is a stable set of face parameters drawn from a seeded RNG (head shape and jaw,
  skin tone, eye spacing/size/tilt/colour, eyebrows, nose, mouth, ears, hair colour and style,
  and binary traits: glasses, beard, moustache, mole): :func:`sample_identity`;
* every image of an identity redraws the nuisance factors (:func:`sample_nuisance`): pose (roll,
  yaw and pitch projected through a head ellipsoid, residual alignment shift and scale),
  expression (smile, open mouth, eye openness, raised brows, gaze), lighting (directional
  gradient, brightness, contrast, colour cast), background clutter, clothing, occluders, blur,
  low resolution, sensor noise, JPEG quality and, for a few images, grayscale.

Raw pixels therefore say little about identity (their verification accuracy stays far from
perfect) while the identity parameters stay separable, so a small CNN can learn the task.

Everything is deterministic: each identity's parameters come from an RNG seeded by
(seed, split, identity) and each image's from (seed, split, identity, image) (:func:`rng`).
"""

import functools
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from data_tools.synthetic.parameters import GEOMETRY_KEYS, mix, sample_identity, sample_nuisance

# Geometry is designed on a 112-pixel canvas (insightface's crop); other sizes scale it.
_BASE_SIZE = 112.0
# Shapes are drawn at this multiple of the output size and downsampled: PIL's polygons are
# not anti-aliased.
_SUPERSAMPLE = 2
# insightface's 5-point template puts the eyes at (38.3, 51.7) and (73.5, 51.5).
_EYE_LINE_Y = 51.5
_CENTRE_X = 56.0


class _Projector:
    """Head-centred face coordinates (x right, y down, z towards the camera) → canvas pixels.

    The head is an ellipsoid with semi-axes (a, b, depth). Surface features (eyes, nose, mouth)
    sit on it and move with yaw and pitch; outlines (head, hair) are silhouettes that only narrow
    a little. The eyes' midpoint is then put on the alignment template plus a residual shift, as
    a 5-point similarity alignment would.
    """

    def __init__(self, geometry, nz, unit):
        self.a = geometry["head_a"]
        self.b = geometry["head_b"]
        self.depth = 0.9 * self.a
        yaw, pitch, roll = (math.radians(nz[k]) for k in ("yaw", "pitch", "roll"))
        self.cy, self.sy = math.cos(yaw), math.sin(yaw)
        self.cp, self.sp = math.cos(pitch), math.sin(pitch)
        self.kx = math.sqrt(self.cy ** 2 + (self.depth / self.a * self.sy) ** 2)
        self.ky = math.sqrt(self.cp ** 2 + (self.depth / self.b * self.sp) ** 2)
        scale = nz["scale"]
        self.m = scale * np.array([[math.cos(roll), -math.sin(roll)],
                                   [math.sin(roll), math.cos(roll)]])
        self.unit = unit
        self.offset = np.zeros(2)
        eyes = self._rotate(*self._yaw_pitch(np.zeros(1), np.array([-geometry["head_dy"]]),
                                             None))
        target = np.array([_CENTRE_X + nz["shift"][0], _EYE_LINE_Y + nz["shift"][1]])
        self.offset = target - eyes[:, 0]
        self.scale = scale

    def _surface_z(self, x, y):
        inside = 1.0 - (x / self.a) ** 2 - (y / self.b) ** 2
        return self.depth * np.sqrt(np.clip(inside, 0.0, None))

    def _yaw_pitch(self, x, y, dz):
        z = self._surface_z(x, y) + (0.0 if dz is None else dz)
        x2 = x * self.cy + z * self.sy
        z2 = -x * self.sy + z * self.cy
        y2 = y * self.cp - z2 * self.sp
        return x2, y2

    def _rotate(self, x, y):
        return self.m.dot(np.vstack([x, y])) + self.offset[:, None]

    def _points(self, xy):
        return [tuple(p) for p in (xy * self.unit).T.tolist()]

    def surface(self, x, y, dz=None):
        """Canvas points of features lying on the head surface (``dz`` sticks out of it)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        return self._points(self._rotate(*self._yaw_pitch(x, y, dz)))

    def outline(self, x, y, dx=0.0):
        """Canvas points of a silhouette; ``dx`` is the sideways shift of its centre per yaw."""
        x = np.asarray(x, dtype=np.float64) * self.kx + dx * self.sy
        y = np.asarray(y, dtype=np.float64) * self.ky
        return self._points(self._rotate(x, y))

    def length(self, value):
        return max(1, int(round(value * self.scale * self.unit)))


def _colour(rgb, gain=1.0):
    return tuple(int(v) for v in np.clip(np.asarray(rgb, dtype=np.float64) * gain, 0, 255))


def _head_outline(g, n=72):
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    x = g["head_a"] * np.cos(t)
    y = g["head_b"] * np.sin(t)
    lower = np.clip(np.sin(t), 0.0, None)
    x = x * (1.0 - (1.0 - g["jaw"]) * lower ** g["chin_power"])
    return x, y


@functools.lru_cache(maxsize=8)
def _grid(size):
    """Pixel coordinates scaled to [-1, 1] (y, x): shared by every image of a size."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1) * 2.0 - 1.0
    return yy, xx


def _draw_background(nz, size, unit):
    yy, xx = _grid(size)
    yy, xx = yy * 0.5, xx * 0.5
    base = np.asarray(nz["background"], dtype=np.float32)
    grad = np.asarray(nz["background_gradient"], dtype=np.float32)
    pixels = base + (xx[..., None] + yy[..., None]) * grad
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for shape in nz["clutter"]:
        box = [v * unit for v in shape["box"]]
        if shape["kind"] == 0:
            draw.rectangle(box, fill=shape["colour"])
        elif shape["kind"] == 1:
            draw.ellipse(box, fill=shape["colour"])
        else:
            draw.line(box, fill=shape["colour"], width=max(1, int(shape["width"] * unit)))
    return image, draw


def _draw_hair(draw, proj, g, nz, hair, front):
    """Long hair behind the head (front=False) or the hair cap and fringe (front=True)."""
    style = g["hair_style"]
    a, b = g["head_a"], g["head_b"]
    vol = max(0.5, g["hair_vol"] + nz["hair_jitter"])
    big_a, big_b = a + vol, b + vol
    if not front:
        if style != "long":
            return
        n = 40
        t = np.linspace(math.pi, 2.0 * math.pi, n)
        x = np.concatenate([[-big_a - 2.0], big_a * np.cos(t) * 1.08, [big_a + 2.0]])
        y = np.concatenate([[g["long_len"]], big_b * np.sin(t), [g["long_len"]]])
        draw.polygon(proj.outline(x, y, dx=-0.4 * proj.depth), fill=_colour(hair, 0.85))
        return
    if style == "bald":
        # A fringe of short hair around the sides and back, below the bald crown.
        for side in (-1.0, 1.0):
            t = np.linspace(-0.35, 0.3, 10) * math.pi
            x = side * (a + 0.6) * np.cos(t)
            y = (b + 0.6) * np.sin(t)
            draw.line(proj.outline(x, y), fill=_colour(hair), width=proj.length(2.0 + vol * 0.4))
        return
    top_y = -g["head_dy"] - g["hairline"]         # hairline, head coordinates
    n = 48
    x = np.linspace(-big_a, big_a, n)
    top = -big_b * np.sqrt(np.clip(1.0 - (x / big_a) ** 2, 0.0, None))
    rel = np.abs(x) / big_a
    sides = 0.15 * b                              # the hair reaches the temples
    if style == "fringe":
        boundary = top_y + g["fringe_depth"] + (sides - top_y - g["fringe_depth"]) * rel ** 6
    elif style == "side":
        swept = top_y + g["fringe_depth"] * (0.5 + g["fringe_slope"] * x / a)
        boundary = swept + (sides - swept) * rel ** 5
    else:
        boundary = top_y + (sides - top_y) * rel ** 4 + 2.0 * (1.0 - rel ** 2) * (x / a) ** 2
    boundary = np.maximum(boundary, top + 1.0)
    # Top edge is a silhouette, the hairline lies on the face: project them accordingly.
    top_pts = proj.outline(x, top)
    inner = np.abs(x) < a * 0.97
    bottom_pts = proj.surface(x[inner], boundary[inner])
    edge_r = proj.outline(x[~inner & (x > 0)], boundary[~inner & (x > 0)])
    edge_l = proj.outline(x[~inner & (x < 0)], boundary[~inner & (x < 0)])
    polygon = top_pts + edge_r[::-1] + bottom_pts[::-1] + edge_l[::-1]
    draw.polygon(polygon, fill=_colour(hair))


def _draw_eye(draw, proj, g, nz, side, y0):
    cx = side * g["eye_dx"]
    w, h = g["eye_w"], g["eye_h"]
    openness = nz["eye_open"]
    u = np.linspace(0.0, 1.0, 13)
    x = cx + w * (2.0 * u - 1.0)
    tilt = side * g["eye_tilt"] * (x - cx)
    upper = y0 - h * openness * np.sin(math.pi * u) - tilt
    lower = y0 + 0.75 * h * min(openness + 0.2, 1.0) * np.sin(math.pi * u) - tilt
    if openness > 0.2:
        draw.polygon(proj.surface(np.concatenate([x, x[::-1]]),
                                  np.concatenate([upper, lower[::-1]])), fill=(238, 236, 230))
        # Iris and pupil: circles clamped between the lids, which clips them like eyelids do.
        t = np.linspace(0.0, 2.0 * math.pi, 20, endpoint=False)
        gx = cx + nz["gaze"][0] * w * 0.35
        gy = y0 + nz["gaze"][1] * h * 0.3
        for radius, fill in ((g["iris_r"], _colour(g["eye_colour"])), (g["iris_r"] * 0.45,
                                                                        (18, 14, 14))):
            px = np.clip(gx + radius * np.cos(t), cx - w, cx + w)
            pu = (px - cx + w) / (2.0 * w)
            lo = np.interp(pu, u, upper)
            hi = np.interp(pu, u, lower)
            py = np.clip(gy + radius * np.sin(t), lo, hi)
            draw.polygon(proj.surface(px, py), fill=fill)
    lid = proj.surface(x, upper)
    draw.line(lid, fill=_colour(g["skin"], 0.3), width=proj.length(0.9), joint="curve")


def _draw_mouth(draw, proj, g, nz, y0):
    half = g["mouth_w"] * (1.0 + 0.08 * nz["smile"])
    x = np.linspace(-half, half, 17)
    rel = x / half
    centre = y0 - nz["smile"] * 2.6 * rel ** 2 + nz["smile"] * 0.8
    bulge = 1.0 - rel ** 2
    gap = nz["mouth_open"] * 4.5 * bulge
    upper = centre - 0.35 * gap
    lower = centre + gap
    lip = _colour(g["lip"])
    upper_lip = np.concatenate([upper, (upper - g["lip_t"] * 0.7 * bulge ** 0.6)[::-1]])
    lower_lip = np.concatenate([lower, (lower + g["lip_t"] * bulge ** 0.6)[::-1]])
    xx = np.concatenate([x, x[::-1]])
    draw.polygon(proj.surface(xx, lower_lip), fill=lip)
    draw.polygon(proj.surface(xx, upper_lip), fill=lip)
    if nz["mouth_open"] > 0.05:
        draw.polygon(proj.surface(xx, np.concatenate([upper, lower[::-1]])), fill=(70, 22, 26))
        if nz["mouth_open"] > 0.35:
            teeth = np.concatenate([upper, (upper + 0.35 * gap)[::-1]])
            draw.polygon(proj.surface(xx, teeth), fill=(236, 232, 220))
    draw.line(proj.surface(x, centre), fill=_colour(g["lip"], 0.5), width=proj.length(0.7),
              joint="curve")


def _draw_nose(draw, proj, g, y_eyes):
    tip = y_eyes + g["nose_len"]
    half = g["nose_w"] / 2.0
    protrusion = 0.35 * g["nose_len"]
    shadow = _colour(g["skin"], 0.62)
    style = g["nose_style"]
    if style == 2:
        # A shadow wedge under the tip.
        x = np.array([-half, 0.0, half, 0.0])
        y = np.array([tip, tip - 1.0, tip, tip + 2.5])
        draw.polygon(proj.surface(x, y, dz=np.array([0.3, 1.0, 0.3, 0.2]) * protrusion),
                     fill=_colour(g["skin"], 0.75))
    if style == 1:
        # The bridge's shaded side.
        y = np.linspace(y_eyes + 3.0, tip - 1.5, 8)
        x = -0.25 * half - 0.1 * (y - y_eyes)
        dz = np.linspace(0.2, 0.9, 8) * protrusion
        draw.line(proj.surface(x, y, dz=dz), fill=shadow, width=proj.length(0.8), joint="curve")
    x = np.linspace(-half, half, 11)
    y = tip + 1.2 * (1.0 - (x / half) ** 2) - 1.0
    dz = protrusion * (1.0 - 0.7 * (x / half) ** 2)
    draw.line(proj.surface(x, y, dz=dz), fill=shadow, width=proj.length(0.9), joint="curve")
    for side in (-1.0, 1.0):
        nx = np.array([side * half * 0.45])
        nostril = proj.surface(nx, np.array([tip]), dz=np.array([protrusion * 0.6]))[0]
        rad = 0.9 * proj.scale * proj.unit * (0.8 + 0.3 * (style == 0))
        draw.ellipse([nostril[0] - rad * 1.3, nostril[1] - rad, nostril[0] + rad * 1.3,
                      nostril[1] + rad], fill=_colour(g["skin"], 0.45))


def _draw_facial_hair(draw, proj, g, y_mouth, hair):
    colour = _colour(hair, 0.9)
    if g["beard"] == "full":
        x, y = _head_outline(g)
        keep = y > y_mouth - 19.0
        pts = proj.outline(x[keep], y[keep])
        # Close along the cheeks at mouth height (on the face surface).
        # The upper edge rises towards the sideburns and dips under the nose.
        # The outline runs right → chin → left, so the closing edge runs left → right.
        cheek_x = np.linspace(np.min(x[keep]) * 0.95, np.max(x[keep]) * 0.95, 13)
        cheek_y = y_mouth - 5.0 - 14.0 * (cheek_x / g["head_a"]) ** 2
        order = np.argsort(np.arctan2(y[keep], x[keep]))
        pts = [pts[i] for i in order]
        draw.polygon(pts + proj.surface(cheek_x, cheek_y), fill=colour)
    elif g["beard"] == "goatee":
        t = np.linspace(0.0, 2.0 * math.pi, 24, endpoint=False)
        x = 0.35 * g["head_a"] * g["jaw"] * np.cos(t)
        y = y_mouth + 3.0 + g["lip_t"] + 6.0 * (1.0 + np.sin(t)) * 0.8
        draw.polygon(proj.surface(x, y), fill=colour)
    if g["moustache"]:
        x = np.linspace(-g["mouth_w"] - 2.0, g["mouth_w"] + 2.0, 13)
        rel = x / (g["mouth_w"] + 2.0)
        top = y_mouth - 4.5 - g["lip_t"] * 0.5 + 0.5 * rel ** 2
        bottom = y_mouth - 1.0 - g["lip_t"] * 0.5 + 2.5 * rel ** 2
        draw.polygon(proj.surface(np.concatenate([x, x[::-1]]),
                                  np.concatenate([top, bottom[::-1]])), fill=colour)


def _draw_glasses(draw, proj, g, y_eyes):
    colour = _colour(g["glasses_colour"])
    width = proj.length(g["glasses_thick"])
    rx, ry = g["eye_w"] + 3.5, g["eye_h"] + 4.5
    t = np.linspace(0.0, 2.0 * math.pi, 29)
    if g["glasses_round"]:
        ex, ey = np.cos(t), np.sin(t)
    else:  # a superellipse: rectangular frames with rounded corners
        ex = np.sign(np.cos(t)) * np.abs(np.cos(t)) ** 0.4
        ey = np.sign(np.sin(t)) * np.abs(np.sin(t)) ** 0.4
    for side in (-1.0, 1.0):
        cx = side * g["eye_dx"]
        draw.line(proj.surface(cx + rx * ex, y_eyes + ry * ey, dz=3.0), fill=colour,
                  width=width, joint="curve")
        outer = cx + side * rx
        arm_x = np.array([outer, side * g["head_a"] * 0.99])
        draw.line(proj.surface(arm_x, np.array([y_eyes - 1.0, y_eyes]), dz=np.array([3.0, 0.0])),
                  fill=colour, width=width)
    bridge_x = np.linspace(-g["eye_dx"] + rx, g["eye_dx"] - rx, 5)
    bridge_y = y_eyes - 1.5 - 1.0 * (1.0 - (bridge_x / max(g["eye_dx"] - rx, 1e-3)) ** 2)
    draw.line(proj.surface(bridge_x, bridge_y, dz=4.0), fill=colour, width=width)


def _draw_neck_and_shoulders(draw, proj, g, nz):
    a, b = g["head_a"], g["head_b"]
    neck_x = np.array([-0.5, 0.5, 0.55, -0.55]) * a
    neck_y = np.array([0.5 * b, 0.5 * b, b + 30.0, b + 30.0])
    draw.polygon(proj.outline(neck_x, neck_y, dx=-0.3 * proj.depth), fill=_colour(g["skin"], 0.8))
    shoulder_x = np.array([-0.55 * a, 0.55 * a, 2.6 * a, 2.6 * a, -2.6 * a, -2.6 * a])
    shoulder_y = np.array([b + 4.0, b + 4.0, b + 16.0, b + 60.0, b + 60.0, b + 16.0])
    draw.polygon(proj.outline(shoulder_x, shoulder_y, dx=-0.3 * proj.depth),
                 fill=_colour(nz["shirt"]))


def _draw_ears(draw, proj, g, y_eyes):
    # Ears sit behind the head's centre, so yaw shows one and hides the other.
    for side in (-1.0, 1.0):
        t = np.linspace(0.0, 2.0 * math.pi, 16, endpoint=False)
        ex = side * (g["head_a"] - 1.0 + g["ear_w"] * (1.0 + np.cos(t)) * 0.8)
        ey = y_eyes + 3.0 + g["ear_h"] * np.sin(t)
        draw.polygon(proj.outline(ex, ey, dx=-0.5 * proj.depth), fill=_colour(g["skin"], 0.88))


def _draw_mole(draw, proj, g, y_eyes, unit):
    mx, my = g["mole_xy"]
    centre = proj.surface(np.array([mx]), np.array([y_eyes + my]))[0]
    rad = g["mole_r"] * proj.scale * unit
    draw.ellipse([centre[0] - rad, centre[1] - rad, centre[0] + rad, centre[1] + rad],
                 fill=_colour(g["skin"], 0.4))


def _draw_brow(draw, proj, g, nz, side, y_eyes, hair):
    u = np.linspace(0.0, 1.0, 9)
    bx = side * (g["eye_dx"] - 0.9 * g["eye_w"] + u * g["brow_len"] * g["eye_w"])
    by = (y_eyes - g["eye_h"] - g["brow_gap"] - nz["brow_raise"]
          - g["brow_arch"] * np.sin(math.pi * u ** 0.8) - g["brow_tilt"] * u)
    brow_colour = _colour(mix(hair, (30, 25, 22), 0.35))
    draw.line(proj.surface(bx, by), fill=brow_colour, width=proj.length(g["brow_thick"]),
              joint="curve")


def _draw_occluder(draw, occ, unit):
    t = np.linspace(0.0, 2.0 * math.pi, 24, endpoint=False)
    ca, sa = math.cos(occ["angle"]), math.sin(occ["angle"])
    ox = occ["radii"][0] * np.cos(t)
    oy = occ["radii"][1] * np.sin(t)
    pts = np.vstack([occ["centre"][0] + ca * ox - sa * oy,
                     occ["centre"][1] + sa * ox + ca * oy])
    draw.polygon([tuple(p) for p in (pts * unit).T.tolist()], fill=occ["colour"])


def _postprocess(image, nz, size):
    """Camera and scene effects on the downsampled image: blur, lighting, noise."""
    if nz["low_res"] < 1.0:
        small = max(8, int(round(size * nz["low_res"])))
        image = image.resize((small, small), Image.BILINEAR).resize((size, size), Image.BILINEAR)
    if nz["blur"] > 0.0:
        image = image.filter(ImageFilter.GaussianBlur(nz["blur"] * size / _BASE_SIZE))
    pixels = np.asarray(image, dtype=np.float32)
    yy, xx = _grid(size)
    direction = math.cos(nz["light_angle"]) * xx + math.sin(nz["light_angle"]) * yy
    light = nz["brightness"] * (1.0 + nz["light_strength"] * direction)
    pixels = pixels * light[..., None] * np.asarray(nz["colour_cast"], dtype=np.float32)
    mean = pixels.mean()
    pixels = (pixels - mean) * nz["contrast"] + mean
    if nz["noise"] > 0.0:
        noise_rng = np.random.RandomState(nz["noise_seed"])
        pixels = pixels + noise_rng.normal(0.0, nz["noise"], pixels.shape).astype(np.float32)
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    if nz["grayscale"]:
        image = image.convert("L")
    return image


def render(ident, nz, image_size=112):
    """Draw one face image (PIL, RGB or, for grayscale nuisance, L) of ``image_size`` pixels."""
    unit = _SUPERSAMPLE * image_size / _BASE_SIZE
    canvas = _SUPERSAMPLE * image_size
    g = dict(ident)
    for key, jitter in zip(GEOMETRY_KEYS, nz["jitter"]):
        g[key] = ident[key] * (1.0 + jitter)
    skin, hair = g["skin"], g["hair"]
    image, draw = _draw_background(nz, canvas, unit)
    proj = _Projector(g, nz, unit)
    y_eyes = -g["head_dy"]
    y_mouth = y_eyes + g["mouth_dy"]

    _draw_hair(draw, proj, g, nz, hair, front=False)
    _draw_neck_and_shoulders(draw, proj, g, nz)
    _draw_ears(draw, proj, g, y_eyes)
    hx, hy = _head_outline(g)
    draw.polygon(proj.outline(hx, hy), fill=_colour(skin))
    _draw_facial_hair(draw, proj, g, y_mouth, hair)
    if g["mole"]:
        _draw_mole(draw, proj, g, y_eyes, unit)
    _draw_nose(draw, proj, g, y_eyes)
    _draw_mouth(draw, proj, g, nz, y_mouth)
    for side in (-1.0, 1.0):
        _draw_eye(draw, proj, g, nz, side, y_eyes)
        _draw_brow(draw, proj, g, nz, side, y_eyes, hair)
    _draw_hair(draw, proj, g, nz, hair, front=True)
    if nz["glasses_on"]:
        _draw_glasses(draw, proj, g, y_eyes)
    if nz["occluder"] is not None:
        _draw_occluder(draw, nz["occluder"], unit)
    image = image.resize((image_size, image_size), Image.LANCZOS)
    return _postprocess(image, nz, image_size)


def render_image(seed, split, identity_index, image_index, image_size=112,
                 grayscale_fraction=0.02):
    """Image ``image_index`` (0-based) of identity ``identity_index``: (PIL image, JPEG quality)."""
    ident = sample_identity(seed, split, identity_index)
    nz = sample_nuisance(ident, seed, split, identity_index, image_index, grayscale_fraction)
    return render(ident, nz, image_size), nz["jpeg_quality"]
