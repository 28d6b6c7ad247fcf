"""Fuzz corpus of the tiles inputs: bad rasters and bad site files, through the shipping path.

Every case builds small real files (GeoTIFFs written with rasterio, CSV/GeoJSON site lists),
runs them through ``read_sites`` -> ``RasterCatalog.from_paths`` -> ``write_tiles_folder`` (the
code ``sitewatch tiles`` runs) and classifies the outcome:

- ``clear_error``: a :class:`~sitewatch.errors.SitewatchError` whose message names what it must
  (the file, the row or feature, the setting);
- ``cannot_assess``: the probed site is ``cannot_assess`` with an expected reason and a detail;
- ``ok``: an odd but usable input gives an ``ok`` pair whose content is checked (the chips of
  the two epochs show the same ground, a parsed value is exact);
- ``silent_wrong``: anything else that finished (an ok pair that should not be, a wrong reason,
  wrong content, an error that does not name the file): must be 0;
- ``crash``: any other exception (a traceback): must be 0.

``test_corpus_summary`` prints the counts (run with ``-s`` to see them).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.enums import ColorInterp
from rasterio.transform import Affine, from_origin

from sitewatch.errors import SitewatchError
from tests.tiles.conftest import LAT0, LON0, UTM, _ground
from tiles.catalog import RasterCatalog
from tiles.config import TilesConfig
from tiles.output import write_tiles_folder
from tiles.store import read_pair_npz

CFG = TilesConfig(chip_px=32, chip_size_m=16.0)
GROUND = _ground(11)
MX, MY = Transformer.from_crs("EPSG:4326", UTM, always_xy=True).transform(LON0, LAT0)
PROBE = "p"  # the site id every case looks at


# -- what a case expects --------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """``kind`` is ``error``, ``cannot_assess`` or ``ok``."""

    kind: str
    needles: tuple[str, ...] = ()  # error: in the message; cannot_assess: in the detail
    reasons: tuple[str, ...] = ()
    check: Callable[[dict, object], bool] | None = None  # ok: (index row, pair) -> content right


def error(*needles: str) -> Expect:
    return Expect("error", needles)


def cannot(*reasons: str, needles: tuple[str, ...] = ()) -> Expect:
    return Expect("cannot_assess", needles, reasons)


def ok(check: Callable[[dict, object], bool] | None = None) -> Expect:
    return Expect("ok", check=check)


@dataclass
class Inputs:
    sites: Path
    before: list[Path]
    after: list[Path]
    config: TilesConfig = CFG
    probe: str = PROBE
    extra_probes: dict[str, Expect] = field(default_factory=dict)


# -- writers ----------------------------------------------------------------------------------------


class Kit:
    """Writes the files of one case into its own folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def ground(self, n: int, res: float, transform: Affine) -> np.ndarray:
        """(3, n, n) RGB in [0, 1] sampled at the pixel centres of ``transform`` (UTM)."""
        cols, rows = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
        x = transform.c + cols * transform.a + rows * transform.b
        y = transform.f + cols * transform.d + rows * transform.e
        return GROUND.sample(x, y, marker=False)

    def raster(
        self,
        name: str,
        *,
        n: int = 96,
        res: float = 0.5,
        dtype: str = "uint8",
        values: Callable[[np.ndarray], np.ndarray] | None = None,
        bands: str = "RGB",
        crs: str | None = UTM,
        transform: Affine | None = None,
        nodata: float | None = None,
        colorinterp: list[str] | None = None,
        descriptions: list[str] | None = None,
        tags: dict[str, str] | None = None,
        edit: Callable[[np.ndarray], None] | None = None,
        mask: np.ndarray | None = None,
    ) -> Path:
        transform = transform or from_origin(MX - n * res / 2, MY + n * res / 2, res, res)
        rgb = self.ground(n, res, transform)
        chans = {"R": rgb[0], "G": rgb[1], "B": rgb[2], "N": rgb.mean(0), "A": np.ones_like(rgb[0])}
        img = np.stack([chans[b] for b in bands])
        if values is not None:
            data = values(img).astype(dtype)
        elif dtype == "uint8":
            data = np.round(img * 255).astype(np.uint8)
        else:
            data = (img * 1000).astype(dtype)
        if edit is not None:
            edit(data)
        path = self.path(name)
        profile = dict(driver="GTiff", width=n, height=n, count=len(bands), dtype=dtype, nodata=nodata)
        if crs is not None:
            profile.update(crs=crs, transform=transform)
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(data)
            if colorinterp is not None:
                ds.colorinterp = [ColorInterp[c] for c in colorinterp]
            if descriptions is not None:
                ds.descriptions = tuple(descriptions)
            if tags:
                ds.update_tags(**tags)
            if mask is not None:
                ds.write_mask(mask)
        return path

    def reference(self, name: str = "ref/after.tif") -> Path:
        return self.raster(name)

    def csv(self, rows: list[tuple], header: str = "site_id,lon,lat", name: str = "sites.csv") -> Path:
        text = "\n".join([header] + [",".join(str(v) for v in r) for r in rows]) + "\n"
        p = self.path(name)
        p.write_text(text, encoding="utf-8")
        return p

    def raw(self, data: bytes | str, name: str) -> Path:
        p = self.path(name)
        if isinstance(data, str):
            p.write_text(data, encoding="utf-8")
        else:
            p.write_bytes(data)
        return p

    def probe_csv(self, lon: float = LON0, lat: float = LAT0) -> Path:
        return self.csv([(PROBE, repr(lon), repr(lat))])

    def geojson(self, features: list | str, name: str = "sites.geojson") -> Path:
        if isinstance(features, str):
            return self.raw(features, name)
        return self.raw(json.dumps({"type": "FeatureCollection", "features": features}), name)


