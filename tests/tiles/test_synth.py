"""Tests of the synthetic scene generator (tiles.synth) and ``sitewatch synth``."""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from sitewatch.cli import main
from sitewatch.errors import UsageError
from tiles.synth import GENERATOR_VERSION, SynthConfig, generate_dataset

#: small and quick: one 640 px region (320 m) at 0.5 m
SMALL = SynthConfig(sites=24, seed=5, size_px=640, destroyed_fraction=0.25, major_fraction=0.1, minor_fraction=0.1)


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "sites.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ds"
    generate_dataset(out, SMALL, progress=False)
    return out


def test_writes_labelled_dataset(small_dataset: Path) -> None:
    rows = _rows(small_dataset)
    assert len(rows) == SMALL.sites
    assert list(rows[0])[:6] == ["site_id", "lon", "lat", "kind", "radius_m", "damage"]
    counts = defaultdict(int)
    for r in rows:
        counts[r["damage"]] += 1
        assert float(r["radius_m"]) >= 3.0
        assert -180 <= float(r["lon"]) <= 180 and -90 <= float(r["lat"]) <= 90
    assert counts == {"destroyed": 6, "major-damage": 2, "minor-damage": 2, "no-damage": 14}
    assert len({r["site_id"] for r in rows}) == len(rows)
    for epoch in ("before", "after"):
        files = sorted((small_dataset / epoch).glob("*.tif"))
        assert files
        with rasterio.open(files[0]) as src:
            assert src.count == 3 and src.dtypes[0] == "uint8"
            assert src.crs.to_epsg() == 32633 and src.crs.is_projected
            assert src.res == pytest.approx((0.5, 0.5))
            assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
            assert "ACQUISITION_DATETIME" in src.tags()
            assert src.tags()["SYNTH_GENERATOR_VERSION"] == GENERATOR_VERSION
            assert src.nodata == 0
    with rasterio.open(next((small_dataset / "before").glob("*.tif"))) as b, rasterio.open(next((small_dataset / "after").glob("*.tif"))) as a:
        assert a.tags()["ACQUISITION_DATETIME"] > b.tags()["ACQUISITION_DATETIME"]


