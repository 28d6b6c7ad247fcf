"""Draw a region's layout as an image for one epoch (before or after).

Vector objects are rasterised with PIL's C polygon/line/ellipse fills into layer images (one fill
per object), and the layers are combined with whole-array numpy operations: no per-pixel Python
loops. Arrays here are ``(H, W, 3)`` float32 RGB reflectance in ``[0, 1]`` (rows first).

Both epochs of a region share :class:`StaticFields` (ground texture, grain), so anything not
changed on purpose is the same in before and after.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tiles.synth.layout import STOREY_M, Building, Layout, rectangle
from tiles.synth.noise import fractal_noise, pixel_noise, smooth_noise, upsample

VEHICLE_COLOURS = np.array(
    [[0.88, 0.88, 0.88], [0.66, 0.67, 0.68], [0.12, 0.12, 0.13], [0.40, 0.40, 0.42],
     [0.62, 0.14, 0.12], [0.16, 0.24, 0.46], [0.70, 0.64, 0.52], [0.90, 0.90, 0.88]],
    dtype=np.float32,
)


@dataclass(frozen=True)
class EpochStyle:
    """How one epoch was acquired and what the world looked like.

    Attributes:
        after: draw the damage, construction and the after-only objects.
        sun_azimuth_deg: clockwise from north.
        sun_elevation_deg: above the horizon.
        view_azimuth_deg: azimuth from the ground to the satellite.
        off_nadir_deg: viewing angle; buildings lean away from the satellite.
        shift_px: ``(dy, dx)`` integer misregistration of this epoch in canvas pixels.
        dryness: 0 lush green .. 1 dry/brown vegetation.
        leaf_off: 0 .. 1 share of deciduous trees without leaves.
        gains: per-channel gain ``(3,)``.
        gamma: tone curve exponent.
        saturation: saturation multiplier.
        offset: additive offset (dark current / path radiance).
        haze: 0 .. 1 haze blend strength.
        blur_px: gaussian blur radius in pixels.
        noise_std: additive noise standard deviation (0..1 scale).
        jpeg_quality: 0 = no JPEG artefacts, else a JPEG quality 1..95.
        cloud_cover: fraction of the canvas under cloud.
        nodata_fraction: width of a nodata strip, as a fraction of the scene width.
        vehicle_seed: seeds which vehicle slots are occupied.
        vehicle_keep: share of vehicles common to both epochs.
        seed: seeds this epoch's remaining randomness.
        native_gsd_m: the sensor's native pixel size (resampled to the rendered grid), or None
            = the rendered grid.
        flood: share of the ground under flood water (or mud) in this epoch, 0 = none.
        flood_mud: the water has receded and left wet mud.
        flood_seed: seeds the flood's extent.
    """

    after: bool
    sun_azimuth_deg: float
    sun_elevation_deg: float
    view_azimuth_deg: float
    off_nadir_deg: float
    shift_px: tuple[int, int]
    dryness: float
    leaf_off: float
    gains: tuple[float, float, float]
    gamma: float
    saturation: float
    offset: float
    haze: float
    blur_px: float
    noise_std: float
    jpeg_quality: int
    cloud_cover: float
    nodata_fraction: float
    vehicle_seed: int
    vehicle_keep: float
    seed: int
    native_gsd_m: float | None = None
    flood: float = 0.0
    flood_mud: bool = False
    flood_seed: int = 0


@dataclass(frozen=True)
class StaticFields:
    """Textures shared by both epochs of a region, each ``(H, W)`` float32 (zero mean, unit var).

    Attributes:
        landcover: coarse land-cover field (features ~60 m).
        patches: medium field (~15 m).
        fine: fine texture (~2.5 m).
        grain: per-pixel grain.
        speck: small-scale field (~0.8 m) for foliage and rubble.
        w_soil, w_scrub: land-cover weights of bare soil and scrub (grass is the rest), 0..1.
        ground_tex: multiplicative ground texture around 1.
        gsd_m: metres per pixel.
        origin_m: ``(x, y)`` of the canvas's top-left corner in layout metres.
    """

    landcover: np.ndarray
    patches: np.ndarray
    fine: np.ndarray
    grain: np.ndarray
    speck: np.ndarray
    w_soil: np.ndarray
    w_scrub: np.ndarray
    ground_tex: np.ndarray
    gsd_m: float
    origin_m: tuple[float, float]

    @property
    def shape(self) -> tuple[int, int]:
        return self.landcover.shape  # type: ignore[return-value]


def make_static_fields(seed: int, shape: tuple[int, int], gsd_m: float, origin_m: tuple[float, float]) -> StaticFields:
    """Draw the shared textures of a canvas of ``shape`` pixels at ``gsd_m``."""
    rng = np.random.default_rng(seed)
    # low-frequency fields are drawn at a quarter of the resolution and upsampled once combined
    q = (max(shape[0] // 4, 4), max(shape[1] // 4, 4))
    landcover_q = fractal_noise(rng, q, 15.0 / gsd_m, octaves=3)
    patches_q = fractal_noise(rng, q, 3.75 / gsd_m, octaves=3)
    w_soil_q = 1.0 / (1.0 + np.exp((0.8 - landcover_q) * 2.5))
    w_scrub_q = (1.0 - w_soil_q) * (0.7 / (1.0 + np.exp((0.4 - patches_q) * 2.0)))
    landcover = upsample(landcover_q, shape)
    patches = upsample(patches_q, shape)
    w_soil = upsample(w_soil_q.astype(np.float32), shape)
    w_scrub = upsample(w_scrub_q.astype(np.float32), shape)
    fine = fractal_noise(rng, shape, 2.5 / gsd_m, octaves=2)
    grain = pixel_noise(rng, shape)
    speck = smooth_noise(rng, shape, max(0.8 / gsd_m, 1.0))
    ground_tex = patches * 0.08
    ground_tex += 1.0
    ground_tex += 0.09 * fine
    ground_tex += 0.05 * grain
    return StaticFields(
        landcover=landcover, patches=patches, fine=fine, grain=grain, speck=speck,
        w_soil=w_soil.astype(np.float32), w_scrub=w_scrub.astype(np.float32), ground_tex=ground_tex.astype(np.float32),
        gsd_m=gsd_m, origin_m=origin_m,
    )


class _Canvas:
    """Layer images at canvas resolution and a metres -> pixel mapping."""

    def __init__(self, fields: StaticFields) -> None:
        self.h, self.w = fields.shape
        self.g = fields.gsd_m
        self.ox, self.oy = fields.origin_m

    def px(self, poly: np.ndarray) -> list[float]:
        """Canvas pixel coordinates of points ``(K, 2)`` metres, flat ``[x0, y0, x1, y1, ...]``."""
        p = (np.asarray(poly, dtype=float) - (self.ox, self.oy)) / self.g
        return p.ravel().tolist()

    def mask(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        img = Image.new("L", (self.w, self.h), 0)
        return img, ImageDraw.Draw(img)

    def rgb(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        img = Image.new("RGB", (self.w, self.h), (0, 0, 0))
        return img, ImageDraw.Draw(img)

    def ellipse(self, draw: ImageDraw.ImageDraw, x: float, y: float, r: float, fill: object) -> None:
        cx, cy = (x - self.ox) / self.g, (y - self.oy) / self.g
        rp = max(r / self.g, 0.5)
        draw.ellipse([cx - rp, cy - rp, cx + rp, cy + rp], fill=fill)


def _ellipse_boxes(cv: _Canvas, x: np.ndarray, y: np.ndarray, r: np.ndarray) -> list[list[float]]:
    """PIL bounding boxes ``[x0, y0, x1, y1]`` of circles (metres ``(N,)`` arrays) on the canvas."""
    cx = (x - cv.ox) / cv.g
    cy = (y - cv.oy) / cv.g
    rp = np.maximum(r / cv.g, 0.5)
    return np.stack([cx - rp, cy - rp, cx + rp, cy + rp], axis=1).tolist()


def _c8(rgb: np.ndarray | tuple[float, ...]) -> tuple[int, int, int]:
    a = np.clip(np.asarray(rgb, dtype=float) * 255.0 + 0.5, 0, 255).astype(int)
    return int(a[0]), int(a[1]), int(a[2])


def _as_float(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32) / 255.0


def _blur(img: Image.Image, radius_px: float) -> Image.Image:
    """Gaussian blur of a layer, computed only over the bounding box of what is drawn."""
    if radius_px <= 0.3:
        return img
    box = img.getbbox()
    if box is None:
        return img
    m = int(math.ceil(radius_px * 3)) + 1
    x0, y0 = max(box[0] - m, 0), max(box[1] - m, 0)
    x1, y1 = min(box[2] + m, img.width), min(box[3] + m, img.height)
    if (x1 - x0) * (y1 - y0) > 0.6 * img.width * img.height:
        return img.filter(ImageFilter.GaussianBlur(radius_px))
    out = img.copy()
    out.paste(img.crop((x0, y0, x1, y1)).filter(ImageFilter.GaussianBlur(radius_px)), (x0, y0))
    return out


def _sun_vectors(style: EpochStyle) -> tuple[np.ndarray, float, float]:
    az = math.radians(style.sun_azimuth_deg)
    el = math.radians(style.sun_elevation_deg)
    to_sun = np.array([math.sin(az), -math.cos(az)])  # x east, y south
    return to_sun, el, 1.0 / math.tan(el)


def _lean(style: EpochStyle) -> np.ndarray:
    vaz = math.radians(style.view_azimuth_deg)
    return -np.array([math.sin(vaz), -math.cos(vaz)]) * math.tan(math.radians(style.off_nadir_deg))


def _facets(part: np.ndarray, roof: str) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Roof facets of a rectangular part: ``(polygon, outward horizontal normal or None)``."""
    p0, p1, p2, p3 = part[0], part[1], part[2], part[3]
    e1, e2 = p1 - p0, p3 - p0
    if np.hypot(*e1) < np.hypot(*e2):
        p0, p1, p2, p3 = part[1], part[2], part[3], part[0]
        e1, e2 = p1 - p0, p3 - p0
    l1, l2 = float(np.hypot(*e1)), float(np.hypot(*e2))
    u1, u2 = e1 / max(l1, 1e-9), e2 / max(l2, 1e-9)
    if roof == "flat" or len(part) != 4:
        return [(part, None)]
    if roof == "gable":
        m0, m1 = p0 + e2 / 2, p1 + e2 / 2
        return [(np.stack([p0, p1, m1, m0]), -u2), (np.stack([m0, m1, p2, p3]), u2)]
    inset = min(l2 / 2, l1 / 2)
    r0 = p0 + e2 / 2 + u1 * inset
    r1 = p1 + e2 / 2 - u1 * inset
    return [
        (np.stack([p0, p1, r1, r0]), -u2),
        (np.stack([p3, p2, r1, r0]), u2),
        (np.stack([p0, p3, r0]), -u1),
        (np.stack([p1, p2, r1]), u1),
    ]