def feature(geometry, **props) -> dict:
    return {"type": "Feature", "properties": {"site_id": PROBE, **props}, "geometry": geometry}


POINT = {"type": "Point", "coordinates": [LON0, LAT0]}


def same_ground(row: dict, pair) -> bool:  # noqa: ANN001
    """The two epochs' chips show the same ground (a reading, scaling or band-order bug would not)."""
    if pair is None or not pair.valid.all():
        return False
    corr = [np.corrcoef(pair.image[0, b].ravel(), pair.image[1, b].ravel())[0, 1] for b in range(3)]
    return min(corr) > 0.9


def at(lon: float, lat: float) -> Callable[[dict, object], bool]:
    def check(row: dict, pair) -> bool:  # noqa: ANN001
        return float(row["lon"]) == lon and float(row["lat"]) == lat and same_ground(row, pair)

    return check


# -- the corpus ---------------------------------------------------------------------------------------

CASES: dict[str, Callable[[Kit], tuple[Inputs, Expect]]] = {}


def case(fn: Callable[[Kit], tuple[Inputs, Expect]]) -> Callable[[Kit], tuple[Inputs, Expect]]:
    CASES[fn.__name__] = fn
    return fn


def _pair_with_before(k: Kit, before: Path, expect: Expect, **kw) -> tuple[Inputs, Expect]:  # noqa: ANN003
    return Inputs(k.probe_csv(), [before], [k.reference()], **kw), expect


# rasters ------------------------------------------------------------------------------------------


@case
def raster_zero_bytes(k):
    return Inputs(k.probe_csv(), [k.raw(b"", "b/empty.tif")], [k.reference()]), error("empty.tif", "before")


@case
def raster_text_file(k):
    return Inputs(k.probe_csv(), [k.raw("not a tiff", "b/notes.tif")], [k.reference()]), error("notes.tif")


@case
def raster_no_crs(k):
    return Inputs(k.probe_csv(), [k.raster("b/nocrs.tif", crs=None)], [k.reference()]), error("nocrs.tif", "CRS")


@case
def raster_gcps_only(k):
    p = k.raster("b/gcps.tif", crs=None)
    from rasterio.control import GroundControlPoint

    with rasterio.open(p, "r+") as ds:
        ds.gcps = ([GroundControlPoint(0, 0, MX, MY), GroundControlPoint(95, 95, MX + 48, MY - 48),
                    GroundControlPoint(0, 95, MX + 48, MY)], rasterio.crs.CRS.from_string(UTM))
    return Inputs(k.probe_csv(), [p], [k.reference()]), error("gcps.tif")


