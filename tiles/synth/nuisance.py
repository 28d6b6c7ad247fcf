"""Nuisance change: how two acquisitions of an unchanged place differ, and sensor effects.

:func:`draw_epoch_styles` turns the strength knobs of :class:`~tiles.synth.config.SynthConfig`
into the concrete acquisition of each epoch (sun, view, season, colour, haze, blur, noise, JPEG,
clouds, nodata); :func:`apply_sensor` applies the radiometric part to a rendered image.
"""

from __future__ import annotations

import functools
import io
from dataclasses import replace

import numpy as np
from PIL import Image, ImageChops, ImageEnhance, ImageFilter

from tiles.synth.config import SynthConfig
from tiles.synth.noise import fractal_noise, smooth_noise, upsample
from tiles.synth.render import EpochStyle

#: the nuisance knobs of SynthConfig, each a strength 0..1
NUISANCE_KNOBS = (
    "sun_change", "season_change", "colour_shift", "haze", "noise", "blur", "misregistration",
    "off_nadir", "vehicles", "construction", "jpeg", "clouds", "nodata",
)

#: nuisance knobs added with the concrete-city world (generator 2.0): drawn only when on, so
#: configs without them give the same regions as before
NEW_NUISANCE_KNOBS = ("resolution_change", "flood", "winter", "demolition")

#: misregistration of the after epoch at strength 1, in pixels per axis
MAX_SHIFT_PX = 8


@functools.lru_cache(maxsize=1)
def _normal_ppf_256() -> np.ndarray:
    """Standard-normal quantiles at the 256 byte levels ``(i + 0.5) / 256``, shape ``(256,)``."""
    from scipy.special import ndtri

    return ndtri((np.arange(256) + 0.5) / 256.0).astype(np.float64)


def region_strengths(rng: np.random.Generator, config: SynthConfig) -> dict[str, float]:
    """The nuisance strengths used for one region (the knobs, or uniform draws below them)."""
    out = {}
    for name in NUISANCE_KNOBS:
        knob = float(getattr(config, name))
        out[name] = knob * float(rng.uniform(0, 1)) if config.randomise_nuisance else knob
    for name in NEW_NUISANCE_KNOBS:
        knob = float(getattr(config, name))
        out[name] = knob * float(rng.uniform(0, 1)) if (config.randomise_nuisance and knob > 0) else knob
    out["max_off_nadir_deg"] = float(config.max_off_nadir_deg)
    return out


