"""Seeded, tiny GeoTIFF scenes for the tiles tests, generated on the fly.

Every scene samples one continuous ground texture (a sum of sinusoids defined in UTM metres) at
its own pixel centres, so the same ground looks the same in any CRS and resolution. A red square
marker sits at a known lon/lat. ``shift_m`` moves the after content by a known offset on the
ground.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

#: scene centre (WGS84) and its UTM zone
LON0, LAT0 = 15.2, 45.1
UTM = "EPSG:32633"
MARKER_HALF_M = 4.0


@dataclass(frozen=True)
class Ground:
    """A continuous RGB ground texture plus a red marker, in UTM metres."""

    freqs: np.ndarray  # (K, 2) cycles per metre
    phases: np.ndarray  # (3, K)
    amps: np.ndarray  # (K,)
    marker_xy: tuple[float, float]

    def sample(self, x: np.ndarray, y: np.ndarray, *, marker: bool = True) -> np.ndarray:
        """RGB values in [0, 1], shape (3, *x.shape)."""
        arg = 2 * np.pi * (x[..., None] * self.freqs[:, 0] + y[..., None] * self.freqs[:, 1])
        out = []
        for b in range(3):
            v = (np.sin(arg + self.phases[b]) * self.amps).sum(-1)
            out.append(0.45 + 0.1 * b + 0.3 * v / self.amps.sum())
        img = np.clip(np.stack(out), 0.02, 0.97)
        if marker:
            mx, my = self.marker_xy
            inside = (np.abs(x - mx) <= MARKER_HALF_M) & (np.abs(y - my) <= MARKER_HALF_M)
            img[0][inside] = 0.98
            img[1][inside] = 0.03
            img[2][inside] = 0.03
        return img


def _ground(seed: int = 7) -> Ground:
    rng = np.random.default_rng(seed)
    k = 14
    wavelength = rng.uniform(3.0, 30.0, k)
    angle = rng.uniform(0, np.pi, k)
    freqs = np.stack([np.cos(angle), np.sin(angle)], 1) / wavelength[:, None]
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    mx, my = to_utm.transform(LON0, LAT0)
    return Ground(freqs, rng.uniform(0, 2 * np.pi, (3, k)), rng.uniform(0.5, 1.0, k), (mx, my))


@pytest.fixture(scope="session")
def ground() -> Ground:
    return _ground()


def utm_of(lon: float, lat: float) -> tuple[float, float]:
    return Transformer.from_crs("EPSG:4326", UTM, always_xy=True).transform(lon, lat)


def lonlat_of(x: float, y: float) -> tuple[float, float]:
    return Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(x, y)


SceneMaker = Callable[..., Path]


@pytest.fixture()
def make_scene(tmp_path: Path, ground: Ground) -> SceneMaker:
    """Write a GeoTIFF of the ground texture; returns its path.

    Keyword args:
        name: file name (in tmp_path).
        crs: ``"utm"`` or ``"wgs84"``.
        size_m: side of the covered square on the ground, centred on ``centre_xy`` (UTM).
        centre_xy: UTM centre (default: the marker).
        res_m: pixel size in metres.
        shift_m: ``(east, north)`` offset of the content on the ground.
        nodata_box: ``(x0, y0, x1, y1)`` UTM box written as nodata (0) when ``nodata=0``.
        tags: TIFF tags.
        dtype: ``uint8``, ``uint16`` or ``float32`` (non-uint8 values span ``value_range``).
        value_range: ``(low, high)`` that the [0, 1] texture maps to for non-uint8 dtypes
            (default 100..3000; e.g. ``(0, 2047)`` for 11-bit data in uint16).
        nan_box: ``(x0, y0, x1, y1)`` UTM box written as NaN (float32 only).
        band_order: the bands written, from ``R``, ``G``, ``B`` and ``N`` (near infrared,
            here the band mean), e.g. ``"BGRN"``.
        colorinterp: GDAL colour interpretation names per band (``"red"``, ``"undefined"``,
            ...), or None for GDAL's default.
        descriptions: band descriptions, or None.
        white: cover everything with smooth white (cloud-like).
        marker: draw the marker.
    """

    def make(
        name: str,
        *,
        crs: str = "utm",
        size_m: float = 200.0,
        centre_xy: tuple[float, float] | None = None,
        res_m: float = 0.5,
        shift_m: tuple[float, float] = (0.0, 0.0),
        nodata: float | None = None,
        nodata_box: tuple[float, float, float, float] | None = None,
        tags: dict[str, str] | None = None,
        dtype: str = "uint8",
        value_range: tuple[float, float] = (100.0, 3000.0),
        nan_box: tuple[float, float, float, float] | None = None,
        band_order: str = "RGB",
        colorinterp: list[str] | None = None,
        descriptions: list[str] | None = None,
        white: bool = False,
        marker: bool = True,
    ) -> Path:
        cx, cy = centre_xy or ground.marker_xy
        n = int(round(size_m / res_m))
        if crs == "utm":
            transform = from_origin(cx - size_m / 2, cy + size_m / 2, res_m, res_m)
            cols, rows = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
            x = cx - size_m / 2 + cols * res_m
            y = cy + size_m / 2 - rows * res_m
            crs_s = UTM
        else:
            lon_c, lat_c = lonlat_of(cx, cy)
            dlon = res_m / (111_320.0 * np.cos(np.radians(lat_c)))
            dlat = res_m / 110_574.0
            west, north = lon_c - n / 2 * dlon, lat_c + n / 2 * dlat
            transform = from_origin(west, north, dlon, dlat)
            cols, rows = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
            lon = west + cols * dlon
            lat = north - rows * dlat
            x, y = Transformer.from_crs("EPSG:4326", UTM, always_xy=True).transform(lon, lat)
            crs_s = "EPSG:4326"
        img = ground.sample(np.asarray(x) - shift_m[0], np.asarray(y) - shift_m[1], marker=marker)
        if white:
            img[:] = 0.93
        channels = {"R": img[0], "G": img[1], "B": img[2], "N": img.mean(0)}
        img = np.stack([channels[b] for b in band_order])
        if dtype == "uint8":
            data = np.round(img * 255).astype(np.uint8)
        elif dtype == "float32":
            lo, hi = value_range
            data = (lo + img * (hi - lo)).astype(np.float32)
        else:
            lo, hi = value_range
            data = np.round(lo + img * (hi - lo)).astype(dtype)

        def box(b: tuple[float, float, float, float]) -> np.ndarray:
            x0, y0, x1, y1 = b
            return (np.asarray(x) >= x0) & (np.asarray(x) <= x1) & (np.asarray(y) >= y0) & (np.asarray(y) <= y1)

        if nodata_box is not None:
            data[:, box(nodata_box)] = 0 if nodata is None else nodata
        if nan_box is not None:
            data[:, box(nan_box)] = np.nan
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(
            path, "w", driver="GTiff", width=n, height=n, count=len(band_order), dtype=dtype, crs=crs_s,
            transform=transform, nodata=nodata, tiled=True, blockxsize=128, blockysize=128,
        ) as ds:
            ds.write(data)
            if tags:
                ds.update_tags(**tags)
            if colorinterp is not None:
                from rasterio.enums import ColorInterp

                ds.colorinterp = [ColorInterp[c] for c in colorinterp]
            if descriptions is not None:
                ds.descriptions = tuple(descriptions)
        return path

    return make


def write_sites_csv(path: Path, rows: list[tuple], header: str = "site_id,lon,lat") -> Path:
    lines = [header] + [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def red_centroid(chip: np.ndarray) -> tuple[float, float]:
    """(row, col) centroid of the red marker in a (3, H, W) chip."""
    red = (chip[0] > 0.8) & (chip[1] < 0.2) & (chip[2] < 0.2)
    assert red.sum() > 20, "marker not found in chip"
    rr, cc = np.nonzero(red)
    return float(rr.mean()), float(cc.mean())