@case
def raster_truncated_after_catalogue(k):
    b = k.raster("b/trunc.tif", n=256)
    inputs = Inputs(k.probe_csv(), [b], [k.reference()])
    inputs.truncate = b  # type: ignore[attr-defined]
    return inputs, cannot("read_error", needles=("trunc",))


@case
def raster_one_2km_pixel(k):
    t = from_origin(MX - 1000, MY + 1000, 2000, 2000)
    return _pair_with_before(k, k.raster("b/coarse.tif", n=1, transform=t), cannot("too_coarse", needles=("2000",)))


@case
def raster_10m_pixels(k):
    return _pair_with_before(k, k.raster("b/ten.tif", n=20, res=10.0), cannot("too_coarse", needles=("tiles.max_native_gsd_ratio",)))


@case
def raster_all_zero_no_nodata(k):
    return _pair_with_before(k, k.raster("b/black.tif", values=lambda img: np.zeros_like(img)), cannot("mostly_nodata"))


@case
def raster_all_nan(k):
    return _pair_with_before(k, k.raster("b/nan.tif", dtype="float32", values=lambda img: img * np.nan), cannot("mostly_nodata"))


@case
def raster_inf_over_site(k):
    def edit(d):
        d[:, 20:76, 20:76] = np.inf

    return _pair_with_before(k, k.raster("b/inf.tif", dtype="float32", edit=edit), cannot("mostly_nodata"))


@case
def raster_nan_nodata_over_site(k):
    def edit(d):
        d[:, 30:70, :] = np.nan

    return _pair_with_before(k, k.raster("b/nann.tif", dtype="float32", nodata=float("nan"), edit=edit),
                             cannot("mostly_nodata"))


@case
def raster_nodata_zero_over_site(k):
    def edit(d):
        d[:, 30:70, :] = 0

    return _pair_with_before(k, k.raster("b/nd.tif", nodata=0, edit=edit), cannot("mostly_nodata"))


@case
def raster_constant_uint16(k):
    return _pair_with_before(k, k.raster("b/flat.tif", dtype="uint16", values=lambda img: img * 0 + 1000),
                             cannot("blank", "cloud"))


@case
def raster_all_white(k):
    return _pair_with_before(k, k.raster("b/white.tif", values=lambda img: img * 0 + 255), cannot("blank"))


@case
def raster_int16_negative(k):
    return _pair_with_before(k, k.raster("b/i16.tif", dtype="int16", values=lambda img: img * 3000 - 1500), ok(same_ground))


@case
def raster_uint32(k):
    return _pair_with_before(k, k.raster("b/u32.tif", dtype="uint32", values=lambda img: img * 4e6), ok(same_ground))


@case
def raster_float64_unit(k):
    return _pair_with_before(k, k.raster("b/f64.tif", dtype="float64", values=lambda img: img), ok(same_ground))


@case
def raster_uint16_11bit(k):
    return _pair_with_before(k, k.raster("b/u11.tif", dtype="uint16", values=lambda img: img * 2047), ok(same_ground))


@case
def raster_uint16_dim(k):
    return _pair_with_before(k, k.raster("b/dim.tif", dtype="uint16", values=lambda img: img * 200 + 10), ok(same_ground))


@case
def raster_shared_names_different_ranges(k):
    b = k.raster("before/scene.tif", dtype="uint16", values=lambda img: img * 300)
    a = k.raster("after/scene.tif", dtype="uint16", values=lambda img: img * 2047 + 5000)
    return Inputs(k.probe_csv(), [b], [a]), ok(same_ground)


@case
def raster_two_bands(k):
    return _pair_with_before(k, k.raster("b/two.tif", bands="RG", colorinterp=["gray", "undefined"]),
                             cannot("read_error", needles=("tiles.bands", "two.tif")))