def _roof_shade(normal: np.ndarray | None, to_sun: np.ndarray, el: float, pitch: float = math.radians(28)) -> float:
    sun3 = np.array([to_sun[0] * math.cos(el), to_sun[1] * math.cos(el), math.sin(el)])
    if normal is None:
        n3 = np.array([0.0, 0.0, 1.0])
    else:
        n3 = np.array([normal[0] * math.sin(pitch), normal[1] * math.sin(pitch), math.cos(pitch)])
    lam = max(float(n3 @ sun3), 0.0) / max(math.sin(el), 0.35)
    return 0.42 + 0.58 * min(lam, 1.5)


def _outward(part: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Edges ``(a, b, outward unit normal)`` of a convex polygon ``(K, 2)``."""
    pts = part.tolist()
    k = len(pts)
    cx = sum(p[0] for p in pts) / k
    cy = sum(p[1] for p in pts) / k
    out = []
    for i in range(k):
        (ax, ay), (bx, by) = pts[i], pts[(i + 1) % k]
        dx, dy = bx - ax, by - ay
        length = math.hypot(dx, dy) or 1e-9
        nx, ny = dy / length, -dx / length
        if nx * ((ax + bx) / 2 - cx) + ny * ((ay + by) / 2 - cy) < 0:
            nx, ny = -nx, -ny
        out.append((part[i], part[(i + 1) % k], np.array([nx, ny])))
    return out


def _swept(draw: ImageDraw.ImageDraw, cv: _Canvas, part: np.ndarray, v: np.ndarray, fill: object) -> None:
    """Fill the region swept by ``part`` translated along ``v`` (a shadow or a lean)."""
    draw.polygon(cv.px(part), fill=fill)
    draw.polygon(cv.px(part + v), fill=fill)
    for a, b, _ in _outward(part):
        draw.polygon(cv.px(np.stack([a, b, b + v, a + v])), fill=fill)


def _zone_field(lay: Layout, style_index: int, fields: StaticFields, seed: int) -> np.ndarray | None:
    """Soft 0..1 mask ``(H, W)`` of the ground affected by clusters of one style, or None."""
    centres = [c for c in lay.damage_centres if int(c[3]) == style_index]
    if not centres:
        return None
    h, w = fields.shape
    g = fields.gsd_m
    cell = 4.0
    ch, cw = max(int(h * g / cell), 2), max(int(w * g / cell), 2)
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
    xx = fields.origin_m[0] + (xx + 0.5) * (w * g / cw)
    yy = fields.origin_m[1] + (yy + 0.5) * (h * g / ch)
    inten = np.zeros((ch, cw), dtype=np.float32)
    for x, y, r, _s in centres:
        inten = np.maximum(inten, np.exp(-(((xx - x) ** 2 + (yy - y) ** 2) / (1.3 * r) ** 2)))
    rng = np.random.default_rng(seed)
    n = fractal_noise(rng, (ch, cw), 25.0, octaves=3)
    soft = np.clip((inten * (0.75 + 0.35 * n) - 0.3) * 3.0, 0, 1)
    if not soft.any():
        return None
    return np.clip(upsample(soft, (h, w)), 0, 1)


def _blend(flat: np.ndarray, idx: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """``flat[idx] = flat[idx] * (1 - alpha) + colour * alpha`` for selected pixels.

    Args:
        flat: image of shape ``(H * W, 3)``, modified in place.
        idx: flat pixel indices ``(K,)``.
        alpha: ``(K,)`` or ``(K, 1)`` weights in ``[0, 1]``.
        colour: ``(K, 3)`` or ``(3,)``.
    """
    a = alpha.reshape(-1, 1) if np.ndim(alpha) else alpha
    sel = flat[idx]
    sel += (colour - sel) * a
    flat[idx] = sel


def _nz(mask_img: Image.Image, threshold: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices where an 'L' layer exceeds ``threshold``, and its values there (0..1)."""
    arr = np.asarray(mask_img).reshape(-1)
    idx = np.flatnonzero(arr > threshold)
    return idx, arr[idx].astype(np.float32) / 255.0


class _EpochDraw:
    """What the drawing steps of :func:`render_epoch` share: the canvas, the sun and view, the
    image being drawn, and what earlier steps leave for later ones (damage zones, standing
    buildings, tree states)."""

    def __init__(self, lay: Layout, fields: StaticFields, style: EpochStyle) -> None:
        self.lay, self.fields, self.style = lay, fields, style
        self.rng = np.random.default_rng(style.seed)
        self.cv = _Canvas(fields)
        self.g = fields.gsd_m
        self.h, self.w = fields.shape
        self.to_sun, self.el, self.cot_el = _sun_vectors(style)
        self.shadow_dir = -self.to_sun * self.cot_el  # metres of shadow per metre of height
        self.lean = _lean(style)
        self.fine_f = fields.fine.reshape(-1)
        self.grain_f = fields.grain.reshape(-1)
        self.speck_f = fields.speck.reshape(-1)
        self.patches_f = fields.patches.reshape(-1)
        self.img = np.empty((0, 0, 3), dtype=np.float32)
        self.flat = self.img.reshape(-1, 3)
        self.burn: np.ndarray | None = None
        self.wind: np.ndarray | None = None
        self.blast: np.ndarray | None = None
        self.fence_shadow: list[tuple[np.ndarray, float]] = []
        self.standing: list[tuple[Building, float]] = []
        self.damage_layers: tuple | None = None
        self.trees: dict[str, np.ndarray] = {}
        self.nt = 0
        self.tree_state = np.zeros(0, dtype=np.int8)
        self.tree_scale = np.zeros(0, dtype=np.float32)
        self.leaf_off = np.zeros(0, dtype=bool)
        self.radii = np.zeros(0)


def render_epoch(lay: Layout, fields: StaticFields, style: EpochStyle) -> np.ndarray:
    """Draw a region for one epoch, before sensor effects.

    Layers are composited only where they cover the canvas (flat pixel indices), so cost
    follows what is drawn rather than the canvas size, apart from the ground itself.

    Args:
        lay: the region's layout (damage already assigned).
        fields: shared textures; their shape and origin define the canvas.
        style: the epoch's sun, view, season and whether damage is drawn.

    Returns:
        float32 array of shape ``(H, W, 3)``, reflectance in ``[0, 1]``.
    """
    e = _EpochDraw(lay, fields, style)
    _draw_ground(e)
    _draw_lawns(e)
    _draw_burn(e)
    _draw_paved(e)
    _draw_standing(e)
    _draw_damage_layers(e)
    _draw_flood(e)
    _draw_shadows(e)
    _draw_roofs(e)
    _draw_rubble(e)
    _draw_trees(e)
    _draw_vehicles(e)
    return np.clip(e.img, 0.0, 1.0, out=e.img)


def _draw_ground(e: _EpochDraw) -> None:
    """Bare ground: soil, scrub and grass weighted by the land-cover fields."""
    lay, fields, style, h, w = e.lay, e.fields, e.style, e.h, e.w
    d = style.dryness
    grass = (0.26 + 0.26 * d, 0.33 + 0.12 * d, 0.17 + 0.15 * d)
    soil = (0.52, 0.45, 0.36)
    scrub = (0.22 + 0.12 * d, 0.26 + 0.05 * d, 0.16 + 0.08 * d)
    if lay.urban:  # dusty, trodden ground between buildings
        dust = (0.56, 0.51, 0.43)
        grass = tuple(0.35 * gc + 0.65 * dc for gc, dc in zip(grass, dust))
        scrub = tuple(0.5 * sc + 0.5 * dc for sc, dc in zip(scrub, dust))
    img = np.empty((h, w, 3), dtype=np.float32)
    for c in range(3):
        ch = img[..., c]
        np.multiply(fields.w_soil, soil[c] - grass[c], out=ch)
        ch += fields.w_scrub * (scrub[c] - grass[c])
        ch += grass[c]
        ch *= fields.ground_tex
    flat = img.reshape(-1, 3)
    e.img = img
    e.flat = flat


def _draw_lawns(e: _EpochDraw) -> None:
    """Lawns around houses: greener and smoother than open ground."""
    lay, cv, g, fine_f, patches_f, flat = e.lay, e.cv, e.g, e.fine_f, e.patches_f, e.flat
    d = e.style.dryness
    if lay.lawns:
        lawn, ldraw = cv.mask()
        for poly in lay.lawns:
            ldraw.polygon(cv.px(poly), fill=255)
        idx, lv = _nz(_blur(lawn, 1.0 / g), 8)
        wet = 1.0 - 0.6 * d  # watered lawns stay greener in a dry season
        lawn_col = np.array([0.24 + 0.14 * (1 - wet), 0.34 + 0.02 * (1 - wet), 0.16 + 0.08 * (1 - wet)], dtype=np.float32)
        lawn_col = lawn_col * (1.0 + 0.06 * patches_f[idx] + 0.05 * fine_f[idx])[:, None]
        _blend(flat, idx, lv * 0.75, lawn_col)
        del lawn


def _draw_burn(e: _EpochDraw) -> None:
    """After epoch: the damage-zone fields of fire, wind and blast clusters; burnt ground."""
    lay, fields, style, fine_f, speck_f, patches_f, flat = e.lay, e.fields, e.style, e.fine_f, e.speck_f, e.patches_f, e.flat
    burn = wind = blast = None
    if style.after:
        burn = _zone_field(lay, 0, fields, lay.burn_field_seed)
        wind = _zone_field(lay, 1, fields, lay.burn_field_seed + 1)
        blast = _zone_field(lay, 2, fields, lay.burn_field_seed + 2)
        quake = _zone_field(lay, 3, fields, lay.burn_field_seed + 3)
        strike = _zone_field(lay, 4, fields, lay.burn_field_seed + 4)
        if quake is not None or strike is not None:
            # grey-beige dust on the ground of collapse and strike zones (roofs are drawn later)
            dust = (0.0 if quake is None else quake * 0.3) + (0.0 if strike is None else strike * 0.2)
            df = dust.reshape(-1)
            idx = np.flatnonzero(df > 0.01)
            _blend(flat, idx, df[idx], np.array([0.70, 0.68, 0.63], dtype=np.float32))
        if burn is not None:
            bf = burn.reshape(-1)
            idx = np.flatnonzero(bf > 0.01)
            t = np.clip(speck_f[idx] * 0.3 + 0.2, 0, 1)[:, None] * 0.5
            burnt = np.array([0.40, 0.37, 0.33], dtype=np.float32) * (1.0 + 0.18 * patches_f[idx] + 0.12 * fine_f[idx])[:, None]
            burnt += (np.array([0.58, 0.56, 0.52], dtype=np.float32) - burnt) * t
            _blend(flat, idx, bf[idx] * 0.9, burnt)
    e.burn = burn
    e.wind = wind
    e.blast = blast


def _draw_paved(e: _EpochDraw) -> None:
    """Paved surfaces, yards, pools, cleared lots, fences and hedges."""
    lay, style, cv, g, fine_f, grain_f, flat, burn = e.lay, e.style, e.cv, e.g, e.fine_f, e.grain_f, e.flat, e.burn
    pav, pdraw = cv.rgb()
    pmask, pmdraw = cv.mask()
    asphalt_main = _c8((0.37, 0.37, 0.37))
    asphalt = _c8((0.43, 0.43, 0.42))
    concrete = _c8((0.60, 0.58, 0.55))
    for c in lay.compounds:
        yard = {"paved": concrete, "sports": _c8((0.30, 0.42, 0.20)), "bare": _c8((0.58, 0.50, 0.40)), "grass": _c8((0.30, 0.40, 0.22))}[c.yard]
        pdraw.polygon(cv.px(c.polygon), fill=yard)
        pmdraw.polygon(cv.px(c.polygon), fill=255)
        if c.yard == "sports":
            ctr = c.polygon.mean(axis=0)
            edge = c.polygon[1] - c.polygon[0]
            ang = math.atan2(edge[1], edge[0])
            track = rectangle(ctr[0], ctr[1], float(np.hypot(*edge)) * 0.45, float(np.hypot(*(c.polygon[3] - c.polygon[0]))) * 0.35, ang)
            pdraw.polygon(cv.px(track), fill=_c8((0.58, 0.30, 0.24)))
            pdraw.polygon(cv.px(track.mean(axis=0) + (track - track.mean(axis=0)) * 0.8), fill=_c8((0.28, 0.45, 0.20)))
    for road in lay.roads:
        width = max(int(round(road.width_m / g)), 1)
        pdraw.line(cv.px(road.line), fill=asphalt_main if road.main else asphalt, width=width, joint="curve")
        pmdraw.line(cv.px(road.line), fill=255, width=width, joint="curve")
        if road.main:
            pdraw.line(cv.px(road.line), fill=_c8((0.72, 0.70, 0.58)), width=max(int(round(0.2 / g)), 1))
    for line, wd in lay.driveways:
        pdraw.line(cv.px(line), fill=concrete, width=max(int(round(wd / g)), 1))
        pmdraw.line(cv.px(line), fill=255, width=max(int(round(wd / g)), 1))
    for lot in lay.parking:
        pdraw.polygon(cv.px(lot), fill=_c8((0.36, 0.36, 0.37)))
        pmdraw.polygon(cv.px(lot), fill=255)
    for pool in lay.pools:
        pdraw.polygon(cv.px(pool), fill=_c8((0.30, 0.62, 0.70)))
        pmdraw.polygon(cv.px(pool), fill=255)
    if style.after:
        for lot in lay.cleared:
            pdraw.polygon(cv.px(lot), fill=_c8((0.58, 0.49, 0.38)))
            pmdraw.polygon(cv.px(lot), fill=255)
    fence_shadow: list[tuple[np.ndarray, float]] = []
    for seg, kind in lay.fences:
        if kind == "hedge":
            wpx, col, hgt_m = max(int(round(1.2 / g)), 1), _c8((0.15, 0.22, 0.10)), 1.5
        else:
            wpx, col, hgt_m = max(int(round(0.25 / g)), 1), _c8((0.62, 0.58, 0.52)), 1.6
        pdraw.line(cv.px(seg), fill=col, width=wpx)
        pmdraw.line(cv.px(seg), fill=255, width=wpx)
        fence_shadow.append((seg, hgt_m))
    idx, _ = _nz(pmask)
    pav_flat = np.asarray(pav).reshape(-1, 3)
    tex = (1.0 + 0.05 * fine_f[idx] + 0.05 * grain_f[idx])[:, None]
    if burn is not None:
        tex = tex * (1.0 - 0.35 * burn.reshape(-1)[idx])[:, None]
    flat[idx] = pav_flat[idx].astype(np.float32) * (tex / 255.0)
    del pav, pmask, pav_flat
    e.fence_shadow = fence_shadow


def _draw_standing(e: _EpochDraw) -> None:
    """Which buildings stand in this epoch, and how tall."""
    lay, style = e.lay, e.style
    standing: list[tuple[Building, float]] = []
    for b in lay.buildings:
        if b.after_only and not style.after:
            continue
        if style.after and b.demolition is not None:
            continue
        if style.after and b.damage == "destroyed":
            if b.style == "collapse" and _collapse_variant(b)[0] == "pancake":
                standing.append((b, b.height_m * _collapse_variant(b)[1]))  # storeys pancaked, the roof slab on top
            elif b.style == "strike":
                down, _holes = _strike_plan(b)
                if len(down) < len(b.parts):  # one wing down (or gutted under a holed roof), the rest stands
                    rest = copy.copy(b)
                    rest.parts = [p for i, p in enumerate(b.parts) if i not in down]
                    standing.append((rest, b.height_m))
            continue
        hgt = b.height_m * (0.6 if style.after and b.damage == "major-damage" else 1.0)
        standing.append((b, hgt))
    e.standing = standing


def _draw_damage_layers(e: _EpochDraw) -> None:
    """Damage layers (after epoch): scorch now, rubble and remnants kept for after the roofs."""
    lay, style, cv, g, flat = e.lay, e.style, e.cv, e.g, e.flat
    damage_layers = None
    if style.after:
        rubble, rdraw = cv.mask()
        rbase, rbdraw = cv.rgb()
        scorch, sdraw = cv.mask()
        rem, remdraw = cv.rgb()
        remmask, remmdraw = cv.mask()
        craters: list[tuple[float, float, float]] = []
        for b in lay.buildings:
            if b.demolition == "debris":
                _draw_demolition(b, np.random.default_rng(b.damage_seed + 5), cv, rdraw, rbdraw)
            if b.damage == "no-damage" or b.after_only:
                continue
            layers = (rdraw, rbdraw, sdraw, remdraw, remmdraw)
            if b.style in ("collapse", "strike"):
                _draw_structural_damage(b, np.random.default_rng(b.damage_seed), cv, e.lean, layers, craters)
            else:
                _draw_damage(b, np.random.default_rng(b.damage_seed), cv, *layers, craters)
        idx, sc = _nz(_blur(scorch, 3.0 / g), 2)
        if idx.size:
            sel = flat[idx]
            charred = sel.mean(axis=1, keepdims=True) * 0.45 + 0.03
            _blend(flat, idx, sc * 0.85, charred)
        damage_layers = (_blur(rubble, 0.6 / g), rbase, rem, remmask, craters)
        del scorch
    e.damage_layers = damage_layers


def _draw_shadows(e: _EpochDraw) -> None:
    """Shadows of buildings, walls, fences and trees; the trees' state in this epoch."""
    lay, fields, style, rng, cv, g, h, w, cot_el, shadow_dir, flat, burn, wind, fence_shadow, standing = e.lay, e.fields, e.style, e.rng, e.cv, e.g, e.h, e.w, e.cot_el, e.shadow_dir, e.flat, e.burn, e.wind, e.fence_shadow, e.standing
    shadow, shdraw = cv.mask()
    for b, hgt in standing:
        for part in b.parts:
            _swept(shdraw, cv, part, shadow_dir * hgt, 255)
    for seg, hgt_m in fence_shadow:
        shdraw.line(cv.px(seg + shadow_dir * hgt_m * 0.6), fill=200, width=max(int(round(hgt_m * cot_el * 0.5 / g)), 1))
    for c in lay.compounds:
        if c.walled:
            for a, bb, _ in _outward(c.polygon):
                shdraw.line(cv.px(np.stack([a, bb]) + shadow_dir * 2.0), fill=255, width=max(int(round(0.6 / g)), 1))
    trees = lay.trees
    nt = trees["x"].size
    tree_scale = np.ones(nt, dtype=np.float32)
    tree_state = np.zeros(nt, dtype=np.int8)  # 0 healthy, 1 burnt, 2 stripped
    if style.after and nt:
        tr = np.clip(((trees["y"] - fields.origin_m[1]) / g).astype(int), 0, h - 1)
        tc = np.clip(((trees["x"] - fields.origin_m[0]) / g).astype(int), 0, w - 1)
        if burn is not None:
            burnt_t = burn[tr, tc] > rng.uniform(0.2, 0.6, nt)
            tree_state[burnt_t] = 1
            tree_scale[burnt_t] = rng.uniform(0.35, 0.75, int(burnt_t.sum()))
        if wind is not None:
            strip_t = (wind[tr, tc] > rng.uniform(0.2, 0.6, nt)) & (tree_state == 0)
            tree_state[strip_t] = 2
            tree_scale[strip_t] = rng.uniform(0.2, 0.6, int(strip_t.sum()))
    leaf_off = trees["deciduous"] & (rng.random(nt) < style.leaf_off) if nt else np.zeros(0, bool)
    radii = trees["radius"] * tree_scale * np.where(leaf_off, 0.6, 1.0) if nt else np.zeros(0)
    # a canopy's shadow: swept from under the crown to the crown's shadow (boxes computed at once)
    shadow_fill = np.where(leaf_off, 140, 255).tolist() if nt else []
    for frac in (0.3, 0.65, 1.0):
        if not nt:
            break
        off = trees["height"][:, None] * (0.75 * frac) * shadow_dir[None, :]
        boxes = _ellipse_boxes(cv, trees["x"] + off[:, 0], trees["y"] + off[:, 1], radii * (0.8 + 0.15 * frac))
        for box, fill in zip(boxes, shadow_fill):
            shdraw.ellipse(box, fill=fill)
    idx, sh = _nz(_blur(shadow, 0.35 / g))
    shade = 1.0 - sh[:, None] * (1.0 - np.array([0.47, 0.49, 0.57], dtype=np.float32))
    flat[idx] *= shade
    del shadow
    e.trees = trees
    e.nt = nt
    e.tree_state = tree_state
    e.tree_scale = tree_scale
    e.leaf_off = leaf_off
    e.radii = radii


def _draw_roofs(e: _EpochDraw) -> None:
    """Walls seen off-nadir and roofs (leaning with height), roof units and roof damage marks."""
    style, cv, g, to_sun, el, shadow_dir, lean, fine_f, grain_f, flat, standing = e.style, e.cv, e.g, e.to_sun, e.el, e.shadow_dir, e.lean, e.fine_f, e.grain_f, e.flat, e.standing
    lay = e.lay
    roofs, rfdraw = cv.rgb()
    roofmask, rmdraw = cv.mask()
    standing.sort(key=lambda bh: bh[0].centroid[1])
    wall_base = np.array([0.60, 0.57, 0.53])
    for b, hgt in standing:
        v = lean * hgt
        scorched = style.after and b.style == "strike" and b.damage in ("destroyed", "major-damage")
        storey_px = float(np.hypot(*(lean * STOREY_M))) / g if lay.concrete else 0.0
        for part in b.parts:
            for a, bb, n in _outward(part):
                if float(n @ v) >= -1e-6:
                    continue
                quad = np.stack([a, bb, bb + v, a + v])
                ws = 0.35 + 0.55 * max(float(n @ to_sun) * math.cos(el), 0.0)
                if scorched:
                    ws *= 0.4
                rfdraw.polygon(cv.px(quad), fill=_c8(wall_base * ws))
                rmdraw.polygon(cv.px(quad), fill=255)
                if storey_px > 1.5:  # window bands of the storeys on a facade seen off-nadir
                    for k in range(1, int(hgt / STOREY_M) + 1):
                        t = (k - 0.5) * STOREY_M / hgt
                        rfdraw.line(cv.px(np.stack([a + v * t, bb + v * t])), fill=_c8(wall_base * ws * 0.55), width=1)
        for part in b.parts:
            for facet, normal in _facets(part + v, b.roof):
                rfdraw.polygon(cv.px(facet), fill=_c8(b.roof_rgb * _roof_shade(normal, to_sun, el)))
                rmdraw.polygon(cv.px(facet), fill=255)
            if b.roof == "flat":
                rfdraw.polygon(cv.px(part + v), outline=_c8(b.roof_rgb * 0.8), width=max(int(round(0.4 / g)), 1))
            elif b.roof == "gable":
                f0 = _facets(part + v, "gable")[0][0]  # its 3rd and 4th corners are the ridge
                rfdraw.line(cv.px(f0[2:4]), fill=_c8(np.clip(b.roof_rgb * 1.15, 0, 1)), width=max(int(round(0.3 / g)), 1))
        if b.roof == "flat" and b.kind in ("hospital", "school", "commercial", "apartment"):
            urng = np.random.default_rng(b.damage_seed + 7)
            p = b.parts[0] + v
            for _ in range(int(urng.integers(1, 6))):
                t = urng.uniform(0.2, 0.8, 2)
                cxy = p[0] + (p[1] - p[0]) * t[0] + (p[3] - p[0]) * t[1]
                unit = rectangle(cxy[0], cxy[1], urng.uniform(1.5, 4), urng.uniform(1.2, 3), b.angle)
                _swept(rfdraw, cv, unit, shadow_dir * 1.0, _c8(b.roof_rgb * 0.55))
                rfdraw.polygon(cv.px(unit), fill=_c8(np.clip(b.roof_rgb * 1.2 + 0.05, 0, 1)))
        if b.rooftop == "tanks":
            _draw_rooftop_tanks(b, cv, rfdraw, v, shadow_dir)
        elif b.rooftop == "dome":
            _draw_dome(b, cv, rfdraw, v, to_sun)
        if style.after and b.style == "strike" and b.damage in ("destroyed", "major-damage"):
            _draw_roof_holes(b, cv, rfdraw, v)
        elif style.after and b.style == "collapse" and b.damage == "destroyed":
            _draw_pancake_cracks(b, cv, rfdraw, v)
        elif style.after and b.damage in ("minor-damage", "major-damage"):
            _draw_roof_marks(b, np.random.default_rng(b.damage_seed + 11), cv, rfdraw, v)
    idx, _ = _nz(roofmask)
    roof_flat = np.asarray(roofs).reshape(-1, 3)
    flat[idx] = roof_flat[idx].astype(np.float32) * ((1.0 + 0.04 * grain_f[idx] + 0.05 * fine_f[idx]) / 255.0)[:, None]
    del roofs, roofmask, roof_flat


def _draw_rubble(e: _EpochDraw) -> None:
    """Rubble, remnants, craters, dust and strewn debris."""
    rng, cv, g, fine_f, grain_f, speck_f, flat, wind, blast, damage_layers = e.rng, e.cv, e.g, e.fine_f, e.grain_f, e.speck_f, e.flat, e.wind, e.blast, e.damage_layers
    if damage_layers is not None:
        rubble_b, rbase, rem, remmask, craters = damage_layers
        idx, r = _nz(rubble_b, 4)
        if idx.size:
            sp, fi, gr = speck_f[idx], fine_f[idx], grain_f[idx]
            alpha = np.clip(r * 1.35 + 0.35 * fi - 0.3, 0, 1)
            t = np.clip(0.62 + 0.3 * fi + 0.18 * sp, 0, 1)[:, None]
            ash = np.array([0.72, 0.69, 0.64], dtype=np.float32)
            char = np.array([0.30, 0.28, 0.26], dtype=np.float32)
            wood = np.array([0.50, 0.40, 0.30], dtype=np.float32)
            base = char + (ash - char) * t
            roofcol = np.asarray(rbase).reshape(-1, 3)[idx].astype(np.float32) / 255.0
            frag = np.clip(0.5 + 0.6 * sp - 0.3 * fi, 0, 1)[:, None]
            debris = wood + (roofcol - wood) * frag
            w_debris = np.clip(roofcol.sum(axis=1, keepdims=True) * 3.0, 0, 1) * 0.55  # roof colour drawn = wind/blast
            col = base + (debris - base) * w_debris
            col *= (1.0 + 0.12 * gr + 0.08 * sp)[:, None]
            dark = sp > 1.6  # charred beams, holes
            col[dark] *= 0.45
            _blend(flat, idx, alpha, col)
        idx, _ = _nz(remmask, 127)
        if idx.size:
            flat[idx] = np.asarray(rem).reshape(-1, 3)[idx].astype(np.float32) / 255.0
        if craters:
            cm, cdraw = cv.mask()
            for x, y, rad in craters:
                cv.ellipse(cdraw, x, y, rad * 1.7, 120)
            for x, y, rad in craters:
                cv.ellipse(cdraw, x, y, rad, 255)
            idx, c = _nz(_blur(cm, 0.5 / g), 2)
            ring = np.clip(c * 2.0, 0, 1) * (c < 0.7)
            hole = np.clip((c - 0.6) * 3.0, 0, 1)
            ring *= np.clip(0.6 + 0.5 * speck_f[idx], 0, 1)  # uneven ejecta
            _blend(flat, idx, ring * 0.45, np.array([0.62, 0.60, 0.56], dtype=np.float32))
            _blend(flat, idx, hole, np.array([0.16, 0.15, 0.14], dtype=np.float32) * (1 + 0.3 * speck_f[idx])[:, None])
        if blast is not None:
            bf = blast.reshape(-1)
            idx = np.flatnonzero(bf > 0.01)
            _blend(flat, idx, bf[idx] * 0.25, np.array([0.62, 0.61, 0.58], dtype=np.float32))
        if wind is not None:
            wf = wind.reshape(-1)
            idx = np.flatnonzero(wf > 0.01)
            hit = (np.abs(grain_f[idx]) > 2.2) & (rng.random(idx.size, dtype=np.float32) < wf[idx] * 0.8)
            pal = np.array([[0.80, 0.78, 0.74], [0.50, 0.40, 0.30], [0.35, 0.35, 0.38], [0.62, 0.34, 0.25]], dtype=np.float32)
            sel = idx[hit]
            flat[sel] = pal[(np.abs(fine_f[sel] * 7).astype(int)) % 4]


def _draw_trees(e: _EpochDraw) -> None:
    """Tree crowns, lit from the sun."""
    style, cv, g, w, to_sun, fine_f, grain_f, speck_f, flat, trees, nt, tree_state, leaf_off, radii = e.style, e.cv, e.g, e.w, e.to_sun, e.fine_f, e.grain_f, e.speck_f, e.flat, e.trees, e.nt, e.tree_state, e.leaf_off, e.radii
    canopy, cdraw = cv.mask()
    tcol, tdraw = cv.rgb()
    leafy = np.array([0.19, 0.27, 0.12])
    bare = np.array([0.33, 0.29, 0.24])
    dry_tint = np.array([0.10, 0.06, 0.04]) * style.dryness * 0.6
    if nt:
        base = np.where(
            (tree_state == 1)[:, None], np.array([0.20, 0.17, 0.14]),
            np.where((tree_state == 2)[:, None], np.array([0.30, 0.27, 0.20]),
                     np.where(leaf_off[:, None], bare, leafy + dry_tint)),
        )
        cols = np.clip(base * (1.0 + 0.22 * trees["tone"])[:, None] * 255.0 + 0.5, 0, 255).astype(int)
        boxes = _ellipse_boxes(cv, trees["x"], trees["y"], radii)
        fills = np.where(leaf_off, 150, 255).tolist()
        for box, fill, col in zip(boxes, fills, map(tuple, cols.tolist())):
            cdraw.ellipse(box, fill=fill)
            tdraw.ellipse(box, fill=col)
    idx, cm = _nz(canopy)
    if idx.size:
        hgt = np.asarray(_blur(canopy, 1.0 / g)).reshape(-1).astype(np.float32) / 255.0
        n = hgt.size
        gx = hgt[np.minimum(idx + 1, n - 1)] - hgt[np.maximum(idx - 1, 0)]
        gy = hgt[np.minimum(idx + w, n - 1)] - hgt[np.maximum(idx - w, 0)]
        lit = (gx * to_sun[0] + gy * to_sun[1]) * (1.2 / max(g, 0.25))
        sp = speck_f[idx]
        leaf = np.clip(0.78 + 0.45 * lit + 0.22 * sp + 0.08 * grain_f[idx], 0.35, 1.5)
        tree_col = np.asarray(tcol).reshape(-1, 3)[idx].astype(np.float32) * (leaf / 255.0)[:, None]
        # lobed, irregular crowns: the blurred crown thresholded against texture
        a = np.clip((hgt[idx] - 0.45 + 0.3 * fine_f[idx] + 0.15 * sp) * 4.0, 0, 1) * cm
        _blend(flat, idx, a, tree_col)
    del canopy, tcol


def _draw_vehicles(e: _EpochDraw) -> None:
    """Vehicles: slots occupied in both epochs or only in this one."""
    lay, style, cv, shadow_dir, flat = e.lay, e.style, e.cv, e.shadow_dir, e.flat
    slots = lay.vehicle_slots
    if len(slots):
        vr = np.random.default_rng(style.vehicle_seed)
        common = np.random.default_rng(lay.burn_field_seed + 5)
        occupied_common = common.random(len(slots)) < 0.35
        colour_idx = common.integers(0, len(VEHICLE_COLOURS), len(slots))
        keep = vr.random(len(slots)) < style.vehicle_keep
        own = vr.random(len(slots)) < 0.35
        present = np.where(keep, occupied_common, own)
        vcol, vdraw = cv.rgb()
        vmask, vmdraw = cv.mask()
        for k in np.flatnonzero(present):
            x, y, ang = slots[k]
            car = rectangle(x, y, 4.5, 1.9, ang)
            vmdraw.polygon(cv.px(car + shadow_dir * 0.8), fill=90)
        for k in np.flatnonzero(present):
            x, y, ang = slots[k]
            car = rectangle(x, y, 4.5, 1.9, ang)
            c = VEHICLE_COLOURS[colour_idx[k] if keep[k] else vr.integers(len(VEHICLE_COLOURS))]
            vdraw.polygon(cv.px(car), fill=_c8(c))
            vmdraw.polygon(cv.px(car), fill=255)
        idx, vm = _nz(vmask)
        body = vm > 0.5
        flat[idx[~body]] *= 1.0 - vm[~body, None] * 0.55
        flat[idx[body]] = np.asarray(vcol).reshape(-1, 3)[idx[body]].astype(np.float32) / 255.0



def _draw_damage(
    b: Building,
    rng: np.random.Generator,
    cv: _Canvas,
    rdraw: ImageDraw.ImageDraw,
    rbdraw: ImageDraw.ImageDraw,
    sdraw: ImageDraw.ImageDraw,
    remdraw: ImageDraw.ImageDraw,
    remmdraw: ImageDraw.ImageDraw,
    craters: list[tuple[float, float, float]],
) -> None:
    """Rubble, spill, scorch, remnants and craters of one damaged building (after epoch)."""
    style = b.style or "blast"
    cx, cy = b.centroid
    g = cv.g
    roof8 = _c8(b.roof_rgb) if style != "fire" else (0, 0, 0)
    if b.damage == "destroyed":
        spill = {"fire": rng.uniform(0.5, 2.0), "wind": rng.uniform(3.0, 9.0), "blast": rng.uniform(2.0, 6.0)}[style]
        for part in b.parts:
            c = part.mean(axis=0)
            d = part - c
            n = np.linalg.norm(d, axis=1, keepdims=True)
            big = c + d * (n + spill) / np.maximum(n, 1e-6) + rng.normal(0, spill * 0.3, d.shape)
            rdraw.polygon(cv.px(big), fill=115)
            rbdraw.polygon(cv.px(big), fill=roof8)
        for part in b.parts:
            core = part + rng.normal(0, 0.3, part.shape)
            rdraw.polygon(cv.px(core), fill=255)
            rbdraw.polygon(cv.px(core), fill=roof8)
        if style == "wind":
            # torn roof sheets and beams strewn downwind
            wd = rng.uniform(0, 2 * math.pi)
            for _ in range(int(rng.integers(8, 30))):
                dist = rng.exponential(b.size_m * 0.7)
                ang = wd + rng.normal(0, 0.8)
                fx, fy = cx + math.cos(ang) * dist, cy + math.sin(ang) * dist
                frag = rectangle(fx, fy, rng.uniform(0.6, 3.5), rng.uniform(0.4, 1.5), rng.uniform(0, math.pi))
                col = b.roof_rgb if rng.random() < 0.5 else np.array([0.55, 0.45, 0.33]) * rng.uniform(0.7, 1.3)
                remdraw.polygon(cv.px(frag), fill=_c8(col))
                remmdraw.polygon(cv.px(frag), fill=255)
        if style == "fire":
            sdraw.ellipse(
                [(cx - cv.ox) / g - (b.size_m / 2 + rng.uniform(3, 9)) / g, (cy - cv.oy) / g - (b.size_m / 2 + rng.uniform(3, 9)) / g,
                 (cx - cv.ox) / g + (b.size_m / 2 + rng.uniform(3, 9)) / g, (cy - cv.oy) / g + (b.size_m / 2 + rng.uniform(3, 9)) / g],
                fill=int(rng.uniform(120, 230)),
            )
            if rng.random() < 0.4:
                for part in b.parts:
                    remdraw.polygon(cv.px(part), outline=_c8((0.60, 0.58, 0.55)), width=max(int(round(0.4 / g)), 1))
                    remmdraw.polygon(cv.px(part), outline=255, width=max(int(round(0.5 / g)), 1))
            if rng.random() < 0.5:
                p = b.parts[0]
                t = rng.uniform(0.1, 0.9)
                q = p[0] + (p[1] - p[0]) * t
                ch = rectangle(q[0], q[1], 1.6, 1.2, b.angle)
                remdraw.polygon(cv.px(ch), fill=_c8((0.45, 0.42, 0.40)))
                remmdraw.polygon(cv.px(ch), fill=255)
        if style == "blast":
            if rng.random() < 0.6:
                # standing wall stubs along some edges
                for a, bb, _ in _outward(b.parts[0]):
                    if rng.random() < 0.4:
                        remdraw.line(cv.px(np.stack([a, bb])), fill=_c8((0.66, 0.64, 0.60)), width=max(int(round(0.5 / g)), 1))
                        remmdraw.line(cv.px(np.stack([a, bb])), fill=255, width=max(int(round(0.5 / g)), 1))
            if rng.random() < 0.45:
                off = rng.normal(0, b.size_m * 0.3, 2)
                craters.append((cx + off[0], cy + off[1], rng.uniform(2.0, 5.5)))
    elif b.damage == "major-damage":
        # a collapsed section: part of one rectangle becomes rubble (drawn after the roof)
        part = b.parts[int(rng.integers(len(b.parts)))]
        t0 = rng.uniform(0.0, 0.5)
        t1 = t0 + rng.uniform(0.3, 0.55)
        e1, e2 = part[1] - part[0], part[3] - part[0]
        s0 = rng.uniform(0.0, 0.3)
        s1 = rng.uniform(0.6, 1.0)
        sect = np.stack([part[0] + e1 * t0 + e2 * s0, part[0] + e1 * t1 + e2 * s0, part[0] + e1 * t1 + e2 * s1, part[0] + e1 * t0 + e2 * s1])
        spill = rng.uniform(1.0, 3.0)
        c = sect.mean(axis=0)
        d = sect - c
        n = np.linalg.norm(d, axis=1, keepdims=True)
        rdraw.polygon(cv.px(c + d * (n + spill) / np.maximum(n, 1e-6)), fill=100)
        rbdraw.polygon(cv.px(c + d * (n + spill) / np.maximum(n, 1e-6)), fill=roof8)
        rdraw.polygon(cv.px(sect), fill=255)
        rbdraw.polygon(cv.px(sect), fill=roof8)
        if style == "fire":
            sdraw.ellipse(
                [(cx - cv.ox) / g - b.size_m / g * 0.6, (cy - cv.oy) / g - b.size_m / g * 0.6,
                 (cx - cv.ox) / g + b.size_m / g * 0.6, (cy - cv.oy) / g + b.size_m / g * 0.6],
                fill=int(rng.uniform(60, 140)),
            )
        if style == "blast" and rng.random() < 0.2:
            craters.append((cx + rng.normal(0, b.size_m), cy + rng.normal(0, b.size_m), rng.uniform(1.5, 3.5)))


def _draw_roof_marks(b: Building, rng: np.random.Generator, cv: _Canvas, rfdraw: ImageDraw.ImageDraw, v: np.ndarray) -> None:
    """Minor damage on a standing roof: blue tarps, missing patches, soot marks."""
    part = b.parts[0] + v
    e1, e2 = part[1] - part[0], part[3] - part[0]
    n = int(rng.integers(1, 4))
    for _ in range(n):
        t = rng.uniform(0.15, 0.85, 2)
        c = part[0] + e1 * t[0] + e2 * t[1]
        size = rng.uniform(1.5, 4.0) if b.damage == "minor-damage" else rng.uniform(2.5, 6.0)
        patch = rectangle(c[0], c[1], size, size * rng.uniform(0.5, 1.0), b.angle + rng.normal(0, 0.2))
        r = rng.random()
        if b.style != "fire" and r < 0.45:
            col = np.array([0.14, 0.32, 0.62]) * rng.uniform(0.85, 1.2)  # tarp
        elif b.style == "fire":
            col = np.array([0.10, 0.09, 0.09])  # soot
        else:
            col = np.array([0.45, 0.37, 0.28])  # exposed decking
        rfdraw.polygon(cv.px(patch), fill=_c8(col))


# --- concrete cities, earthquake collapse, strikes, demolition, floods ----------------------------

CONCRETE_GREY = np.array([0.60, 0.59, 0.56])


def _collapse_variant(b: Building) -> tuple[str, float]:
    """How a destroyed building fell in an earthquake: ``pancake`` (storeys stacked flat, the
    roof slab low on top; with the share of its height left), ``heap`` or ``slabs`` (tilted)."""
    r = np.random.default_rng(b.damage_seed + 3)
    u = float(r.random())
    left = float(r.uniform(0.12, 0.35))
    return ("pancake" if u < 0.35 else "heap" if u < 0.7 else "slabs"), left


def _strike_plan(b: Building) -> tuple[set[int], list[tuple[float, float, float]]]:
    """Which parts of a struck building are down, and its roof holes ``(x, y, radius_m)``."""
    r = np.random.default_rng(b.damage_seed + 17)
    down: set[int] = set()
    holes: list[tuple[float, float, float]] = []
    if b.damage == "destroyed" and len(b.parts) > 1 and r.random() < 0.7:
        down.add(int(r.integers(len(b.parts))))
    keep = [i for i in range(len(b.parts)) if i not in down]
    big = b.damage == "destroyed"
    n = int(r.integers(1, 3 if big else 2))
    for _ in range(n):
        part = b.parts[keep[int(r.integers(len(keep)))]]
        e1, e2 = part[1] - part[0], part[3] - part[0] if len(part) == 4 else part[2] - part[0]
        side = min(float(np.hypot(*e1)), float(np.hypot(*e2)))
        t = r.uniform(0.25, 0.75, 2)
        c = part[0] + e1 * t[0] + e2 * t[1]
        rad = side * (r.uniform(0.22, 0.42) if big else r.uniform(0.08, 0.18))
        holes.append((float(c[0]), float(c[1]), float(max(rad, 1.0))))
    return down, holes


def _irregular(rng: np.random.Generator, cx: float, cy: float, r: float, k: int = 9, jitter: float = 0.3) -> np.ndarray:
    ang = np.sort(rng.uniform(0, 2 * math.pi, k))
    rad = r * (1 + rng.uniform(-jitter, jitter, k))
    return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)


