"""Labelled pair datasets: project-format folders, ``synth:N`` and ``xbd:PATH``, cached.

A DATASET argument of ``sitewatch train`` / ``sitewatch evaluate`` is one of:

* a folder with ``sites.csv`` (``damage`` or ``label`` column), ``before/`` and ``after/``
  rasters: cut through :class:`tiles.cut.PairCutter` with the job's tiles settings;
* ``synth:N``: ``N`` synthetic sites made by :func:`tiles.synth.generate_dataset` into the
  cache, then read like a folder;
* ``xbd:PATH``: the public xBD layout (see :mod:`train.xbd`).

Cut pairs are cached as one ``.npz`` per dataset keyed by a hash of the input files and the
tiles settings, stored as uint8 ``(N, 2, C, H, W)``, so epochs never re-read rasters and a
second run starts at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from sitewatch.config import config_to_dict
from sitewatch.errors import InputError, UsageError
from sitewatch.hashing import sha256_file as file_sha256
from tiles.config import TilesConfig
from tiles.types import damage_to_label

log = logging.getLogger(__name__)

#: bump when the cached array layout or the cutting semantics change
CACHE_VERSION = 1
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


@dataclass(frozen=True)
class PairSet:
    """Labelled before/after pairs held in memory.

    Attributes:
        images: uint8 array ``(N, 2, C, H, W)`` (before, after), ``value / 255`` is the pair.
        labels: int8 ``(N,)``: 1 = major-damage/destroyed, 0 = no-damage.
        groups: ``(N,)`` str: the area each site belongs to (tile or scene), for grouped splits.
        site_ids: ``(N,)`` str.
        lon, lat: float64 ``(N,)`` WGS84 degrees (NaN where unknown, e.g. xBD without geo).
        scenes: ``(N,)`` str: before scene id of each pair.
        damage: ``(N,)`` str: the original damage class.
        name: short name of the source (for logs and reports).
        data_hash: SHA-256 over the source files (sites and rasters) and the cutting settings.
        gsd_m: chip ground sample distance in metres per pixel.
    """

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    site_ids: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    scenes: np.ndarray
    damage: np.ndarray
    name: str
    data_hash: str
    gsd_m: float

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def positives(self) -> int:
        return int(self.labels.sum())

    def subset(self, idx: np.ndarray) -> PairSet:
        """The pairs at ``idx`` (same name and hash)."""
        idx = np.asarray(idx, dtype=np.int64)
        return dataclasses.replace(
            self,
            images=self.images[idx],
            labels=self.labels[idx],
            groups=self.groups[idx],
            site_ids=self.site_ids[idx],
            lon=self.lon[idx],
            lat=self.lat[idx],
            scenes=self.scenes[idx],
            damage=self.damage[idx],
        )

    def as_float(self, idx: np.ndarray | slice | None = None) -> np.ndarray:
        """float32 ``(n, 2, C, H, W)`` in [0, 1]."""
        arr = self.images if idx is None else self.images[idx]
        return arr.astype(np.float32) / 255.0

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self)} pairs ({self.positives} positive), "
            f"{np.unique(self.groups).size} groups"
        )


def concat_pairsets(sets: list[PairSet]) -> PairSet:
    """Concatenate pair sets (group ids are prefixed with each set's name so they stay apart)."""
    if not sets:
        raise InputError("no dataset given; pass --data DATASET at least once")
    if len(sets) == 1:
        return sets[0]
    shapes = {s.images.shape[1:] for s in sets if len(s)}
    if len(shapes) > 1:
        raise InputError(f"datasets have different pair shapes {sorted(shapes)}; use the same tiles settings")
    return PairSet(
        images=np.concatenate([s.images for s in sets]),
        labels=np.concatenate([s.labels for s in sets]),
        groups=np.concatenate([np.array([f"{s.name}/{g}" for g in s.groups], dtype=object) for s in sets]),
        site_ids=np.concatenate([s.site_ids for s in sets]),
        lon=np.concatenate([s.lon for s in sets]),
        lat=np.concatenate([s.lat for s in sets]),
        scenes=np.concatenate([s.scenes for s in sets]),
        damage=np.concatenate([s.damage for s in sets]),
        name="+".join(s.name for s in sets),
        data_hash=hashlib.sha256("".join(s.data_hash for s in sets).encode()).hexdigest(),
        gsd_m=sets[0].gsd_m,
    )


def tqdm_disable(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for a ``progress`` flag: None (automatic) stays None, else its negation."""
    return None if progress is None else not progress


def default_cache_dir(configured: str = "") -> Path:
    """The cache folder: the configured one, ``$SITEWATCH_CACHE`` or ``~/.cache/sitewatch``."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("SITEWATCH_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "sitewatch"


def _raster_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)


def folder_fingerprint(folder: Path) -> str:
    """SHA-256 over ``sites.csv`` and every raster under ``before/`` and ``after/`` (content)."""
    h = hashlib.sha256()
    sites = _sites_file(folder)
    h.update(b"sites:" + file_sha256(sites).encode())
    for epoch in ("before", "after"):
        for p in _raster_files(folder / epoch):
            h.update(f"{epoch}/{p.relative_to(folder / epoch)}:".encode() + file_sha256(p.resolve()).encode())
    return h.hexdigest()


def _sites_file(folder: Path) -> Path:
    for name in ("sites.csv", "sites.geojson", "sites.json"):
        if (folder / name).is_file():
            return folder / name
    raise InputError(
        f"dataset {folder}: no sites.csv (or sites.geojson); a labelled dataset is a folder with "
        "sites.csv (site_id, lon, lat, damage), before/ and after/"
    )


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise InputError(
            f"--data {folder}: no such folder; give a labelled dataset folder (sites.csv, before/, "
            "after/), synth:N or xbd:PATH"
        )
    _sites_file(folder)
    for epoch in ("before", "after"):
        if not (folder / epoch).is_dir() or not _raster_files(folder / epoch):
            raise InputError(f"dataset {folder}: {epoch}/ holds no rasters (.tif); put the {epoch} imagery there")


def code_fingerprint(package: str) -> str:
    """SHA-256 over the source files of a package (``"tiles"``, ``"tiles.synth"``), so cached
    pairs and synthetic scenes are remade when the code that made them changes."""
    import importlib

    mod = importlib.import_module(package)
    root = Path(mod.__file__).resolve().parent  # type: ignore[arg-type]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        if package == "tiles" and p.relative_to(root).parts[0] == "synth":
            continue  # the generator does not cut pairs
        h.update(str(p.relative_to(root)).encode() + b":" + p.read_bytes())
    return h.hexdigest()


def _cache_key(kind: str, fingerprint: str, tiles: TilesConfig, extra: dict | None = None) -> str:
    payload = json.dumps(
        {
            "v": CACHE_VERSION, "kind": kind, "data": fingerprint, "tiles": config_to_dict(tiles),
            "code": code_fingerprint("tiles"), "extra": extra or {},
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def save_pairset(ps: PairSet, path: Path) -> None:
    """Write a pair set as one uncompressed ``.npz`` (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        images=ps.images,
        labels=ps.labels,
        groups=ps.groups.astype(str),
        site_ids=ps.site_ids.astype(str),
        lon=ps.lon,
        lat=ps.lat,
        scenes=ps.scenes.astype(str),
        damage=ps.damage.astype(str),
        info=np.array(json.dumps({"name": ps.name, "data_hash": ps.data_hash, "gsd_m": ps.gsd_m})),
    )
    os.replace(tmp, path)


def load_pairset(path: Path) -> PairSet:
    """Read a pair set written by :func:`save_pairset` (no pickle)."""
    with np.load(path, allow_pickle=False) as z:
        info = json.loads(str(z["info"]))
        return PairSet(
            images=z["images"],
            labels=z["labels"],
            groups=z["groups"].astype(object),
            site_ids=z["site_ids"].astype(object),
            lon=z["lon"],
            lat=z["lat"],
            scenes=z["scenes"].astype(object),
            damage=z["damage"].astype(object),
            name=info["name"],
            data_hash=info["data_hash"],
            gsd_m=float(info["gsd_m"]),
        )


def cut_labelled_folder(folder: Path, tiles: TilesConfig, *, name: str, data_hash: str, progress: bool | None = None) -> PairSet:
    """Cut every labelled site of a dataset folder through the tiles stage.

    Sites whose damage is not used by the binary task (minor-damage, un-classified, none) and
    pairs that come back ``cannot_assess`` are left out, with counts in the log.

    Returns:
        The pairs as uint8, grouped by the site's ``tile`` column when present, else by the
        before scene.
    """
    from tqdm import tqdm

    from tiles.catalog import RasterCatalog
    from tiles.cut import PairCutter
    from tiles.sites import read_sites

    sites = read_sites(_sites_file(folder))
    labelled = [s for s in sites if s.problem is None and damage_to_label(s.damage) is not None]
    dropped = Counter((s.damage or "none") for s in sites if s.problem is None and damage_to_label(s.damage) is None)
    if dropped:
        log.info("%s: left out %s (not used by the binary task)", folder, dict(dropped))
    if not labelled:
        raise InputError(
            f"dataset {folder}: no site has a usable damage label; sites.csv needs a damage column "
            "(no-damage / major-damage / destroyed) or label (0/1)"
        )
    before = RasterCatalog.from_paths([folder / "before"], epoch="before")
    after = RasterCatalog.from_paths([folder / "after"], epoch="after")
    images: list[np.ndarray] = []
    rows: list[tuple] = []
    reasons: Counter[str] = Counter()
    with PairCutter(before, after, tiles) as cutter:
        for pair in tqdm(cutter.cut_many(labelled), total=len(labelled), desc=f"cutting {name}", unit="site", disable=tqdm_disable(progress), leave=False):
            if not pair.ok or pair.image is None:
                reasons[pair.meta.reason or "cannot_assess"] += 1
                continue
            img = np.nan_to_num(pair.image, nan=0.0)
            images.append(np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8))
            s = pair.site
            group = (s.extra or {}).get("tile") or pair.meta.before_scene or "scene"
            rows.append((s.site_id, damage_to_label(s.damage), group, s.lon, s.lat, pair.meta.before_scene, s.damage))
    if reasons:
        log.warning("%s: %d site(s) could not be assessed and are left out: %s", folder, sum(reasons.values()), dict(reasons))
    if not images:
        raise InputError(f"dataset {folder}: no site could be cut ({dict(reasons)}); check that the rasters cover the sites")
    return PairSet(
        images=np.stack(images),
        labels=np.array([r[1] for r in rows], dtype=np.int8),
        groups=np.array([str(r[2]) for r in rows], dtype=object),
        site_ids=np.array([str(r[0]) for r in rows], dtype=object),
        lon=np.array([r[3] for r in rows], dtype=np.float64),
        lat=np.array([r[4] for r in rows], dtype=np.float64),
        scenes=np.array([str(r[5]) for r in rows], dtype=object),
        damage=np.array([str(r[6]) for r in rows], dtype=object),
        name=name,
        data_hash=data_hash,
        gsd_m=tiles.gsd_m,
    )


def load_labelled_folder(folder: Path, tiles: TilesConfig, *, cache_dir: Path, progress: bool | None = None, name: str | None = None) -> PairSet:
    """A labelled dataset folder as pairs, from the cache when the inputs are unchanged."""
    folder = Path(folder)
    _check_folder(folder)
    fingerprint = folder_fingerprint(folder)
    key = _cache_key("folder", fingerprint, tiles)
    path = cache_dir / "pairs" / f"{key[:32]}.npz"
    name = name or folder.resolve().name
    if path.is_file():
        log.info("%s: pairs from cache %s", folder, path)
        return dataclasses.replace(load_pairset(path), name=name)
    ps = cut_labelled_folder(folder, tiles, name=name, data_hash=fingerprint, progress=progress)
    save_pairset(ps, path)
    log.info("%s: %s; cached in %s", folder, ps.describe(), path)
    return ps


def synth_dataset_folder(n_sites: int, synth_config: object, *, seed: int, cache_dir: Path, nuisance: bool, progress: bool | None = None) -> Path:
    """Generate (once) a synthetic labelled dataset of ``n_sites`` sites in the cache.

    The synth settings come from the job's ``synth`` section with ``sites = n_sites`` and the
    seed set; with ``nuisance`` the generator's nuisance knobs are randomised from the seed
    (different seasons, haze, misregistration per dataset).

    Returns:
        The dataset folder (sites.csv, before/, after/).
    """
    from tiles.synth import generate_dataset

    cfg = randomised_synth_config(synth_config, n_sites=n_sites, seed=seed, nuisance=nuisance)
    key = hashlib.sha256(
        json.dumps({"v": CACHE_VERSION, "synth": config_to_dict(cfg), "code": code_fingerprint("tiles.synth")}, sort_keys=True).encode()
    ).hexdigest()
    out = cache_dir / "synth" / key[:24]
    done = out / ".complete"
    if not done.is_file():
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        log.info("generating synthetic dataset of %d sites into %s", n_sites, out)
        generate_dataset(tmp, cfg, progress=progress)
        (tmp / ".complete").write_text(json.dumps(config_to_dict(cfg), sort_keys=True))
        if out.exists():
            import shutil

            shutil.rmtree(out)
        os.replace(tmp, out)
    return out


def randomised_synth_config(synth_config: object, *, n_sites: int, seed: int, nuisance: bool) -> object:
    """The synth config for one ``synth:N`` dataset: ``sites`` and ``seed`` set and, with
    ``nuisance``, the generator's ``randomise_nuisance`` switched on (each region draws its
    nuisance strengths in ``[0, knob]``)."""
    changes: dict[str, object] = {"sites": int(n_sites), "seed": int(seed)}
    names = {f.name for f in dataclasses.fields(synth_config)}  # type: ignore[arg-type]
    if nuisance and "randomise_nuisance" in names:
        changes["randomise_nuisance"] = True
    return dataclasses.replace(synth_config, **changes)  # type: ignore[type-var]


def parse_dataset_spec(spec: str) -> tuple[str, str]:
    """Split a DATASET argument into ``(kind, value)``: ``folder``, ``synth`` or ``xbd``."""
    if spec.startswith("synth:"):
        value = spec[len("synth:") :]
        try:
            n = int(value)
        except ValueError:
            raise UsageError(f"--data {spec}: synth:N needs a whole number of sites, e.g. synth:400") from None
        if n < 4:
            raise UsageError(f"--data {spec}: synth:N needs at least 4 sites")
        return "synth", str(n)
    if spec.startswith("xbd:"):
        path = spec[len("xbd:") :]
        if not path:
            raise UsageError(f"--data {spec}: xbd:PATH needs the folder holding images/ and labels/")
        return "xbd", path
    return "folder", spec


def load_dataset(
    spec: str,
    tiles: TilesConfig,
    *,
    cache_dir: Path,
    synth_config: object | None = None,
    seed: int = 0,
    nuisance: bool = True,
    progress: bool | None = None,
    index: int = 0,
) -> PairSet:
    """Load one DATASET argument as labelled pairs.

    Args:
        spec: a folder, ``synth:N`` or ``xbd:PATH``.
        tiles: how pairs are cut (chip size, pixels, normalisation...).
        cache_dir: cache root.
        synth_config: the job's ``SynthConfig`` (for ``synth:N``).
        seed: seed of a ``synth:N`` dataset (the ``index``-th one gets ``seed + index``).
        nuisance: randomise the synthetic nuisance knobs.
        progress: tqdm's disable flag inverted (None = automatic).
        index: position of this argument among ``--data`` (so two ``synth:N`` differ).

    Raises:
        InputError: the dataset cannot be used (message names it and says what to do).
    """
    kind, value = parse_dataset_spec(spec)
    if kind == "synth":
        if synth_config is None:
            from tiles.synth.config import SynthConfig

            synth_config = SynthConfig()
        folder = synth_dataset_folder(int(value), synth_config, seed=seed + index, cache_dir=cache_dir, nuisance=nuisance, progress=progress)
        return load_labelled_folder(folder, tiles, cache_dir=cache_dir, progress=progress, name=f"synth{value}s{seed + index}")
    if kind == "xbd":
        from train.xbd import load_xbd

        return load_xbd(Path(value), tiles, cache_dir=cache_dir, progress=progress)
    return load_labelled_folder(Path(value), tiles, cache_dir=cache_dir, progress=progress)


def load_datasets(specs: Iterable[str], tiles: TilesConfig, **kwargs: object) -> PairSet:
    """Load and concatenate several DATASET arguments (see :func:`load_dataset`)."""
    sets = [load_dataset(s, tiles, index=i, **kwargs) for i, s in enumerate(specs)]  # type: ignore[arg-type]
    return concat_pairsets(sets)