@case
def raster_one_band(k):
    def grey_ok(row, pair):  # noqa: ANN001
        return pair is not None and row["before_band_source"] == "single_band" and pair.valid.all()

    return _pair_with_before(k, k.raster("b/grey.tif", bands="G"), ok(grey_ok))


@case
def raster_bgrn_tagged(k):
    b = k.raster("b/bgrn.tif", bands="BGRN", colorinterp=["blue", "green", "red", "undefined"])
    return _pair_with_before(k, b, ok(lambda row, pair: row["before_bands"] == "3,2,1" and same_ground(row, pair)))


@case
def raster_bgrn_described(k):
    b = k.raster("b/bgrn.tif", bands="BGRN", colorinterp=["gray"] + ["undefined"] * 3,
                 descriptions=["Blue", "Green", "Red", "NIR"])
    return _pair_with_before(k, b, ok(lambda row, pair: row["before_band_source"] == "band_description" and same_ground(row, pair)))


@case
def raster_five_bands_untagged(k):
    b = k.raster("b/five.tif", bands="RGBNN", colorinterp=["gray"] + ["undefined"] * 4)
    return _pair_with_before(k, b, ok(lambda row, pair: row["before_band_source"] == "tiles.bands" and same_ground(row, pair)))


@case
def raster_alpha_transparent(k):
    b = k.raster("b/rgba.tif", bands="RGBA", values=lambda img: np.concatenate([img[:3] * 255, img[3:] * 0]),
                 colorinterp=["red", "green", "blue", "alpha"])
    return _pair_with_before(k, b, cannot("mostly_nodata"))


@case
def raster_mask_all_invalid(k):
    return _pair_with_before(k, k.raster("b/masked.tif", mask=np.zeros((96, 96), np.uint8)), cannot("mostly_nodata"))


@case
def raster_black_collar_over_site(k):
    def edit(d):
        d[:, :, 24:] = 0  # from 12 m west of the site to the east edge

    return _pair_with_before(k, k.raster("b/collar.tif", edit=edit), cannot("mostly_nodata"))


@case
def raster_black_roof_inside(k):
    def edit(d):
        d[:, 44:52, 44:52] = 0  # 4 m black roof at the site, not touching the edge

    def roof_is_data(row, pair):  # noqa: ANN001
        return pair is not None and bool(pair.valid.all()) and float(pair.image[0][:, 14:18, 14:18].max()) < 0.05

    return _pair_with_before(k, k.raster("b/roof.tif", edit=edit), ok(roof_is_data))


@case
def raster_south_up(k):
    n, res = 96, 0.5
    t = Affine(res, 0, MX - n * res / 2, 0, res, MY - n * res / 2)  # row 0 is the south edge
    return _pair_with_before(k, k.raster("b/southup.tif", transform=t), ok(same_ground))


@case
def raster_rotated(k):
    n, res = 140, 0.5
    t = Affine.translation(MX, MY) * Affine.rotation(30) * Affine.translation(-n * res / 2, n * res / 2) * Affine.scale(res, -res)
    return _pair_with_before(k, k.raster("b/rot.tif", n=n, transform=t), ok(same_ground))


@case
def raster_far_away(k):
    t = from_origin(MX + 50_000, MY, 0.5, 0.5)
    return _pair_with_before(k, k.raster("b/far.tif", transform=t), cannot("outside_before_coverage"))


@case
def raster_bad_time_tag(k):
    b = k.raster("b/t.tif", tags={"ACQUISITION_DATETIME": "yesterday"})
    return _pair_with_before(k, b, ok(lambda row, pair: row["before_time_source"] == "unknown" and same_ground(row, pair)))


@case
def raster_bad_sidecar(k):
    b = k.raster("b/side.tif")
    k.raw("{not json", "b/side.tif.json")
    return _pair_with_before(k, b, ok(same_ground))


@case
def raster_same_file_both_epochs(k):
    r = k.raster("both.tif")
    return Inputs(k.probe_csv(), [r], [r]), ok(same_ground)


@case
def raster_one_broken_among_good(k):
    good = k.raster("b/good.tif")
    k.raw(b"II*\x00garbage", "b/bad.tif")
    return Inputs(k.probe_csv(), [good.parent], [k.reference()]), ok(same_ground)