def _grown(poly: np.ndarray, margin: float, rng: np.random.Generator, jitter: float) -> np.ndarray:
    c = poly.mean(axis=0)
    d = poly - c
    n = np.linalg.norm(d, axis=1, keepdims=True)
    return c + d * (n + margin) / np.maximum(n, 1e-6) + rng.normal(0, jitter, d.shape)


def _concrete8(b: Building, rng: np.random.Generator) -> tuple[int, int, int]:
    """Debris colour of a concrete building: its roof mixed with grey concrete and dust."""
    return _c8(np.clip(0.35 * b.roof_rgb + 0.65 * CONCRETE_GREY * rng.uniform(0.85, 1.15), 0, 1))


def _draw_structural_damage(
    b: Building, rng: np.random.Generator, cv: _Canvas, lean: np.ndarray,
    layers: tuple[ImageDraw.ImageDraw, ...], craters: list[tuple[float, float, float]],
) -> None:
    """Earthquake collapse and strike damage of one building (after epoch).

    ``layers``: the rubble mask, rubble base colour, scorch mask, remnant colour and remnant mask.
    """
    rdraw, rbdraw, sdraw, remdraw, remmdraw = layers
    g = cv.g
    cx, cy = b.centroid
    grey = _concrete8(b, rng)
    if b.style == "collapse":
        if b.damage == "destroyed":
            variant, left = _collapse_variant(b)
            spill = min(b.height_m * (rng.uniform(0.25, 0.55) if variant != "pancake" else rng.uniform(0.08, 0.2)), 14.0)
            for part in b.parts:
                big = _grown(part, spill, rng, spill * 0.25)
                rdraw.polygon(cv.px(big), fill=120)
                rbdraw.polygon(cv.px(big), fill=grey)
            if variant == "pancake":
                for part in b.parts:  # the roof slab stands low: keep it clear of rubble
                    rdraw.polygon(cv.px(part + lean * b.height_m * left), fill=0)
                return
            for part in b.parts:
                rdraw.polygon(cv.px(part + rng.normal(0, 0.4, part.shape)), fill=255)
                rbdraw.polygon(cv.px(part), fill=grey)
            if variant == "slabs":
                # the roof and floor slabs broken in strips, tilted (other brightness) and shifted
                for part in b.parts:
                    if len(part) != 4:
                        continue
                    e1, e2 = part[1] - part[0], part[3] - part[0]
                    k = int(rng.integers(2, 4))
                    for i in range(k):
                        if rng.random() < 0.35:
                            continue
                        a0, a1 = i / k + 0.03, (i + 1) / k - 0.03
                        strip = np.stack([part[0] + e1 * a0, part[0] + e1 * a1, part[0] + e1 * a1 + e2, part[0] + e1 * a0 + e2])
                        c = strip.mean(axis=0)
                        th = rng.normal(0, 0.15)
                        rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
                        moved = (strip - c) @ rot.T * rng.uniform(0.8, 0.97) + c + rng.normal(0, 1.5, 2)
                        shade = rng.uniform(0.55, 1.3)
                        remdraw.polygon(cv.px(moved), fill=_c8(np.clip(b.roof_rgb * shade, 0, 1)))
                        remmdraw.polygon(cv.px(moved), fill=255)
            for _ in range(int(rng.integers(3, 10))):  # slab fragments in the heap
                fx, fy = cx + rng.normal(0, b.size_m * 0.3), cy + rng.normal(0, b.size_m * 0.3)
                frag = rectangle(fx, fy, rng.uniform(1.5, 5.0), rng.uniform(1.0, 3.0), rng.uniform(0, math.pi))
                remdraw.polygon(cv.px(frag), fill=_c8(np.clip(b.roof_rgb * rng.uniform(0.6, 1.2), 0, 1)))
                remmdraw.polygon(cv.px(frag), fill=255)
        else:  # major: a section collapsed, rubble down its side
            part = b.parts[int(rng.integers(len(b.parts)))]
            e1, e2 = part[1] - part[0], part[3] - part[0] if len(part) == 4 else part[2] - part[0]
            t0 = rng.uniform(0.0, 0.5)
            t1 = t0 + rng.uniform(0.3, 0.5)
            sect = np.stack([part[0] + e1 * t0, part[0] + e1 * t1, part[0] + e1 * t1 + e2, part[0] + e1 * t0 + e2])
            spill = min(b.height_m * rng.uniform(0.15, 0.35), 8.0)
            big = _grown(sect, spill, rng, spill * 0.25)
            rdraw.polygon(cv.px(big), fill=110)
            rbdraw.polygon(cv.px(big), fill=grey)
            rdraw.polygon(cv.px(sect), fill=255)
            rbdraw.polygon(cv.px(sect), fill=grey)
        return
    # strike
    down, holes = _strike_plan(b)
    for i in sorted(down):
        part = b.parts[i]
        spill = rng.uniform(2.0, 6.0)
        big = _grown(part, spill, rng, spill * 0.3)
        rdraw.polygon(cv.px(big), fill=120)
        rbdraw.polygon(cv.px(big), fill=grey)
        rdraw.polygon(cv.px(part), fill=255)
        rbdraw.polygon(cv.px(part), fill=grey)
    for x, y, rad in holes:  # debris blown out around the holes, soot
        r_out = rad + b.height_m * 0.15 + 2.0
        sdraw.ellipse([(x - cv.ox - r_out) / g, (y - cv.oy - r_out) / g, (x - cv.ox + r_out) / g, (y - cv.oy + r_out) / g],
                      fill=int(rng.uniform(50, 130)))
    n_crater = int(rng.integers(0, 3)) if b.damage == "destroyed" else int(rng.random() < 0.2)
    for _ in range(n_crater):
        ang = rng.uniform(0, 2 * math.pi)
        dist = b.size_m / 2 + rng.uniform(3, 15)
        craters.append((cx + math.cos(ang) * dist, cy + math.sin(ang) * dist, rng.uniform(1.5, 4.0)))