def test_same_seed_same_files_other_seed_differs(small_dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_dataset(again, SMALL, progress=False)
    assert (again / "sites.csv").read_bytes() == (small_dataset / "sites.csv").read_bytes()
    for epoch in ("before", "after"):
        for f in sorted((small_dataset / epoch).glob("*.tif")):
            with rasterio.open(f) as x, rasterio.open(again / epoch / f.name) as y:
                assert x.transform == y.transform
                assert np.array_equal(x.read(), y.read())
    other = tmp_path / "other"
    generate_dataset(other, replace(SMALL, seed=6), progress=False)
    assert (other / "sites.csv").read_bytes() != (small_dataset / "sites.csv").read_bytes()


def _chip_change(folder: Path, rows: list[dict[str, str]]) -> dict[str, list[float]]:
    """Mean absolute after-minus-before difference in a window on each site's roof (same grid)."""
    out: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        name = f"region{int(r['region']):03d}.tif"
        with rasterio.open(folder / "before" / name) as b, rasterio.open(folder / "after" / name) as a:
            assert a.transform == b.transform
            x, y = Transformer.from_crs("EPSG:4326", b.crs, always_xy=True).transform(float(r["lon"]), float(r["lat"]))
            row, col = b.index(x, y)
            k = max(int(0.45 * float(r["radius_m"]) / b.res[0]), 3)
            win = ((row - k, row + k), (col - k, col + k))
            before, after = b.read(window=win).astype(np.float32), a.read(window=win).astype(np.float32)
            assert before.shape == (3, 2 * k, 2 * k)
            out[r["damage"]].append(float(np.abs(after - before).mean()))
    return out


NO_NUISANCE = dict(
    sun_change=0.0, season_change=0.0, colour_shift=0.0, haze=0.0, noise=0.0, blur=0.0, misregistration=0.0,
    off_nadir=0.0, vehicles=0.0, construction=0.0, jpeg=0.0, clouds=0.0, nodata=0.0,
)


def test_labels_agree_with_pixels(tmp_path: Path) -> None:
    out = tmp_path / "clean"
    generate_dataset(out, replace(SMALL, **NO_NUISANCE), progress=False)
    change = _chip_change(out, _rows(out))
    destroyed = np.median(change["destroyed"])
    intact = np.median(change["no-damage"])
    # without nuisance an intact site hardly changes and a destroyed one changes a lot
    assert destroyed > 5.0 * intact, (destroyed, intact)
    assert min(change["destroyed"]) > max(change["no-damage"]), change
    assert np.median(change["major-damage"]) > 2.0 * intact


def test_reads_back_through_tiles_with_every_site_ok(small_dataset: Path) -> None:
    from tiles.catalog import RasterCatalog
    from tiles.config import TilesConfig
    from tiles.cut import PairCutter
    from tiles.sites import read_sites

    sites = read_sites(small_dataset / "sites.csv")
    before = RasterCatalog.from_paths([small_dataset / "before"], epoch="before")
    after = RasterCatalog.from_paths([small_dataset / "after"], epoch="after")
    with PairCutter(before, after, TilesConfig()) as cutter:
        pairs = list(cutter.cut_many(sites))
    assert [p.meta.status for p in pairs] == ["ok"] * len(sites), [(p.site.site_id, p.meta.reason) for p in pairs if not p.ok]
    assert all(p.site.damage for p in pairs)
    # with the default nuisance, after co-registration and normalisation by the tiles stage,
    # destroyed sites still change clearly more on the footprint than intact ones. (For scale:
    # the real xBD Santa Rosa dev pairs give medians 0.090 vs 0.055 through the same code, a
    # ratio of 1.6; intact buildings change too, through lean, shadows and colour.)
    change: dict[str, list[float]] = defaultdict(list)
    for p in pairs:
        n = p.image.shape[-1]
        k = max(int(p.site.radius_m / p.meta.chip_gsd_m), 3)
        c = slice(n // 2 - k, n // 2 + k)
        change[p.site.damage].append(float(np.abs(p.image[1][:, c, c] - p.image[0][:, c, c]).mean()))
    assert np.median(change["destroyed"]) > 1.6 * np.median(change["no-damage"]), change


@pytest.mark.slow
def test_crs_resolution_and_scenes_options(tmp_path: Path) -> None:
    cfg = replace(SMALL, sites=10, size_px=800, after_crs="EPSG:4326", after_gsd_m=0.7, scenes=2, crs="EPSG:32618")
    out = tmp_path / "opts"
    summary = generate_dataset(out, cfg, progress=False)
    before = sorted((out / "before").glob("*.tif"))
    after = sorted((out / "after").glob("*.tif"))
    assert len(before) == 2 * summary.regions and len(after) == 2 * summary.regions
    for f in before:
        with rasterio.open(f) as src:
            assert src.crs.to_epsg() == 32618 and src.res == pytest.approx((0.5, 0.5))
    for f in after:
        with rasterio.open(f) as src:
            assert src.crs.to_epsg() == 4326
            lat = (src.bounds.top + src.bounds.bottom) / 2
            # pixel size on the ground, from degrees
            gx = src.res[0] * 111320 * np.cos(np.radians(lat))
            gy = src.res[1] * 110540
            assert gx == pytest.approx(0.7, rel=0.02) and gy == pytest.approx(0.7, rel=0.02)
    # every site lies well inside at least one scene of each epoch
    rows = _rows(out)
    for files in (before, after):
        for r in rows:
            inside = False
            for f in files:
                with rasterio.open(f) as src:
                    x, y = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True).transform(float(r["lon"]), float(r["lat"]))
                    row, col = src.index(x, y)
                    m = int(40 / 0.7)
                    if m <= row < src.height - m and m <= col < src.width - m:
                        inside = inside or bool(src.read(1, window=((row, row + 1), (col, col + 1)))[0, 0] > 0)
            assert inside, (r["site_id"], [f.name for f in files])
    # the before strips overlap by scene_overlap_m
    with rasterio.open(before[0]) as s0, rasterio.open(before[1]) as s1:
        assert s0.bounds.right - s1.bounds.left == pytest.approx(cfg.scene_overlap_m, abs=1.0)


def test_nuisance_knobs_are_validated() -> None:
    with pytest.raises(ValueError, match="haze"):
        SynthConfig(haze=1.5)
    with pytest.raises(ValueError, match="sum to at most 1"):
        SynthConfig(destroyed_fraction=0.7, major_fraction=0.5)


def test_geographic_before_crs_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="projected CRS"):
        generate_dataset(tmp_path / "x", replace(SMALL, crs="EPSG:4326"), progress=False)