@case
def raster_complex_sar(k):
    b = k.raster("b/slc.tif", dtype="complex64", bands="G", values=lambda img: img * (1 + 1j))
    return _pair_with_before(k, b, error("slc.tif", "complex"))


@case
def raster_antimeridian_utm60(k):
    x0, y0 = Transformer.from_crs("EPSG:4326", "EPSG:32660", always_xy=True).transform(180.0, 65.0)
    t = from_origin(x0 - 50, y0 + 50, 0.5, 0.5)
    noise = np.random.default_rng(1).integers(30, 220, (3, 200, 200)).astype(np.uint8)
    p = k.path("both/am.tif")
    with rasterio.open(p, "w", driver="GTiff", width=200, height=200, count=3, dtype="uint8", crs="EPSG:32660", transform=t) as ds:
        ds.write(noise)
    sites = k.csv([(PROBE, -179.9998, 65.0), ("west", 179.9998, 65.0)])
    return Inputs(sites, [p], [p], extra_probes={"west": ok(same_ground)}), ok(same_ground)


@case
def raster_web_mercator_across_180(k):
    x0, y0 = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(179.9998, -16.0)
    t = from_origin(x0 - 25, y0 + 50, 0.5, 0.5)
    p = k.path("both/merc.tif")
    with rasterio.open(p, "w", driver="GTiff", width=200, height=200, count=3, dtype="uint8", crs="EPSG:3857", transform=t) as ds:
        ds.write(np.random.default_rng(2).integers(30, 220, (3, 200, 200)).astype(np.uint8))
    return Inputs(k.csv([(PROBE, -179.9998, -16.0)]), [p], [p]), cannot("outside_before_coverage", needles=("antimeridian",))


# site files -----------------------------------------------------------------------------------------


def _sites_case(k: Kit, sites: Path, expect: Expect, **kw) -> tuple[Inputs, Expect]:  # noqa: ANN003
    r = k.reference("ref/before.tif")
    return Inputs(sites, [r], [k.reference()], **kw), expect


def _csv_value_case(lon: str, lat: str, *needles: str):
    def build(k):
        return _sites_case(k, k.csv([(PROBE, lon, lat)]), cannot("invalid_site", needles=needles))

    return build


for _name, (_lon, _lat, _needles) in {
    "csv_underscore_number": ("1_5.2", str(LAT0), ("lon", "not a number")),
    "csv_hex_number": ("0x1F", str(LAT0), ("not a number",)),
    "csv_nan": ("nan", str(LAT0), ("not a finite number",)),
    "csv_inf": (str(LON0), "-inf", ("not a finite number",)),
    "csv_overflow": ("1e400", str(LAT0), ("not a finite number",)),
    "csv_empty_coordinate": ("", str(LAT0), ("lon is empty",)),
    "csv_lat_out_of_range": (str(LAT0), "95", ("out of range", "swapped")),
    "csv_comma_decimal": ('"15,2"', str(LAT0), ("not a number",)),
    "csv_arabic_digits": ("\u0661\u0665.\u0662", str(LAT0), ("not a number",)),
}.items():
    CASES[_name] = _csv_value_case(_lon, _lat, *_needles)


@case
def csv_swapped_in_range(k):
    return _sites_case(k, k.csv([(PROBE, LAT0, LON0)]), cannot("outside_before_coverage", needles=("swapped",)))


@case
def csv_long_id(k):
    sites = k.csv([("x" * 300, LON0, LAT0), ("x" * 299 + "y", LON0, LAT0)])
    return _sites_case(k, sites, ok(same_ground), probe="x" * 300, extra_probes={"x" * 299 + "y": ok(same_ground)})


@case
def csv_path_like_ids(k):
    sites = k.csv([(PROBE, LON0, LAT0), ("../etc/passwd", LON0, LAT0), (".", LON0, LAT0), ("a/b", LON0, LAT0)])
    return _sites_case(k, sites, ok(same_ground), extra_probes={i: ok(same_ground) for i in ("../etc/passwd", ".", "a/b")})