def _draw_demolition(b: Building, rng: np.random.Generator, cv: _Canvas, rdraw: ImageDraw.ImageDraw, rbdraw: ImageDraw.ImageDraw) -> None:
    """A building demolished on purpose (not damage): a low heap of sorted debris on its lot."""
    col = _concrete8(b, rng)
    for part in b.parts:
        heap = _grown(part, rng.uniform(-1.0, 1.5), rng, 0.5)
        rdraw.polygon(cv.px(heap), fill=int(rng.uniform(120, 200)))
        rbdraw.polygon(cv.px(heap), fill=col)


def _draw_flood(e: _EpochDraw) -> None:
    """Flood water (or the wet mud it left) over low ground, roads and yards; roofs stay above."""
    style = e.style
    if style.flood <= 0:
        return
    g, h, w, flat = e.g, e.h, e.w, e.flat
    rng = np.random.default_rng(style.flood_seed)
    low = -e.fields.landcover[::4, ::4]
    field = low * 0.7 + fractal_noise(rng, low.shape, 40.0 / g / 4, octaves=3)
    thr = float(np.quantile(field, 1.0 - style.flood))
    alpha = np.clip(upsample(np.clip((field - thr) * 3.0, 0, 1).astype(np.float32), (h, w)), 0, 1).reshape(-1)
    idx = np.flatnonzero(alpha > 0.01)
    if not idx.size:
        return
    if style.flood_mud:
        col = np.array([0.47, 0.40, 0.30], dtype=np.float32) * (1.0 + 0.10 * e.patches_f[idx] + 0.06 * e.fine_f[idx])[:, None]
        _blend(flat, idx, alpha[idx] * 0.8, col)
    else:
        col = np.array([0.34, 0.32, 0.25], dtype=np.float32) * (1.0 + 0.05 * e.fine_f[idx])[:, None]
        _blend(flat, idx, alpha[idx] * 0.93, col)


