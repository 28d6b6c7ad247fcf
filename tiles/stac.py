"""STAC catalogues as raster inputs: a Catalog, Collection, ItemCollection or Item JSON file.

Read with ``pystac``. Every item gives one scene: its image asset (``visual``, ``image``,
``data`` or ``analytic``, else the first GeoTIFF asset with a ``data``/``visual`` role or none),
found by a relative href (relative to the item's own file, or to the catalogue file for an
ItemCollection) or an absolute path. From the item: ``datetime`` as the acquisition time,
``platform`` / ``constellation``, ``gsd``, ``view:off_nadir``, ``eo:cloud_cover``, the item id as
the scene's catalogue id, and the licence and providers (the item's, else its collection's) as
the credit line. These travel with the :class:`~tiles.catalog.SceneInfo` into ``index.csv``,
``scores.csv``, the manifest and the report.

An asset that is a remote URL (``https://``, ``s3://``, ...) is not fetched: this tool reads local
files. The item is skipped with a reason that says how to download it.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

log = logging.getLogger(__name__)

__all__ = ["StacScene", "is_stac_file", "read_stac_scenes"]

_TYPES = ("Catalog", "Collection", "FeatureCollection", "Feature")
_PREFERRED_ASSETS = ("visual", "image", "data", "analytic")
_TIFF_SUFFIXES = (".tif", ".tiff", ".gtiff")


@dataclass(frozen=True)
class StacScene:
    """What a STAC item says about one scene.

    Attributes:
        path: the local GeoTIFF of the item's image asset (absolute).
        item_id: the item id (the scene's catalogue id).
        acquired: the item's ``datetime`` (UTC), or None when the item has none.
        platform: ``platform`` (and ``constellation`` when it adds something), or ``""``.
        gsd_m: the item's ``gsd`` in metres, or NaN.
        off_nadir: ``view:off_nadir`` in degrees, or NaN.
        cloud_cover: ``eo:cloud_cover`` in percent, or NaN.
        credit: licence and providers, e.g. ``"Maxar (licensor, producer); CC-BY-NC-4.0"``.
        source: the catalogue file the item was read from.
    """

    path: Path
    item_id: str
    acquired: datetime | None
    platform: str
    gsd_m: float
    off_nadir: float
    cloud_cover: float
    credit: str
    source: Path


def is_stac_file(path: Path) -> bool:
    """A ``.json`` file whose top-level object is a STAC Catalog, Collection, ItemCollection or Item."""
    if path.suffix.lower() not in (".json", ".geojson") or not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(1 << 20)
        data = json.loads(head)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    if not isinstance(data, dict) or data.get("type") not in _TYPES:
        return False
    if "stac_version" in data:
        return True
    feats = data.get("features")
    return isinstance(feats, list) and any(isinstance(f, dict) and "stac_version" in f for f in feats[:5])


def _number(value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def _credit(item: Any) -> str:
    collection = None
    try:
        collection = item.get_collection()
    except Exception:  # noqa: BLE001 - a dangling collection link is not fatal
        collection = None
    props = item.properties
    licence = props.get("license") or (getattr(collection, "license", None) if collection is not None else None)
    providers = props.get("providers")
    names: list[str] = []
    if isinstance(providers, list) and providers:
        for p in providers:
            if isinstance(p, dict) and p.get("name"):
                roles = ", ".join(str(r) for r in p.get("roles") or [])
                names.append(f"{p['name']} ({roles})" if roles else str(p["name"]))
    elif collection is not None and getattr(collection, "providers", None):
        for p in collection.providers:
            roles = ", ".join(str(r) for r in (p.roles or []))
            names.append(f"{p.name} ({roles})" if roles else p.name)
    parts = []
    if names:
        parts.append(", ".join(names))
    if licence:
        parts.append(str(licence))
    return "; ".join(parts)


def _image_asset(item: Any) -> tuple[str, Any] | None:
    assets = dict(item.assets)
    for key in _PREFERRED_ASSETS:
        if key in assets:
            return key, assets[key]
    for key, asset in assets.items():
        media = (asset.media_type or "").lower()
        href = asset.href.split("?")[0].lower()
        roles = set(asset.roles or [])
        tiff = "tiff" in media or href.endswith(_TIFF_SUFFIXES)
        if tiff and (not roles or roles & {"data", "visual"}):
            return key, asset
    return None


def _local_path(href: str, base: Path) -> Path | None:
    """The local file of an href, or None when it is a remote URL."""
    parsed = urlparse(href)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and href[1:3] in (":\\", ":/")):
        text = unquote(parsed.path) if parsed.scheme == "file" else href
        p = Path(text).expanduser()
        return p if p.is_absolute() else (base / p)
    return None


def _items(path: Path) -> list[tuple[Any, Path]]:
    """``(item, folder its relative hrefs are resolved against)`` for every item in the file."""
    import pystac

    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("type") == "FeatureCollection":
        collection = pystac.ItemCollection.from_file(str(path))
        return [(item, path.parent) for item in collection]
    obj = pystac.read_file(str(path))
    if isinstance(obj, pystac.Item):
        return [(obj, path.parent)]
    if isinstance(obj, pystac.Catalog):  # Collection is a Catalog
        out = []
        for item in obj.get_items(recursive=True):
            href = item.get_self_href()
            out.append((item, Path(href).parent if href and _local_path(href, path.parent) else path.parent))
        return out
    raise ValueError(f"is a STAC {type(obj).__name__}, not a Catalog, Collection, ItemCollection or Item")


def read_stac_scenes(path: str | Path) -> tuple[list[StacScene], list[tuple[Path, str]]]:
    """Every item of a STAC file whose image asset is a local file, plus what was skipped.

    Args:
        path: a STAC Catalog / Collection / ItemCollection / Item JSON file.

    Returns:
        ``(scenes, skipped)`` where ``skipped`` holds ``(path or URL, reason)`` for items
        without a usable local image asset (remote URLs, missing files, no GeoTIFF asset).
    """
    path = Path(path).resolve()
    try:
        items = _items(path)
    except Exception as exc:  # noqa: BLE001 - pystac raises several types for broken catalogues
        return [], [(path, f"STAC file cannot be read ({type(exc).__name__}: {exc}); check it with stac-validator")]
    scenes: list[StacScene] = []
    skipped: list[tuple[Path, str]] = []
    for item, base in items:
        found = _image_asset(item)
        if found is None:
            skipped.append((path, f"STAC item {item.id!r} has no GeoTIFF image asset (looked for {', '.join(_PREFERRED_ASSETS)} or a .tif href)"))
            continue
        key, asset = found
        local = _local_path(asset.href, base)
        if local is None:
            skipped.append(
                (
                    path,
                    f"STAC item {item.id!r}: asset {key!r} is a remote URL ({asset.href}); sitewatch reads local "
                    "files only: download it first (e.g. curl -L -o scene.tif URL, aws s3 cp, or "
                    "stac-asset download CATALOG DIR) and give the downloaded catalogue or files",
                )
            )
            continue
        if not local.is_file():
            skipped.append((local, f"STAC item {item.id!r}: asset {key!r} file not found ({asset.href} from {base})"))
            continue
        props = item.properties
        when = item.datetime
        if when is not None:
            when = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
        platform = str(props.get("platform") or "")
        constellation = str(props.get("constellation") or "")
        if constellation and constellation.lower() not in platform.lower():
            platform = f"{platform} ({constellation})" if platform else constellation
        scenes.append(
            StacScene(
                path=local.resolve(),
                item_id=str(item.id),
                acquired=when,
                platform=platform,
                gsd_m=_number(props.get("gsd")),
                off_nadir=_number(props.get("view:off_nadir")),
                cloud_cover=_number(props.get("eo:cloud_cover")),
                credit=_credit(item),
                source=path,
            )
        )
    return scenes, skipped