@case
def csv_unicode_id(k):
    return _sites_case(k, k.csv([("hôpital-🏥", LON0, LAT0)]), ok(same_ground), probe="hôpital-🏥")


@case
def csv_formula_name(k):
    def neutral(row, pair):  # noqa: ANN001
        return row["name"] == "'=HYPERLINK(\"http://x\")" and row["site_id"] == "'=1" and same_ground(row, pair)

    sites = k.csv([("=1", LON0, LAT0, '"=HYPERLINK(""http://x"")"')], header="site_id,lon,lat,name")
    return _sites_case(k, sites, ok(neutral), probe="=1")


@case
def csv_huge_radius(k):
    sites = k.csv([(PROBE, LON0, LAT0, "1e9")], header="site_id,lon,lat,radius_m")
    return _sites_case(k, sites, cannot("mostly_nodata"))  # capped at max_chip_size_m: mostly outside the scene


@case
def csv_negative_radius(k):
    sites = k.csv([(PROBE, LON0, LAT0, "-5")], header="site_id,lon,lat,radius_m")
    return _sites_case(k, sites, ok(lambda row, pair: row["radius_m"] == "" and same_ground(row, pair)))


@case
def csv_bom_and_blank_lines(k):
    return _sites_case(k, k.raw(f"\ufeffsite_id,lon,lat\n\n{PROBE},{LON0},{LAT0}\n\n", "s.csv"), ok(at(LON0, LAT0)))


@case
def csv_quoted_newline(k):
    sites = k.raw(f'site_id,lon,lat,name\n{PROBE},{LON0},{LAT0},"a\nb"\n', "s.csv")
    return _sites_case(k, sites, ok(lambda row, pair: row["name"] == "a\nb" and same_ground(row, pair)))


for _name, (_content, _needles) in {
    "csv_empty": (b"", ("is empty",)),
    "csv_header_only": (b"site_id,lon,lat\n", ("no site rows",)),
    "csv_missing_column": (b"site_id,lon\np,1\n", ("missing required column", "lat")),
    "csv_semicolons": (b"site_id;lon;lat\np;1;2\n", ("not comma-separated",)),
    "csv_latin1": ("site_id,lon,lat,name\np,1,2,Caf\u00e9\n".encode("latin-1"), ("not valid UTF-8", "line 2")),
    "csv_duplicate_id": (b"site_id,lon,lat\np,1,2\np,1,2\n", ("row 2", "duplicates row 1")),
    "csv_extra_field": (b"site_id,lon,lat\np,1,2,3\n", ("row 1", "4 fields")),
    "csv_huge_field": (b"site_id,lon,lat,name\np,1,2,\"" + b"y" * 200_000 + b"\"\n", ("row 1",)),
    "csv_unclosed_quote": (b'site_id,lon,lat,name\np,1,2,"abc\nq,1,2,x\nr,1,2,y\n', ("row 1", "quotes")),
    "csv_empty_id": (b"site_id,lon,lat\n,1,2\n", ("row 1", "site_id is empty")),
    "csv_nul_byte": (b"site_id,lon,lat\np\x00,1,2\n", ("line 2", "NUL")),
    "csv_utf16": ("site_id,lon,lat\np,1,2\n".encode("utf-16-le"), ("NUL", "UTF-8")),
    "geojson_not_json": (b"{nope", ("not valid JSON",)),
    "geojson_top_array": (b"[1, 2]", ("FeatureCollection",)),
    "geojson_deep_nesting": (b'{"type": "FeatureCollection", "features": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                             ("nested too deeply",)),
    "geojson_deep_unclosed": (b"[" * 100_000, ("nested too deeply",)),
    "geojson_list_properties": (json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": ["site_id", "p"], "geometry": POINT}]}).encode(), ("feature 1", "properties")),
    "geojson_string_feature": (json.dumps({"type": "FeatureCollection", "features": ["p"]}).encode(), ("feature 1",)),
    "geojson_crs_3857": (json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:3857"}},
                                     "features": [feature(POINT)]}).encode(), ("EPSG:3857",)),
    "geojson_crs_string": (json.dumps({"type": "FeatureCollection", "crs": "EPSG:3857", "features": [feature(POINT)]}).encode(),
                           ("EPSG:3857",)),
    "geojson_id_object": (json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"site_id": {"a": 1}}, "geometry": POINT}]}).encode(), ("feature 1", "site_id")),
    "geojson_duplicate_ids": (json.dumps({"type": "FeatureCollection", "features": [feature(POINT), feature(POINT)]}).encode(),
                              ("feature 2", "duplicates")),
    "geojson_no_features": (json.dumps({"type": "FeatureCollection", "features": []}).encode(), ("no features",)),
    "geojson_features_object": (json.dumps({"type": "FeatureCollection", "features": {}}).encode(), ("'features' list",)),
}.items():
    def _build(k, _content=_content, _needles=_needles, _name=_name):  # noqa: ANN001
        suffix = ".geojson" if _name.startswith("geojson") else ".csv"
        return _sites_case(k, k.raw(_content, "sites" + suffix), error("sites" + suffix, *_needles))

    CASES[_name] = _build