def test_cli_writes_dataset_and_gallery(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    rc = main(["synth", "--out", str(out), "--sites", "8", "--seed", "2", "--size-px", "512", "--preview", "--set", "synth.jpeg=0"])
    assert rc == 0
    assert len(_rows(out)) == 8
    assert (out / "gallery.png").stat().st_size > 1000
    assert "wrote 8 sites" in capsys.readouterr().out
    # an existing dataset is not overwritten by accident
    rc = main(["synth", "--out", str(out), "--sites", "8", "--size-px", "512"])
    assert rc == 2
    assert "--overwrite" in capsys.readouterr().err
    rc = main(["synth", "--out", str(tmp_path / "bad"), "--crs", "EPSG:4326", "--size-px", "512"])
    assert rc == 2
    assert "projected" in capsys.readouterr().err
    rc = main(["synth", "--out", str(tmp_path / "bad2"), "--set", "synth.haze=3"])
    assert rc == 2
    assert "haze" in capsys.readouterr().err


def test_interrupted_run_is_replaced_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    cfg = replace(SMALL, sites=4, size_px=384)
    generate_dataset(out, cfg, progress=False)
    (out / "sites.csv").unlink()  # as if killed before the last step
    (out / "before" / "stale.tif").write_bytes(b"not a tiff")
    generate_dataset(out, cfg, progress=False)
    assert len(_rows(out)) == 4
    assert not (out / "before" / "stale.tif").exists()


#: a small dense concrete city (earthquake collapse and strikes), one 640 px region
CONCRETE = replace(
    SMALL, sites=30, seed=11, concrete_fraction=1.0, urban_fraction=0.0, damage_styles=(0.0, 0.0, 0.0, 0.5, 0.5),
    destroyed_fraction=0.3, major_fraction=0.0, minor_fraction=0.0,
)


def test_concrete_city_is_dense_tall_and_flat_roofed() -> None:
    from tiles.synth.layout import STOREY_M, build_layout

    kw = dict(building_density=0.7, tree_density=0.5, facilities_per_km2=3.0, edge_margin_m=40.0)
    city = build_layout(np.random.default_rng(4), 500.0, 500.0, concrete=True, **kw)
    suburb = build_layout(np.random.default_rng(4), 500.0, 500.0, **kw)
    blocks = [b for b in city.buildings if b.kind in ("apartment", "commercial")]
    assert city.concrete and city.urban and not suburb.concrete
    def built_share(lay: object) -> float:
        area = 0.0
        for b in lay.buildings:  # type: ignore[attr-defined]
            for p in b.parts:
                x, y = p[:, 0], p[:, 1]
                area += 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
        return area / (500.0 * 500.0)

    # far more of the ground is built over than in a suburb
    assert built_share(city) > 2.0 * built_share(suburb), (built_share(city), built_share(suburb))
    heights = np.array([b.height_m for b in blocks])
    # 2-10 storey blocks (3-10 at the street front), flat roofs, most with water tanks / solar heaters
    assert heights.min() >= 2 * STOREY_M and heights.max() <= 10 * STOREY_M + 1.5
    assert np.median(heights) >= 4 * STOREY_M, np.median(heights)
    assert all(b.roof == "flat" for b in blocks)
    assert sum(b.rooftop == "tanks" for b in blocks) > 0.7 * len(blocks)
    narrow = [r.width_m for r in city.roads if not r.main]
    assert narrow and max(narrow) <= 7.0
    # mosques come with a minaret much taller than the hall, never a site
    big = build_layout(np.random.default_rng(5), 1000.0, 1000.0, concrete=True, **kw)
    halls = [b for b in big.buildings if b.kind == "mosque"]
    minarets = [b for b in big.buildings if b.kind == "minaret"]
    assert halls and len(minarets) == len(halls)
    assert all(b.rooftop == "dome" for b in halls)
    assert all(m.height_m > 20.0 and not m.site_ok for m in minarets)


def test_collapse_and_strike_damage_agree_with_pixels(tmp_path: Path) -> None:
    out = tmp_path / "quake"
    generate_dataset(out, replace(CONCRETE, **NO_NUISANCE), progress=False)
    rows = _rows(out)
    assert {r["damage_style"] for r in rows if r["damage"] == "destroyed"} <= {"collapse", "strike", "blast"}
    assert {r["damage_style"] for r in rows if r["damage"] == "destroyed"} & {"collapse", "strike"}
    change = _chip_change(out, rows)
    destroyed, intact = np.median(change["destroyed"]), np.median(change["no-damage"])
    # without nuisance a standing block hardly changes; a collapsed or struck one changes a lot
    # (pancaked blocks keep their roof slab on top, so not every destroyed site changes as much)
    assert destroyed > 4.0 * intact, (destroyed, intact)
    assert np.mean(np.array(change["destroyed"]) > max(np.percentile(change["no-damage"], 90), 1.0)) > 0.7, change


def test_new_nuisance_makes_hard_negatives_and_keeps_the_labels(tmp_path: Path) -> None:
    plain = replace(CONCRETE, **NO_NUISANCE)
    hard = replace(plain, off_nadir=1.0, max_off_nadir_deg=35.0, resolution_change=1.0, flood=1.0, winter=1.0, demolition=1.0)
    generate_dataset(tmp_path / "plain", plain, progress=False)
    generate_dataset(tmp_path / "hard", hard, progress=False)
    # the nuisance is drawn from its own streams: same sites, same labels
    assert (tmp_path / "plain" / "sites.csv").read_bytes() == (tmp_path / "hard" / "sites.csv").read_bytes()
    rows = _rows(tmp_path / "plain")
    calm = _chip_change(tmp_path / "plain", rows)["no-damage"]
    rough = _chip_change(tmp_path / "hard", rows)["no-damage"]
    # intact blocks now change a lot between epochs (lean of tall blocks, long winter shadows,
    # resolution, flood water): the look-change a model must learn to ignore
    assert np.median(rough) > 3.0 * np.median(calm), (np.median(rough), np.median(calm))
    with rasterio.open(next((tmp_path / "hard" / "before").glob("*.tif"))) as b, rasterio.open(next((tmp_path / "hard" / "after").glob("*.tif"))) as a:
        angles = [float(b.tags()["OFF_NADIR_DEG"]), float(a.tags()["OFF_NADIR_DEG"])]
        assert max(angles) <= 35.0 and angles[0] != angles[1]


def test_same_seed_same_concrete_city(tmp_path: Path) -> None:
    cfg = replace(CONCRETE, sites=12, off_nadir=1.0, resolution_change=0.8, flood=0.8, winter=0.8, demolition=0.8, randomise_nuisance=True)
    generate_dataset(tmp_path / "a", cfg, progress=False)
    generate_dataset(tmp_path / "b", cfg, progress=False)
    assert (tmp_path / "a" / "sites.csv").read_bytes() == (tmp_path / "b" / "sites.csv").read_bytes()
    for f in sorted((tmp_path / "a").rglob("*.tif")):
        with rasterio.open(f) as x, rasterio.open(tmp_path / "b" / f.relative_to(tmp_path / "a")) as y:
            assert np.array_equal(x.read(), y.read())


def test_world_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="damage_styles"):
        SynthConfig(damage_styles=(1.0, 0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="concrete_fraction"):
        SynthConfig(urban_fraction=0.6, concrete_fraction=0.6)
    with pytest.raises(ValueError, match="flood"):
        SynthConfig(flood=2.0)
    with pytest.raises(ValueError, match="after_gsd_m"):
        SynthConfig(after_gsd_m=0.0)
    assert SynthConfig(damage_styles=(0.4, 0.3, 0.3)).damage_styles == (0.4, 0.3, 0.3)
    assert SynthConfig().effective_after_gsd_m == SynthConfig().gsd_m


def test_regions_with_sports_fields_render() -> None:
    from tiles.synth import plan_region, render_region_epoch

    # many hospital/school compounds: some have sports fields (a drawing path of its own)
    cfg = replace(SMALL, sites=6, size_px=512, facilities_per_km2=40.0)
    region = None
    for index in range(6):
        region = plan_region(cfg, index, ["no-damage"] * 6)
        if region is not None and any(c.yard == "sports" for c in region.layout.compounds):
            break
    assert region is not None and any(c.yard == "sports" for c in region.layout.compounds)
    for style in (region.before, region.after):
        img = render_region_epoch(region.layout, region.fields, style, size_px=region.size_px, pad_px=region.pad_px)
        assert img.shape == (512, 512, 3) and img.dtype == np.uint8 and img.min() >= 1
