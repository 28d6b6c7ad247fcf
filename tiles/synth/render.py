"""Draw a region's layout as an image for one epoch (before or after).

Vector objects are rasterised with PIL's C polygon/line/ellipse fills into layer images (one fill
per object), and the layers are combined with whole-array numpy operations: no per-pixel Python
loops. Arrays here are ``(H, W, 3)`` float32 RGB reflectance in ``[0, 1]`` (rows first).

Both epochs of a region share :class:`StaticFields` (ground texture, grain), so anything not
changed on purpose is the same in before and after.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tiles.synth.layout import DAMAGE_STYLES, Building, Layout, rectangle
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


@dataclass(frozen=True)
class StaticFields:
    """Textures shared by both epochs of a region, each ``(H, W)`` float32 (zero mean, unit var).

    Attributes:
        landcover: coarse land-cover field (features ~60 m).
        patches: medium field (~15 m).
        fine: fine texture (~2.5 m).
        grain: per-pixel grain.
        speck: small-scale field (~0.8 m) for foliage and rubble.
        gsd_m: metres per pixel.
        origin_m: ``(x, y)`` of the canvas's top-left corner in layout metres.
    """

    landcover: np.ndarray
    patches: np.ndarray
    fine: np.ndarray
    grain: np.ndarray
    speck: np.ndarray
    gsd_m: float
    origin_m: tuple[float, float]

    @property
    def shape(self) -> tuple[int, int]:
        return self.landcover.shape  # type: ignore[return-value]


def make_static_fields(seed: int, shape: tuple[int, int], gsd_m: float, origin_m: tuple[float, float]) -> StaticFields:
    """Draw the shared textures of a canvas of ``shape`` pixels at ``gsd_m``."""
    rng = np.random.default_rng(seed)
    return StaticFields(
        landcover=fractal_noise(rng, shape, 60.0 / gsd_m, octaves=3),
        patches=fractal_noise(rng, shape, 15.0 / gsd_m, octaves=3),
        fine=fractal_noise(rng, shape, 2.5 / gsd_m, octaves=2),
        grain=pixel_noise(rng, shape),
        speck=smooth_noise(rng, shape, max(0.8 / gsd_m, 1.0)),
        gsd_m=gsd_m,
        origin_m=origin_m,
    )


class _Canvas:
    """Layer images at canvas resolution and a metres -> pixel mapping."""

    def __init__(self, fields: StaticFields) -> None:
        self.h, self.w = fields.shape
        self.g = fields.gsd_m
        self.ox, self.oy = fields.origin_m

    def px(self, poly: np.ndarray) -> list[tuple[float, float]]:
        p = (np.asarray(poly, dtype=float) - (self.ox, self.oy)) / self.g
        return [tuple(v) for v in p.tolist()]

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


def _c8(rgb: np.ndarray | tuple[float, ...]) -> tuple[int, int, int]:
    a = np.clip(np.asarray(rgb, dtype=float) * 255.0 + 0.5, 0, 255).astype(int)
    return int(a[0]), int(a[1]), int(a[2])


def _as_float(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32) / 255.0


def _blur(img: Image.Image, radius_px: float) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius_px)) if radius_px > 0.3 else img


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
    c = part.mean(axis=0)
    out = []
    for i in range(len(part)):
        a, b = part[i], part[(i + 1) % len(part)]
        d = b - a
        n = np.array([d[1], -d[0]]) / max(float(np.hypot(*d)), 1e-9)
        if float(n @ ((a + b) / 2 - c)) < 0:
            n = -n
        out.append((a, b, n))
    return out


def _swept(draw: ImageDraw.ImageDraw, cv: _Canvas, part: np.ndarray, v: np.ndarray, fill: object) -> None:
    """Fill the region swept by ``part`` translated along ``v`` (a shadow or a lean)."""
    draw.polygon(cv.px(part), fill=fill)
    draw.polygon(cv.px(part + v), fill=fill)
    for a, b, _ in _outward(part):
        draw.polygon(cv.px(np.stack([a, b, b + v, a + v])), fill=fill)


def _zone_field(lay: Layout, style_index: int, fields: StaticFields, seed: int) -> np.ndarray:
    """Soft 0..1 mask of the ground affected by clusters of one style (e.g. the burn scar)."""
    h, w = fields.shape
    g = fields.gsd_m
    cell = 4.0
    ch, cw = max(int(h * g / cell), 2), max(int(w * g / cell), 2)
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
    xx = fields.origin_m[0] + (xx + 0.5) * (w * g / cw)
    yy = fields.origin_m[1] + (yy + 0.5) * (h * g / ch)
    inten = np.zeros((ch, cw), dtype=np.float32)
    for x, y, r, s in lay.damage_centres:
        if int(s) != style_index:
            continue
        inten = np.maximum(inten, np.exp(-(((xx - x) ** 2 + (yy - y) ** 2) / (1.3 * r) ** 2)))
    if not inten.any():
        return np.zeros((h, w), dtype=np.float32)
    rng = np.random.default_rng(seed)
    n = fractal_noise(rng, (ch, cw), 25.0, octaves=3)
    soft = np.clip((inten * (0.75 + 0.35 * n) - 0.3) * 3.0, 0, 1)
    return np.clip(upsample(soft, (h, w)), 0, 1)


def render_epoch(lay: Layout, fields: StaticFields, style: EpochStyle) -> np.ndarray:
    """Draw a region for one epoch, before sensor effects.

    Args:
        lay: the region's layout (damage already assigned).
        fields: shared textures; their shape and origin define the canvas.
        style: the epoch's sun, view, season and whether damage is drawn.

    Returns:
        float32 array of shape ``(H, W, 3)``, reflectance in ``[0, 1]``.
    """
    rng = np.random.default_rng(style.seed)
    cv = _Canvas(fields)
    g = fields.gsd_m
    to_sun, el, cot_el = _sun_vectors(style)
    shadow_dir = -to_sun * cot_el  # metres of shadow per metre of height
    lean = _lean(style)
    lc, pt, fine, grain, speck = (f[..., None] for f in (fields.landcover, fields.patches, fields.fine, fields.grain, fields.speck))

    # --- ground -------------------------------------------------------------------------------
    d = style.dryness
    grass = np.array([0.26 + 0.26 * d, 0.33 + 0.12 * d, 0.17 + 0.15 * d], dtype=np.float32)
    soil = np.array([0.52, 0.45, 0.36], dtype=np.float32)
    scrub = np.array([0.22 + 0.12 * d, 0.26 + 0.05 * d, 0.16 + 0.08 * d], dtype=np.float32)
    w_soil = 1.0 / (1.0 + np.exp(-(lc - 0.8) * 2.5))
    w_scrub = (1.0 / (1.0 + np.exp(-(pt - 0.4) * 2.0))) * (1.0 - w_soil) * 0.7
    img = (1.0 - w_soil - w_scrub) * grass + w_soil * soil + w_scrub * scrub
    img *= 1.0 + 0.08 * pt + 0.09 * fine + 0.05 * grain
    del w_soil, w_scrub

    burn = wind = blast = None
    if style.after:
        burn = _zone_field(lay, 0, fields, lay.burn_field_seed)
        wind = _zone_field(lay, 1, fields, lay.burn_field_seed + 1)
        blast = _zone_field(lay, 2, fields, lay.burn_field_seed + 2)
        if burn.any():
            burnt = np.array([0.30, 0.28, 0.26], dtype=np.float32) * (1.0 + 0.25 * pt + 0.2 * fine)
            ash = np.array([0.55, 0.53, 0.50], dtype=np.float32)
            burnt = burnt + (ash - burnt) * np.clip(speck * 0.3 + 0.2, 0, 1) * 0.5
            b3 = (burn * 0.9)[..., None]
            img = img * (1 - b3) + burnt * b3

    # --- paved surfaces, yards, pools, cleared lots ---------------------------------------------
    pav, pdraw = cv.rgb()
    pmask, pmdraw = cv.mask()
    asphalt = _c8((0.31, 0.31, 0.32))
    concrete = _c8((0.60, 0.58, 0.55))
    for c in lay.compounds:
        yard = {"paved": concrete, "sports": _c8((0.30, 0.42, 0.20)), "bare": _c8((0.58, 0.50, 0.40)), "grass": _c8((0.30, 0.40, 0.22))}[c.yard]
        pdraw.polygon(cv.px(c.polygon), fill=yard)
        pmdraw.polygon(cv.px(c.polygon), fill=255)
        if c.yard == "sports":
            ctr = c.polygon.mean(axis=0)
            e = c.polygon[1] - c.polygon[0]
            ang = math.atan2(e[1], e[0])
            track = rectangle(ctr[0], ctr[1], float(np.hypot(*e)) * 0.45, float(np.hypot(*(c.polygon[3] - c.polygon[0]))) * 0.35, ang)
            pdraw.polygon(cv.px(track), fill=_c8((0.58, 0.30, 0.24)))
            pdraw.polygon(cv.px(track.mean(axis=0) + (track - track.mean(axis=0)) * 0.8), fill=_c8((0.28, 0.45, 0.20)))
    for road in lay.roads:
        pdraw.line(cv.px(road.line), fill=asphalt, width=max(int(round(road.width_m / g)), 1), joint="curve")
        pmdraw.line(cv.px(road.line), fill=255, width=max(int(round(road.width_m / g)), 1), joint="curve")
        if road.main and rng.random() < 0.7:
            pdraw.line(cv.px(road.line), fill=_c8((0.75, 0.72, 0.55)), width=max(int(round(0.25 / g)), 1))
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
    pm = _as_float(pmask)[..., None]
    pav_f = _as_float(pav) * (1.0 + 0.05 * fine + 0.05 * grain)
    img = img * (1 - pm) + pav_f * pm
    del pav, pmask, pav_f, pm

    # --- which buildings stand, and how tall, in this epoch --------------------------------------
    standing: list[tuple[Building, float]] = []
    for b in lay.buildings:
        if b.after_only and not style.after:
            continue
        if style.after and b.damage == "destroyed":
            continue
        h = b.height_m * (0.6 if style.after and b.damage == "major-damage" else 1.0)
        standing.append((b, h))

    # --- scorch around burnt buildings, rubble layers ------------------------------------------
    rubble = None
    if style.after:
        rubble, rdraw = cv.mask()
        rbase, rbdraw = cv.rgb()
        scorch, sdraw = cv.mask()
        rem, remdraw = cv.rgb()
        remmask, remmdraw = cv.mask()
        craters: list[tuple[float, float, float]] = []
        for b in lay.buildings:
            if b.damage == "no-damage" or b.after_only:
                continue
            drng = np.random.default_rng(b.damage_seed)
            _draw_damage(b, drng, cv, rdraw, rbdraw, sdraw, remdraw, remmdraw, craters)
        r = _as_float(_blur(rubble, 0.6 / g))[..., None]
        sc = _as_float(_blur(scorch, 3.0 / g))[..., None]
        if sc.any():
            grey = img.mean(axis=2, keepdims=True)
            charred = grey * 0.45 + 0.03
            img = img * (1 - sc * 0.85) + charred * (sc * 0.85)
        rubble = (r, _as_float(rbase), _as_float(rem), _as_float(remmask)[..., None], craters)
        del scorch, sc

    # --- shadows of buildings and trees --------------------------------------------------------
    shadow, shdraw = cv.mask()
    for b, h in standing:
        for part in b.parts:
            _swept(shdraw, cv, part, shadow_dir * h, 255)
    for c in lay.compounds:
        if c.walled:
            for a, bb, _ in _outward(c.polygon):
                seg = np.stack([a, bb])
                shdraw.line(cv.px(seg + shadow_dir * 2.0), fill=255, width=max(int(round(0.6 / g)), 1))
    trees = lay.trees
    tree_scale = np.ones(trees["x"].shape, dtype=np.float32)
    tree_state = np.zeros(trees["x"].shape, dtype=np.int8)  # 0 healthy, 1 burnt, 2 stripped
    if style.after and burn is not None and trees["x"].size:
        tr = np.clip(((trees["y"] - fields.origin_m[1]) / g).astype(int), 0, fields.shape[0] - 1)
        tc = np.clip(((trees["x"] - fields.origin_m[0]) / g).astype(int), 0, fields.shape[1] - 1)
        bval = burn[tr, tc]
        wval = wind[tr, tc]
        burnt_t = bval > rng.uniform(0.2, 0.6, bval.size)
        strip_t = (wval > rng.uniform(0.2, 0.6, wval.size)) & ~burnt_t
        tree_state[burnt_t] = 1
        tree_state[strip_t] = 2
        tree_scale[burnt_t] = rng.uniform(0.35, 0.75, int(burnt_t.sum()))
        tree_scale[strip_t] = rng.uniform(0.2, 0.6, int(strip_t.sum()))
    leaf_off = trees["deciduous"] & (rng.random(trees["x"].size) < style.leaf_off) if trees["x"].size else np.zeros(0, bool)
    for i in range(trees["x"].size):
        if tree_scale[i] <= 0:
            continue
        rad = trees["radius"][i] * tree_scale[i] * (0.6 if leaf_off[i] else 1.0)
        off = shadow_dir * trees["height"][i] * 0.7
        cv.ellipse(shdraw, trees["x"][i] + off[0], trees["y"][i] + off[1], rad * 0.95, 255)
    sh = _as_float(_blur(shadow, 0.35 / g))[..., None]
    shade_tint = np.array([0.40, 0.43, 0.52], dtype=np.float32)
    img = img * (1 - sh) + img * shade_tint * sh
    del shadow, sh

    # --- walls (off-nadir) and roofs -------------------------------------------------------------
    roofs, rfdraw = cv.rgb()
    roofmask, rmdraw = cv.mask()
    standing.sort(key=lambda bh: bh[0].centroid[1])
    wall_base = np.array([0.60, 0.57, 0.53])
    for b, h in standing:
        v = lean * h
        for part in b.parts:
            for a, bb, n in _outward(part):
                if float(n @ v) >= -1e-6:
                    continue
                quad = np.stack([a, bb, bb + v, a + v])
                ws = 0.35 + 0.55 * max(float(n @ to_sun) * math.cos(el), 0.0)
                rfdraw.polygon(cv.px(quad), fill=_c8(wall_base * ws))
                rmdraw.polygon(cv.px(quad), fill=255)
        for part in b.parts:
            for facet, normal in _facets(part + v, b.roof):
                col = b.roof_rgb * _roof_shade(normal, to_sun, el)
                rfdraw.polygon(cv.px(facet), fill=_c8(col))
                rmdraw.polygon(cv.px(facet), fill=255)
            if b.roof == "flat":
                # parapet edge and rooftop units
                rfdraw.polygon(cv.px(part + v), outline=_c8(b.roof_rgb * 0.8), width=max(int(round(0.4 / g)), 1))
        if b.roof == "flat" and b.kind in ("hospital", "school", "commercial", "apartment"):
            urng = np.random.default_rng(b.damage_seed + 7)
            p = b.parts[0] + v
            for _ in range(int(urng.integers(1, 6))):
                t = urng.uniform(0.2, 0.8, 2)
                cxy = p[0] + (p[1] - p[0]) * t[0] + (p[3] - p[0]) * t[1]
                unit = rectangle(cxy[0], cxy[1], urng.uniform(1.5, 4), urng.uniform(1.2, 3), b.angle)
                _swept(rfdraw, cv, unit, shadow_dir * 1.0, _c8(b.roof_rgb * 0.55))
                rfdraw.polygon(cv.px(unit), fill=_c8(np.clip(b.roof_rgb * 1.2 + 0.05, 0, 1)))
        if style.after and b.damage in ("minor-damage", "major-damage"):
            _draw_roof_marks(b, np.random.default_rng(b.damage_seed + 11), cv, rfdraw, v)
    rm = _as_float(roofmask)[..., None]
    roof_f = _as_float(roofs) * (1.0 + 0.04 * grain + 0.05 * fine)
    img = img * (1 - rm) + roof_f * rm
    del roofs, roofmask, roof_f, rm

    # --- rubble, remnants, craters ---------------------------------------------------------------
    if rubble is not None:
        r, rbase_f, rem_f, rem_m, craters = rubble
        alpha = np.clip(r * 1.35 + 0.45 * speck * (r > 0.02) - 0.3, 0, 1)
        if alpha.any():
            ash_l = np.array([0.66, 0.64, 0.60], dtype=np.float32)
            char = np.array([0.17, 0.16, 0.15], dtype=np.float32)
            wood = np.array([0.50, 0.40, 0.30], dtype=np.float32)
            t = np.clip(0.5 + 0.45 * fine + 0.35 * speck, 0, 1)
            base = ash_l * t + char * (1 - t)
            # debris mixes in fragments of the roof colour and wood; grey dust at blast sites
            frag = np.clip(0.5 + 0.6 * speck - 0.3 * fine, 0, 1)
            debris = rbase_f * frag + wood * (1 - frag)
            w_debris = np.clip(rbase_f.sum(axis=2, keepdims=True) * 3.0, 0, 1)  # roof colour drawn = wind/blast
            col = base * (1 - w_debris * 0.55) + debris * (w_debris * 0.55)
            col *= 1.0 + 0.22 * grain + 0.1 * speck
            img = img * (1 - alpha) + col * alpha
        if rem_m.any():
            img = img * (1 - rem_m) + rem_f * rem_m
        for x, y, rad in craters:
            cm, cdraw = cv.mask()
            cv.ellipse(cdraw, x, y, rad * 1.7, 120)
            cv.ellipse(cdraw, x, y, rad, 255)
            c = _as_float(_blur(cm, 0.5 / g))[..., None]
            ring = np.clip(c * 2.0, 0, 1) * (c < 0.7)
            hole = np.clip((c - 0.6) * 3.0, 0, 1)
            img = img * (1 - ring * 0.6) + np.array([0.62, 0.60, 0.56], dtype=np.float32) * ring * 0.6
            img = img * (1 - hole) + (np.array([0.16, 0.15, 0.14], dtype=np.float32) * (1 + 0.3 * speck)) * hole
        if blast is not None and blast.any():
            dust = (blast * 0.25)[..., None]
            img = img * (1 - dust) + np.array([0.62, 0.61, 0.58], dtype=np.float32) * dust
        if wind is not None and wind.any():
            # strewn debris: sparse bright and coloured fragments across the track
            dens = wind[..., None] * 0.10
            hit = (np.abs(grain) > 2.2) & (rng.random(wind.shape, dtype=np.float32)[..., None] < dens * 8)
            pal = np.array([[0.80, 0.78, 0.74], [0.50, 0.40, 0.30], [0.35, 0.35, 0.38], [0.62, 0.34, 0.25]], dtype=np.float32)
            pick = pal[(np.abs(fine[..., 0] * 7).astype(int)) % 4]
            img = np.where(hit, pick, img)

    # --- trees -----------------------------------------------------------------------------------
    canopy, cdraw = cv.mask()
    tcol, tdraw = cv.rgb()
    leafy = np.array([0.13, 0.20, 0.09])
    bare = np.array([0.33, 0.29, 0.24])
    for i in range(trees["x"].size):
        if tree_scale[i] <= 0:
            continue
        rad = trees["radius"][i] * tree_scale[i]
        tone = 1.0 + 0.22 * trees["tone"][i]
        if tree_state[i] == 1:
            col = np.array([0.20, 0.17, 0.14]) * tone
        elif tree_state[i] == 2:
            col = np.array([0.30, 0.27, 0.20]) * tone
        elif leaf_off[i]:
            col = bare * tone
            rad *= 0.85
        else:
            col = (leafy + np.array([0.10, 0.06, 0.04]) * style.dryness * 0.6) * tone
        cv.ellipse(cdraw, trees["x"][i], trees["y"][i], rad, 255 if not leaf_off[i] else 150)
        cv.ellipse(tdraw, trees["x"][i], trees["y"][i], rad, _c8(col))
    cmask = _as_float(canopy)
    if cmask.any():
        hgt = _as_float(_blur(canopy, 1.0 / g))
        gx = np.zeros_like(hgt)
        gy = np.zeros_like(hgt)
        gx[:, 1:-1] = hgt[:, 2:] - hgt[:, :-2]
        gy[1:-1, :] = hgt[2:, :] - hgt[:-2, :]
        lit = (gx * to_sun[0] + gy * to_sun[1]) * (2.0 / max(g, 0.25)) * 0.6
        leaf = np.clip(0.78 + 0.45 * lit + 0.22 * fields.speck + 0.08 * fields.grain, 0.35, 1.5)
        tree_img = _as_float(tcol) * leaf[..., None]
        a = np.clip(cmask * (1.05 + 0.35 * fields.speck) - 0.05, 0, 1)[..., None]
        img = img * (1 - a) + tree_img * a
    del canopy, tcol

    # --- vehicles -----------------------------------------------------------------------------
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
            vdraw.polygon(cv.px(car + shadow_dir * 0.8), fill=(0, 0, 0))
        for k in np.flatnonzero(present):
            x, y, ang = slots[k]
            car = rectangle(x, y, 4.5, 1.9, ang)
            c = VEHICLE_COLOURS[colour_idx[k] if keep[k] else vr.integers(len(VEHICLE_COLOURS))]
            vdraw.polygon(cv.px(car), fill=_c8(c))
            vmdraw.polygon(cv.px(car), fill=255)
        vm = _as_float(vmask)[..., None]
        vis = vm > 0.5
        img = np.where(vis, _as_float(vcol), img * (1 - vm * 0.55))
    return np.clip(img, 0.0, 1.0, out=img)


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
            if rng.random() < 0.6:
                for part in b.parts:
                    remdraw.polygon(cv.px(part), outline=_c8((0.70, 0.69, 0.66)), width=max(int(round(0.5 / g)), 1))
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


def style_index(name: str) -> int:
    """Index of a damage style name in :data:`tiles.synth.layout.DAMAGE_STYLES`."""
    return DAMAGE_STYLES.index(name)