def _draw_rooftop_tanks(b: Building, cv: _Canvas, rfdraw: ImageDraw.ImageDraw, v: np.ndarray, shadow_dir: np.ndarray) -> None:
    """Water tanks (white, black, blue plastic, metal) and solar water heaters on a flat roof."""
    urng = np.random.default_rng(b.damage_seed + 7)
    tank_cols = ((0.86, 0.86, 0.84), (0.14, 0.14, 0.15), (0.22, 0.32, 0.58), (0.62, 0.63, 0.64))
    for part in b.parts:
        if len(part) != 4:
            continue
        p = part + v
        e1, e2 = p[1] - p[0], p[3] - p[0]
        area = float(np.hypot(*e1) * np.hypot(*e2))
        for _ in range(int(urng.integers(0, 2 + min(int(area / 70), 10)))):
            t = urng.uniform(0.1, 0.9, 2)
            c = p[0] + e1 * t[0] + e2 * t[1]
            if urng.random() < 0.6:
                r = urng.uniform(0.45, 0.8)
                cv.ellipse(rfdraw, c[0] + shadow_dir[0] * 0.9, c[1] + shadow_dir[1] * 0.9, r, _c8(b.roof_rgb * 0.5))
                cv.ellipse(rfdraw, c[0], c[1], r, _c8(tank_cols[int(urng.integers(len(tank_cols)))]))
            else:
                ang = b.angle + urng.choice([0.0, math.pi / 2])
                panel = rectangle(c[0], c[1], urng.uniform(1.8, 2.4), urng.uniform(0.9, 1.3), ang)
                rfdraw.polygon(cv.px(panel + shadow_dir * 0.6), fill=_c8(b.roof_rgb * 0.55))
                rfdraw.polygon(cv.px(panel), fill=_c8((0.16, 0.19, 0.27)))
                off = np.array([-math.sin(ang), math.cos(ang)]) * 0.8
                tank = rectangle(c[0] + off[0], c[1] + off[1], urng.uniform(1.4, 2.0), 0.5, ang)
                rfdraw.polygon(cv.px(tank), fill=_c8((0.85, 0.85, 0.83)))


