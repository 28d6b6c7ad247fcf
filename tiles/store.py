"""The pair store written by ``sitewatch tiles``: one compressed ``.npz`` per site.

Each file ``pairs/<safe_name>.npz`` holds ``image`` (float16 ``(2, C, H, W)`` in ``[0, 1]``),
``valid`` (bool ``(2, H, W)``), and ``meta`` (a JSON string with the site and the
:class:`~tiles.types.PairMeta`). Later stages stream them with :func:`iter_pairs`. float16 keeps
about 3 decimal digits, far below the 8-bit precision of the imagery.
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from sitewatch.errors import InputError
from tiles.chips import safe_name
from tiles.types import Pair, PairMeta, Site

_SITE_FIELDS = frozenset(f.name for f in dataclasses.fields(Site))
_META_FIELDS = frozenset(f.name for f in dataclasses.fields(PairMeta))

__all__ = ["write_pair_npz", "read_pair_npz", "iter_pairs"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"__datetime__": value.isoformat()}
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": str(value)}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _unjson(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__datetime__"}:
            return datetime.fromisoformat(value["__datetime__"])
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: _unjson(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unjson(v) for v in value]
    return value


def write_pair_npz(pair: Pair, folder: str | Path) -> Path | None:
    """Write one pair as ``<folder>/<safe_name>.npz``; None (nothing written) without an image."""
    if pair.image is None or pair.valid is None:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "site": _jsonable(dataclasses.asdict(pair.site)),
        "meta": _jsonable(dataclasses.asdict(pair.meta)),
    }
    path = folder / f"{safe_name(pair.site.site_id)}.npz"
    np.savez_compressed(
        path, image=pair.image.astype(np.float16), valid=pair.valid.astype(bool), meta=np.array(json.dumps(meta))
    )
    return path


def read_pair_npz(path: str | Path) -> Pair:
    """Read a pair written by :func:`write_pair_npz` (image back as float32).

    Raises:
        InputError: the file is missing or not a pair file.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            image = z["image"].astype(np.float32)
            valid = z["valid"].astype(bool)
            meta = json.loads(str(z["meta"]))
        site_d = _unjson(meta["site"])
        meta_d = _unjson(meta["meta"])
        site = Site(**{k: v for k, v in site_d.items() if k in _SITE_FIELDS})
        pm = PairMeta(**{k: v for k, v in meta_d.items() if k in _META_FIELDS})
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"pair file {path}: cannot be read as a sitewatch pair ({type(exc).__name__}: {exc})") from None
    return Pair(site=site, meta=pm, image=image, valid=valid)


def iter_pairs(folder: str | Path) -> Iterator[Pair]:
    """Stream every pair in a ``sitewatch tiles`` output folder (or its ``pairs/``), by file name."""
    folder = Path(folder)
    if (folder / "pairs").is_dir():
        folder = folder / "pairs"
    for path in sorted(folder.glob("*.npz")):
        yield read_pair_npz(path)