for _name, (_geometry, _needles) in {
    "geojson_string_geometry": ("POINT (15.2 45.1)", ("not a GeoJSON geometry",)),
    "geojson_point_one_number": ({"type": "Point", "coordinates": [LON0]}, ("Point coordinates",)),
    "geojson_point_nested": ({"type": "Point", "coordinates": [[LON0, LAT0]]}, ("Point coordinates",)),
    "geojson_point_strings": ({"type": "Point", "coordinates": [str(LON0), str(LAT0)]}, ("not a JSON number",)),
    "geojson_point_bool": ({"type": "Point", "coordinates": [True, LAT0]}, ("not a JSON number",)),
    "geojson_point_nan": ({"type": "Point", "coordinates": [float("nan"), LAT0]}, ("not a finite number",)),
    "geojson_point_infinity": ({"type": "Point", "coordinates": [LON0, float("inf")]}, ("not a finite number",)),
    "geojson_point_huge": ({"type": "Point", "coordinates": [1e308, LAT0]}, ("out of range",)),
    "geojson_linestring": ({"type": "LineString", "coordinates": [[LON0, LAT0], [LON0, LAT0 + 0.001]]}, ("not supported",)),
    "geojson_polygon_two_points": ({"type": "Polygon", "coordinates": [[[LON0, LAT0], [LON0 + 1e-4, LAT0]]]}, ("at least 3",)),
    "geojson_polygon_flat_list": ({"type": "Polygon", "coordinates": [LON0, LAT0]}, ("list of rings",)),
    "geojson_multipolygon_empty": ({"type": "MultiPolygon", "coordinates": []}, ("non-empty",)),
    "geojson_geometry_list_type": ({"type": ["Point"], "coordinates": [LON0, LAT0]}, ("not supported",)),
    "geojson_geometry_missing": (None, ("geometry is missing",)),
}.items():
    def _build_geom(k, _geometry=_geometry, _needles=_needles):  # noqa: ANN001
        return _sites_case(k, k.geojson([feature(_geometry)]), cannot("invalid_site", needles=_needles))

    CASES[_name] = _build_geom


@case
def geojson_nested_property(k):
    f = feature(POINT, deep=json.loads("[" * 200 + "]" * 200), tags={"a": [1, 2]})
    return _sites_case(k, k.geojson([f]), ok(lambda row, pair: row["tags"] == '{"a": [1, 2]}' and same_ground(row, pair)))


@case
def geojson_polygon_footprint(k):
    d = 0.00005
    ring = [[LON0 - d, LAT0 - d], [LON0 + d, LAT0 - d], [LON0 + d, LAT0 + d], [LON0 - d, LAT0 + d], [LON0 - d, LAT0 - d]]
    return _sites_case(k, k.geojson([feature({"type": "Polygon", "coordinates": [ring]})]), ok(same_ground))


