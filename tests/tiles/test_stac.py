"""STAC catalogues as raster inputs: same pairs (and same detect scores) as the plain folders."""

from __future__ import annotations

import csv
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pystac
import pytest

from sitewatch.errors import RasterError
from tests.detect.conftest import TinyScene, make_tiny_scene
from tiles.catalog import RasterCatalog
from tiles.config import TilesConfig
from tiles.cut import PairCutter
from tiles.sites import read_sites
from tiles.stac import is_stac_file, read_stac_scenes


def _item(tif: Path, item_id: str, when: datetime, *, href: str | None = None) -> pystac.Item:
    item = pystac.Item(
        id=item_id,
        geometry=None,
        bbox=None,
        datetime=when,
        properties={
            "platform": "worldview-3",
            "constellation": "maxar",
            "gsd": 0.5,
            "view:off_nadir": 12.5,
            "eo:cloud_cover": 3.0,
            "license": "CC-BY-NC-4.0",
            "providers": [{"name": "Maxar", "roles": ["producer", "licensor"]}],
        },
    )
    item.add_asset("visual", pystac.Asset(href=href or str(tif), media_type=pystac.MediaType.COG, roles=["visual"]))
    return item


def _catalogue(scene: TinyScene, folder: Path) -> tuple[Path, Path]:
    """A Catalog (relative asset hrefs, self-contained) for before and an ItemCollection for after."""
    cat = pystac.Catalog(id="before", description="generated before scenes")
    cat.add_item(_item(scene.before / "before_scene.tif", "wv3-before-001", datetime(2021, 5, 1, 10, tzinfo=timezone.utc)))
    cat.normalize_hrefs(str(folder / "before_cat"))
    # assets beside the items, referenced relatively
    for item in cat.get_items():
        asset = item.assets["visual"]
        target = Path(item.get_self_href()).parent / "scene.tif"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(asset.href, target)
        asset.href = "./scene.tif"
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    after = pystac.ItemCollection(
        [_item(scene.after / "after_scene.tif", "wv3-after-001", datetime(2021, 9, 1, 10, tzinfo=timezone.utc))]
    )
    after_path = folder / "after_items.json"
    after.save_object(str(after_path))
    return folder / "before_cat" / "catalog.json", after_path


@pytest.fixture(scope="module")
def stac_scene(tmp_path_factory) -> tuple[TinyScene, Path, Path]:
    root = tmp_path_factory.mktemp("stac_scene")
    scene = make_tiny_scene(root / "scene", n_side=3, size_px=384)
    b, a = _catalogue(scene, root)
    return scene, b, a


def test_stac_files_are_recognised(stac_scene):
    scene, b, a = stac_scene
    assert is_stac_file(b) and is_stac_file(a)
    assert not is_stac_file(scene.sites)
    scenes, skipped = read_stac_scenes(b)
    assert skipped == [] and len(scenes) == 1
    s = scenes[0]
    assert s.item_id == "wv3-before-001" and s.path.name == "scene.tif" and s.path.is_file()
    assert s.platform == "worldview-3 (maxar)" and s.gsd_m == 0.5 and s.off_nadir == 12.5 and s.cloud_cover == 3.0
    assert s.credit == "Maxar (producer, licensor); CC-BY-NC-4.0"


def test_stac_gives_the_same_pairs_as_plain_folders(stac_scene):
    scene, b, a = stac_scene
    sites = read_sites(scene.sites)
    cfg = TilesConfig()
    plain_b = RasterCatalog.from_paths(scene.before, epoch="before")
    plain_a = RasterCatalog.from_paths(scene.after, epoch="after")
    stac_b = RasterCatalog.from_paths(b, epoch="before")
    stac_a = RasterCatalog.from_paths(a, epoch="after")
    assert [s.scene_id for s in stac_b.scenes] == ["wv3-before-001"]
    assert stac_b.scenes[0].time_source == "stac"
    assert stac_b.scenes[0].acquired == plain_b.scenes[0].acquired
    with PairCutter(plain_b, plain_a, cfg) as c1, PairCutter(stac_b, stac_a, cfg) as c2:
        for p1, p2 in zip(c1.cut_many(sites), c2.cut_many(sites)):
            assert p1.meta.status == p2.meta.status
            if p1.image is not None:
                np.testing.assert_array_equal(p1.image, p2.image)
            assert p2.meta.before_scene == "wv3-before-001" and p2.meta.after_credit.startswith("Maxar")
            assert p2.meta.before_off_nadir == 12.5 and p2.meta.after_platform == "worldview-3 (maxar)"


def test_remote_assets_are_reported_with_how_to_download(tmp_path):
    coll = pystac.ItemCollection(
        [_item(tmp_path / "x.tif", "remote-1", datetime(2021, 1, 1, tzinfo=timezone.utc), href="https://example.org/x.tif")]
    )
    path = tmp_path / "items.json"
    coll.save_object(str(path))
    scenes, skipped = read_stac_scenes(path)
    assert scenes == [] and "remote URL" in skipped[0][1] and "download" in skipped[0][1]
    with pytest.raises(RasterError) as err:
        RasterCatalog.from_paths(path, epoch="after")
    assert "remote-1" in str(err.value) and "local files" in str(err.value)


def test_detect_run_from_stac_matches_plain_folders(stac_scene, tmp_path):
    from detect.config import DetectConfig
    from detect.run import run_detect

    scene, b, a = stac_scene
    cfg = DetectConfig(device="cpu", threads=1, chips_top_n=0, embeddings=False)
    plain = run_detect(scene.sites, [scene.before], [scene.after], tmp_path / "plain", detect=cfg, progress=False)
    stac = run_detect(scene.sites, [b], [a], tmp_path / "stac", detect=cfg, progress=False)

    def scores(run: Path) -> dict[str, tuple[str, str]]:
        with open(run / "scores.csv", newline="", encoding="utf-8") as fh:
            return {r["site_id"]: (r["score"], r["status"]) for r in csv.DictReader(fh)}

    assert scores(plain.run_dir) == scores(stac.run_dir)
    with open(stac.run_dir / "scores.csv", newline="", encoding="utf-8") as fh:
        row = next(csv.DictReader(fh))
    assert row["before_scene"] == "wv3-before-001" and row["before_credit"] == "Maxar (producer, licensor); CC-BY-NC-4.0"
    assert row["after_cloud_cover"] == "3" and row["before_off_nadir"] == "12.5"
    manifest = json.loads((stac.run_dir / "manifest.json").read_text())
    entry = manifest["inputs"]["before"][0]
    assert entry["catalog_id"] == "wv3-before-001" and entry["platform"] == "worldview-3 (maxar)"
    assert "CC-BY-NC-4.0" in (stac.run_dir / "report.html").read_text()