def draw_epoch_styles(rng: np.random.Generator, s: dict[str, float], *, gsd_m: float = 0.5) -> tuple[EpochStyle, EpochStyle]:
    """Draw the before and after acquisitions of one region.

    Args:
        rng: the region's generator.
        s: nuisance strengths from :func:`region_strengths`.
        gsd_m: the rendered pixel size (native resolutions are drawn at or above it).

    Returns:
        ``(before, after)`` styles; only ``after`` draws damage.
    """

    def sensor(after: bool) -> dict[str, object]:
        cs = s["colour_shift"]
        base_gain = rng.uniform(0.92, 1.08)
        return dict(
            gains=tuple(float(base_gain * (1 + cs * rng.uniform(-0.15, 0.15))) for _ in range(3)),
            gamma=float(1 + cs * rng.uniform(-0.3, 0.3)),
            saturation=float(1 + cs * rng.uniform(-0.45, 0.3)),
            offset=float(cs * rng.uniform(-0.02, 0.05)),
            haze=float(s["haze"] * rng.uniform(0, 1)),
            blur_px=float(0.4 + s["blur"] * rng.uniform(0, 1.6)),
            noise_std=float(0.004 + s["noise"] * rng.uniform(0, 0.025)),
            jpeg_quality=int(95 - 65 * s["jpeg"] * rng.uniform(0.3, 1)) if s["jpeg"] > 0 else 0,
            off_nadir_deg=float(s["off_nadir"] * s.get("max_off_nadir_deg", 30.0) * rng.uniform(0.1, 1)),
            view_azimuth_deg=float(rng.uniform(0, 360)),
            cloud_cover=float(s["clouds"] * 0.15 * rng.uniform(0.3, 1)) if (s["clouds"] > 0 and (after or rng.random() < 0.3)) else 0.0,
            nodata_fraction=float(s["nodata"] * 0.12 * rng.uniform(0.3, 1)) if (s["nodata"] > 0 and (after or rng.random() < 0.3)) else 0.0,
            leaf_off=float(s["season_change"] * rng.uniform(0, 1) if rng.random() < 0.35 else 0.0),
            seed=int(rng.integers(2**31)),
            vehicle_seed=int(rng.integers(2**31)),
        )

    az = float(rng.uniform(100, 230))
    el = float(rng.uniform(35, 75))
    dry = float(rng.uniform(0.0, 0.7))
    before = EpochStyle(
        after=False, sun_azimuth_deg=az, sun_elevation_deg=el, shift_px=(0, 0), dryness=dry,
        vehicle_keep=1.0, **sensor(False),  # type: ignore[arg-type]
    )
    shift = tuple(int(round(s["misregistration"] * MAX_SHIFT_PX * rng.uniform(-1, 1))) for _ in range(2))
    after = EpochStyle(
        after=True,
        sun_azimuth_deg=float(az + s["sun_change"] * rng.uniform(-60, 60)),
        sun_elevation_deg=float(np.clip(el + s["sun_change"] * rng.uniform(-25, 25), 28, 80)),
        shift_px=shift,  # type: ignore[arg-type]
        dryness=float(np.clip(dry + s["season_change"] * rng.uniform(-0.8, 0.8), 0, 1)),
        vehicle_keep=float(1 - s["vehicles"] * rng.uniform(0.5, 1)),
        **sensor(True),  # type: ignore[arg-type]
    )
    return _with_new_nuisance(rng, s, before, after, gsd_m)


def _with_new_nuisance(rng: np.random.Generator, s: dict[str, float], before: EpochStyle, after: EpochStyle, gsd_m: float) -> tuple[EpochStyle, EpochStyle]:
    """Winter sun, native resolution and flood water of each epoch (no draws for knobs that are off)."""
    epochs = [before, after]
    if s.get("winter", 0.0) > 0:
        for i, e in enumerate(epochs):
            if rng.random() < s["winter"] * 0.6:
                epochs[i] = replace(
                    e, sun_elevation_deg=float(rng.uniform(18, 32)), sun_azimuth_deg=float(rng.uniform(140, 220)),
                    leaf_off=float(max(e.leaf_off, rng.uniform(0.5, 1.0))), dryness=float(rng.uniform(0.3, 0.8)),
                )
    if s.get("resolution_change", 0.0) > 0:
        for i, e in enumerate(epochs):
            native = gsd_m + 0.7 * s["resolution_change"] * float(rng.uniform(0, 1)) ** 0.7
            epochs[i] = replace(e, native_gsd_m=float(native))
    if s.get("flood", 0.0) > 0 and rng.random() < 0.35 + 0.65 * s["flood"]:
        i = 1 if rng.random() < 0.75 else 0
        epochs[i] = replace(
            epochs[i], flood=float(np.clip(s["flood"] * rng.uniform(0.1, 0.6), 0.02, 0.6)),
            flood_mud=bool(rng.random() < 0.4), flood_seed=int(rng.integers(2**31)),
        )
    return epochs[0], epochs[1]