@case
def geojson_bom_integer_id(k):
    doc = json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": 7, "properties": None, "geometry": POINT}]})
    return _sites_case(k, k.raw("\ufeff" + doc, "s.geojson"), ok(at(LON0, LAT0)), probe="7")


# -- the runner ---------------------------------------------------------------------------------------

OUTCOMES: dict[str, str] = {}


def run_case(name: str, root: Path) -> tuple[str, str]:
    """Run one case; returns ``(outcome, explanation)``."""
    k = Kit(root)
    inputs, expect = CASES[name](k)
    try:
        from tiles.sites import read_sites

        sites = read_sites(inputs.sites)
        before = RasterCatalog.from_paths(inputs.before, epoch="before")
        after = RasterCatalog.from_paths(inputs.after, epoch="after")
        trunc = getattr(inputs, "truncate", None)
        if trunc is not None:
            data = trunc.read_bytes()
            trunc.write_bytes(data[: len(data) // 3])
        out = root / "out"
        write_tiles_folder(sites, before, after, out, inputs.config, progress=False)
    except SitewatchError as exc:
        msg = str(exc)
        if expect.kind == "error" and all(n in msg for n in expect.needles):
            return "clear_error", msg
        return "silent_wrong", f"error {msg!r}, expected {expect}"
    except Exception as exc:  # noqa: BLE001 - the corpus counts tracebacks
        return "crash", f"{type(exc).__name__}: {exc}"
    if expect.kind == "error":
        return "silent_wrong", "finished, expected an error"
    rows = {r["site_id"].removeprefix("'"): r for r in csv.DictReader((out / "index.csv").open(encoding="utf-8"))}
    probes = {inputs.probe: expect, **inputs.extra_probes}
    results = []
    for sid, exp in probes.items():
        row = rows.get(sid)
        if row is None:
            return "silent_wrong", f"site {sid!r} missing from index.csv"
        pair = read_pair_npz(out / row["pair_file"]) if row["pair_file"] else None
        if exp.kind == "cannot_assess":
            if row["status"] != "cannot_assess":
                return "silent_wrong", f"{sid}: ok, expected cannot_assess {exp.reasons}"
            if row["reason"] not in exp.reasons or not row["detail"] or not all(n in row["detail"] for n in exp.needles):
                return "silent_wrong", f"{sid}: {row['reason']} {row['detail']!r}, expected {exp.reasons} {exp.needles}"
            results.append("cannot_assess")
        else:
            if row["status"] != "ok":
                return "silent_wrong", f"{sid}: {row['reason']} {row['detail']!r}, expected ok"
            if exp.check is not None and not exp.check(row, pair):
                return "silent_wrong", f"{sid}: ok but the content check failed"
            results.append("ok")
    return results[0], ""


@pytest.mark.parametrize("name", sorted(CASES))
def test_fuzz_case(name, tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    t = time.perf_counter()
    outcome, why = run_case(name, tmp_path)
    OUTCOMES[name] = outcome
    assert outcome in ("clear_error", "cannot_assess", "ok"), f"{name}: {outcome}: {why}"
    assert time.perf_counter() - t < 20.0, f"{name} took {time.perf_counter() - t:.1f} s"


def test_corpus_summary():
    """Runs after the cases (file order); prints the counts the issue asks for."""
    if len(OUTCOMES) < len(CASES):
        pytest.skip("run the whole module for the summary")
    counts = {k: sum(v == k for v in OUTCOMES.values()) for k in ("clear_error", "cannot_assess", "ok", "silent_wrong", "crash")}
    rasters = sum(n.startswith("raster") for n in CASES)
    print(f"\nfuzz corpus: {len(CASES)} cases ({rasters} rasters, {len(CASES) - rasters} site files): "
          f"clear errors {counts['clear_error']}, cannot_assess {counts['cannot_assess']}, ok {counts['ok']}, "
          f"silent wrong {counts['silent_wrong']}, crashes {counts['crash']}")
    assert counts["silent_wrong"] == 0 and counts["crash"] == 0
    assert len(CASES) >= 80 and min(counts["clear_error"], counts["cannot_assess"], counts["ok"]) >= 15
    assert math.isfinite(sum(counts.values()))