def _draw_dome(b: Building, cv: _Canvas, rfdraw: ImageDraw.ImageDraw, v: np.ndarray, to_sun: np.ndarray) -> None:
    """A mosque's dome on the hall's roof: a dark base and a sunlit cap toward the sun."""
    c = b.parts[0].mean(axis=0) + v
    r = b.size_m * 0.3
    base = np.clip(b.roof_rgb * 0.75, 0, 1)
    cv.ellipse(rfdraw, c[0], c[1], r, _c8(base))
    cv.ellipse(rfdraw, c[0] + to_sun[0] * r * 0.2, c[1] + to_sun[1] * r * 0.2, r * 0.75, _c8(np.clip(b.roof_rgb * 1.15, 0, 1)))
    cv.ellipse(rfdraw, c[0], c[1], max(r * 0.08, 0.4), _c8((0.75, 0.65, 0.35)))


def _draw_roof_holes(b: Building, cv: _Canvas, rfdraw: ImageDraw.ImageDraw, v: np.ndarray) -> None:
    """Strike holes in a standing roof: a scorched rim, the dark inside, broken debris."""
    rng = np.random.default_rng(b.damage_seed + 19)
    _down, holes = _strike_plan(b)
    for x, y, rad in holes:
        x, y = x + v[0], y + v[1]
        rfdraw.polygon(cv.px(_irregular(rng, x, y, rad * 1.6, 11, 0.35)), fill=_c8((0.16, 0.15, 0.14)))
        rfdraw.polygon(cv.px(_irregular(rng, x, y, rad, 9, 0.3)), fill=_c8((0.06, 0.06, 0.06)))
        for _ in range(int(rng.integers(2, 6))):
            fx, fy = x + rng.normal(0, rad * 0.4), y + rng.normal(0, rad * 0.4)
            frag = rectangle(fx, fy, rng.uniform(0.6, 2.0), rng.uniform(0.4, 1.2), rng.uniform(0, math.pi))
            rfdraw.polygon(cv.px(frag), fill=_c8(CONCRETE_GREY * rng.uniform(0.6, 1.1)))


def _draw_pancake_cracks(b: Building, cv: _Canvas, rfdraw: ImageDraw.ImageDraw, v: np.ndarray) -> None:
    """A pancaked block's roof slab: cracked across, broken at the edges, tilted in places."""
    rng = np.random.default_rng(b.damage_seed + 23)
    g = cv.g
    for part in b.parts:
        p = part + v
        if len(p) != 4:
            continue
        e1, e2 = p[1] - p[0], p[3] - p[0]
        t = rng.uniform(0.2, 0.8)
        tilt = np.stack([p[0] + e1 * t, p[1], p[2], p[0] + e1 * t + e2])
        rfdraw.polygon(cv.px(tilt), fill=_c8(np.clip(b.roof_rgb * rng.uniform(0.65, 1.25), 0, 1)))
        for _ in range(int(rng.integers(3, 8))):
            a = p[0] + e1 * rng.uniform(0, 1) + e2 * rng.uniform(0, 1)
            bpt = a + rng.normal(0, b.size_m * 0.25, 2)
            rfdraw.line(cv.px(np.stack([a, bpt])), fill=_c8((0.15, 0.14, 0.13)), width=max(int(round(0.3 / g)), 1))