def apply_sensor(img: np.ndarray, style: EpochStyle, gsd_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Clouds, colour, haze, blur, noise, JPEG and nodata of one acquisition.

    Args:
        img: float32 ``(H, W, 3)`` reflectance in ``[0, 1]`` (modified in place).
        style: the epoch's acquisition.
        gsd_m: metres per pixel (sets the size of clouds).

    Returns:
        ``(image, valid)``: uint8 ``(H, W, 3)`` with valid pixels in ``1..255`` and nodata ``0``,
        and bool ``(H, W)``.
    """
    rng = np.random.default_rng(style.seed + 1)
    h, w = img.shape[:2]
    if style.cloud_cover > 0:
        coarse = (max(h // 8, 2), max(w // 8, 2))
        field = fractal_noise(rng, coarse, 120.0 / gsd_m / 8, octaves=4)
        thr = float(np.quantile(field, 1 - style.cloud_cover))
        alpha_c = np.clip((field - thr) * 2.5, 0, 1)
        alpha = np.clip(upsample(alpha_c, (h, w)), 0, 1)
        sh = int(round(30.0 / gsd_m))
        shadow = np.zeros_like(alpha)
        shadow[sh:, sh:] = alpha[:-sh, :-sh] if sh < min(h, w) else 0
        img *= (1 - 0.5 * shadow)[..., None]
        img += (np.array([0.93, 0.93, 0.95], dtype=np.float32) - img) * alpha[..., None]
    # the rest runs on 8-bit images in PIL's C code: tone curve and gains as a lookup table,
    # saturation, spatially varying haze, blur, sensor noise, JPEG
    img *= 255.0
    np.clip(img, 1.0, 255.0, out=img)
    pil = Image.fromarray(img.astype(np.uint8), mode="RGB")
    levels = np.arange(256, dtype=np.float64) / 255.0
    lut: list[int] = []
    for c in range(3):
        lut += np.clip((levels ** style.gamma * style.gains[c] + style.offset) * 255.0 + 0.5, 1, 255).astype(int).tolist()
    pil = pil.point(lut)
    if abs(style.saturation - 1.0) > 1e-3:
        pil = ImageEnhance.Color(pil).enhance(style.saturation)
    if style.haze > 0:
        t = style.haze * 0.4 * (0.6 + 0.4 * np.clip(smooth_noise(rng, (max(h // 16, 2), max(w // 16, 2)), 20.0), -1, 1))
        mask = Image.fromarray(np.clip(t * 255.0, 0, 255).astype(np.uint8), mode="L").resize((w, h), Image.Resampling.BILINEAR)
        air = Image.new("RGB", (w, h), (158, 168, 184))
        pil = Image.composite(air, pil, mask)
    if style.blur_px > 0.3:
        pil = pil.filter(ImageFilter.GaussianBlur(style.blur_px))
    native = None
    if style.native_gsd_m is not None and style.native_gsd_m > gsd_m * 1.04:
        # acquired coarser than delivered: sampled at the native grid (noise and JPEG there),
        # then resampled to the delivered grid
        f = style.native_gsd_m / gsd_m
        native = (max(int(round(w / f)), 8), max(int(round(h / f)), 8))
        pil = pil.resize(native, Image.Resampling.BOX)
        w, h = native
    if style.noise_std > 0:
        sigma = style.noise_std * 255.0
        # seeded gaussian noise around 128: uniform random bytes through an inverse-CDF table
        ppf = np.clip(128.0 + sigma * _normal_ppf_256(), 0, 255).astype(np.uint8)
        noise = Image.fromarray(ppf[np.frombuffer(rng.bytes(h * w), dtype=np.uint8).reshape(h, w)], mode="L")
        pil = ImageChops.add(pil, Image.merge("RGB", (noise, noise, noise)), 1.0, -128)
    if style.jpeg_quality > 0:
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(style.jpeg_quality))
        buf.seek(0)
        pil = Image.open(buf).convert("RGB")
    if native is not None:
        h, w = img.shape[:2]
        pil = pil.resize((w, h), Image.Resampling.BICUBIC)
    u8 = np.array(pil)
    np.maximum(u8, 1, out=u8)
    valid = np.ones((h, w), dtype=bool)
    if style.nodata_fraction > 0:
        # a slanted strip along the left or right edge, as at the end of a satellite pass
        width = style.nodata_fraction * w
        slope = rng.uniform(-0.15, 0.15)
        cols = np.arange(w, dtype=np.float32)[None, :]
        rows = np.arange(h, dtype=np.float32)[:, None]
        edge = width + slope * (rows - h / 2)
        strip = cols < edge if rng.random() < 0.5 else cols > (w - edge)
        valid &= ~strip
        u8[~valid] = 0
    return u8, valid
