"""Labelled pair datasets: project-format folders, ``synth:N`` and ``xbd:PATH``, cached.

A DATASET argument of ``sitewatch train`` / ``sitewatch evaluate`` (``train.data``,
``evaluate.data``) is one of:

* a folder with ``sites.csv`` (``damage`` or ``label`` column), ``before/`` and ``after/``
  rasters: cut through :class:`tiles.cut.PairCutter` with the job's tiles settings;
* ``synth:N``: ``N`` synthetic sites made by :func:`tiles.synth.generate_dataset` into the
  cache, then cut like a folder;
* ``synth:N@PROFILE``: the same, in the synthetic world ``PROFILE`` of ``train.synth_profiles``
  (the job's ``synth`` section with the profile's settings replaced), so one training set can
  mix worlds (e.g. wildfire suburbs and concrete cities), each generated once;
* ``xbd:PATH``: the public xBD layout, converted by :func:`train.xbd.import_xbd` into a
  labelled folder in the cache (fitted georeference, GeoTIFFs, ``sites.csv``), then cut like a
  folder.

Every source thus becomes pairs through the same tiles path that ``sitewatch detect`` uses.
Cut pairs are cached as one ``.npz`` per dataset (:mod:`train.pairs`), keyed by the SHA-256 of
the source files' contents, the tiles settings and the code that cuts them, never by file times,
so epochs never re-read rasters and a second run starts at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from sitewatch.config import build_config, config_to_dict
from sitewatch.errors import InputError, UsageError
from sitewatch.hashing import sha256_file as file_sha256
from tiles.catalog import RASTER_SUFFIXES
from tiles.config import TilesConfig
from tiles.synth.config import SynthConfig
from tiles.types import damage_to_label
from train.pairs import PairSet, concat_pairsets, load_pairset, save_pairset
from train.xbd import import_xbd

log = logging.getLogger(__name__)

__all__ = [
    "PairSet",
    "cut_labelled_folder",
    "default_cache_dir",
    "load_dataset",
    "check_dataset_specs",
    "load_datasets",
    "load_labelled_folder",
    "load_xbd",
    "parse_dataset_spec",
    "parse_synth_spec",
    "profile_synth_config",
    "synth_dataset_folder",
]

#: bump when the cached array layout or the cutting semantics change (2: per-epoch ``standing``)
CACHE_VERSION = 2
#: sites.csv columns with the per-epoch "intact building stands here" truth (1/0; blank = unknown)
STANDING_COLUMNS = ("standing_before", "standing_after")
#: the setting a DATASET argument belongs to, for error messages (``evaluate.data`` in evaluation)
TRAIN_DATA = "train.data"


def tqdm_disable(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for a ``progress`` flag: None (automatic) stays None, else its negation."""
    return None if progress is None else not progress


def default_cache_dir(configured: str | Path | None = None) -> Path:
    """The cache folder: the configured one, else ``$SITEWATCH_CACHE``, else ``~/.cache/sitewatch``."""
    if configured is not None:
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


def _check_folder(folder: Path, setting: str) -> None:
    if not folder.is_dir():
        raise InputError(
            f"{setting}: {folder}: no such folder; give a labelled dataset folder (sites.csv, before/, "
            "after/), synth:N or xbd:PATH",
            setting=setting,
        )
    _sites_file(folder)
    for epoch in ("before", "after"):
        if not (folder / epoch).is_dir() or not _raster_files(folder / epoch):
            raise InputError(f"dataset {folder}: {epoch}/ holds no rasters (.tif); put the {epoch} imagery there")


def code_fingerprint(package: str) -> str:
    """SHA-256 over the source files of a package (``"tiles"``, ``"tiles.synth"``), so cached
    pairs and synthetic scenes are remade when the code that made them changes (``tiles``
    leaves out ``tiles/synth``, which does not cut pairs)."""
    import importlib

    mod = importlib.import_module(package)
    root = Path(mod.__file__).resolve().parent  # type: ignore[arg-type]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        if package == "tiles" and p.relative_to(root).parts[0] == "synth":
            continue  # the generator does not cut pairs
        h.update(str(p.relative_to(root)).encode() + b":" + p.read_bytes())
    return h.hexdigest()


def _cache_key(kind: str, fingerprint: str, tiles: TilesConfig) -> str:
    payload = json.dumps(
        {
            "v": CACHE_VERSION, "kind": kind, "data": fingerprint, "tiles": config_to_dict(tiles),
            "code": code_fingerprint("tiles"), "extra": {},
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _cached(path: Path, name: str, cut: Callable[[], PairSet]) -> PairSet:
    """The pair set cached at ``path`` (renamed to ``name``), else ``cut()`` and cache it."""
    if path.is_file():
        log.info("%s: pairs from cache %s", name, path)
        return dataclasses.replace(load_pairset(path), name=name)
    ps = cut()
    save_pairset(ps, path)
    log.info("%s; cached in %s", ps.describe(), path)
    return ps


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
            rows.append((s.site_id, damage_to_label(s.damage), group, s.lon, s.lat, pair.meta.before_scene, s.damage, site_standing(s.extra, s.site_id, folder)))
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
        standing=np.array([r[7] for r in rows], dtype=np.int8) if any(max(r[7]) >= 0 for r in rows) else None,
    )


def site_standing(extra: dict[str, str] | None, site_id: str, folder: Path) -> tuple[int, int]:
    """The per-epoch targets of one site from its ``standing_before`` / ``standing_after``
    columns: 1 (an intact building stands there), 0 (none does) or -1 (unknown: no column,
    or a blank cell).

    Raises:
        InputError: a cell holds anything else (naming the folder, site and column).
    """
    values = []
    for col in STANDING_COLUMNS:
        text = str((extra or {}).get(col, "") or "").strip().lower()
        if text in ("", "nan", "none"):
            values.append(-1)
        elif text in ("1", "1.0", "true", "yes"):
            values.append(1)
        elif text in ("0", "0.0", "false", "no"):
            values.append(0)
        else:
            raise InputError(f"dataset {folder}: site {site_id}: {col} is {text!r}; use 1 (an intact building stands), 0 or blank (unknown)")
    return values[0], values[1]


def load_labelled_folder(
    folder: Path, tiles: TilesConfig, *, cache_dir: Path, progress: bool | None = None, name: str | None = None,
    setting: str = TRAIN_DATA,
) -> PairSet:
    """A labelled dataset folder as pairs, from the cache when its contents are unchanged.

    Args:
        folder: ``sites.csv`` (with ``damage`` or ``label``), ``before/``, ``after/``.
        tiles: how pairs are cut.
        cache_dir: cache root (pairs go to ``cache_dir/pairs/``).
        progress: progress bar (None = automatic).
        name: the pair set's name (default: the folder's name).
        setting: the setting that named the folder, for the error when it does not exist.

    Raises:
        InputError: the folder is missing or unusable (the message names it and says what to do).
    """
    folder = Path(folder)
    _check_folder(folder, setting)
    fingerprint = folder_fingerprint(folder)
    path = cache_dir / "pairs" / f"{_cache_key('folder', fingerprint, tiles)[:32]}.npz"
    name = name or folder.resolve().name
    return _cached(path, name, lambda: cut_labelled_folder(folder, tiles, name=name, data_hash=fingerprint, progress=progress))


def load_xbd(root: Path, tiles: TilesConfig, *, cache_dir: Path, progress: bool | None = None) -> PairSet:
    """Pairs of an xBD-layout folder: converted to a labelled folder (:func:`train.xbd.import_xbd`),
    then cut by the tiles stage like any labelled folder; both steps cached by content.

    The pair set's ``data_hash`` is the SHA-256 over the xBD files' contents.

    Raises:
        InputError: the layout is wrong, or no building can be cut.
    """
    imported = import_xbd(Path(root), cache_dir=cache_dir, progress=progress)
    path = cache_dir / "pairs" / f"xbd-{_cache_key('xbd', imported.folder_key, tiles)[:32]}.npz"
    return _cached(
        path, imported.name,
        lambda: cut_labelled_folder(imported.folder, tiles, name=imported.name, data_hash=imported.source_sha256, progress=progress),
    )


def synth_dataset_folder(n_sites: int, synth: SynthConfig, *, seed: int, cache_dir: Path, nuisance: bool, progress: bool | None = None) -> Path:
    """Generate (once) a synthetic labelled dataset of ``n_sites`` sites in the cache.

    The synth settings come from the job's ``synth`` section with ``sites = n_sites`` and the
    seed set; with ``nuisance`` the generator's nuisance knobs are randomised from the seed
    (different seasons, haze, misregistration per dataset).

    Returns:
        The dataset folder (sites.csv, before/, after/).
    """
    from tiles.synth import generate_dataset

    cfg = randomised_synth_config(synth, n_sites=n_sites, seed=seed, nuisance=nuisance)
    key = hashlib.sha256(
        json.dumps({"v": CACHE_VERSION, "synth": config_to_dict(cfg), "code": code_fingerprint("tiles.synth")}, sort_keys=True).encode()
    ).hexdigest()
    out = cache_dir / "synth" / key[:24]
    done = out / ".complete"
    if not done.is_file():
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        log.info("generating synthetic dataset of %d sites into %s", n_sites, out)
        generate_dataset(tmp, cfg, progress=progress)
        (tmp / ".complete").write_text(json.dumps(config_to_dict(cfg), sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    return out


def randomised_synth_config(synth: SynthConfig, *, n_sites: int, seed: int, nuisance: bool) -> SynthConfig:
    """The synth config for one ``synth:N`` dataset: ``sites`` and ``seed`` set and, with
    ``nuisance``, the generator's ``randomise_nuisance`` switched on (each region draws its
    nuisance strengths in ``[0, knob]``)."""
    changes: dict[str, object] = {"sites": int(n_sites), "seed": int(seed)}
    names = {f.name for f in dataclasses.fields(synth)}
    if nuisance and "randomise_nuisance" in names:
        changes["randomise_nuisance"] = True
    return dataclasses.replace(synth, **changes)  # type: ignore[arg-type]


def parse_synth_spec(value: str, *, spec: str, setting: str = TRAIN_DATA) -> tuple[int, str | None]:
    """``(sites, profile)`` of the part after ``synth:`` (``N`` or ``N@PROFILE``).

    Raises:
        UsageError: not a whole number of at least 4 sites, or an empty profile name (naming ``setting``).
    """
    count, sep, profile = value.partition("@")
    try:
        n = int(count)
    except ValueError:
        raise UsageError(f"{setting}: {spec}: synth:N needs a whole number of sites, e.g. synth:400 (or synth:400@PROFILE)", setting=setting) from None
    if n < 4:
        raise UsageError(f"{setting}: {spec}: synth:N needs at least 4 sites", setting=setting)
    if sep and not profile:
        raise UsageError(f"{setting}: {spec}: synth:N@PROFILE needs a profile name of train.synth_profiles after '@'", setting=setting)
    return n, (profile or None)


def parse_dataset_spec(spec: str, *, setting: str = TRAIN_DATA) -> tuple[str, str]:
    """Split a DATASET argument into ``(kind, value)``: ``folder``, ``synth`` or ``xbd``
    (a ``synth`` value is ``N`` or ``N@PROFILE``, see :func:`parse_synth_spec`).

    Raises:
        UsageError: a malformed ``synth:N[@PROFILE]`` or ``xbd:PATH`` (naming ``setting``).
    """
    if spec.startswith("synth:"):
        n, profile = parse_synth_spec(spec[len("synth:") :], spec=spec, setting=setting)
        return "synth", str(n) if profile is None else f"{n}@{profile}"
    if spec.startswith("xbd:"):
        path = spec[len("xbd:") :]
        if not path:
            raise UsageError(f"{setting}: {spec}: xbd:PATH needs the folder holding images/ and labels/", setting=setting)
        return "xbd", path
    return "folder", spec


def profile_synth_config(
    synth: SynthConfig, profiles: Mapping[str, Mapping[str, Any]], profile: str | None, *, spec: str, setting: str = TRAIN_DATA,
) -> SynthConfig:
    """The synth settings of one ``synth:N[@PROFILE]`` dataset: the job's ``synth`` section,
    with the settings of ``profiles[profile]`` replacing its own (none without a profile).

    Raises:
        UsageError: the profile is not defined.
        ConfigError: the profile's settings do not make a valid synth config (naming
            ``train.synth_profiles.PROFILE`` and the setting).
    """
    if profile is None:
        return synth
    if profile not in profiles and setting != TRAIN_DATA and not profiles:
        raise UsageError(
            f"{setting}: {spec}: {setting} takes no synth profiles (they are defined only in train.synth_profiles "
            f"for training): use synth:N, or generate the world with `sitewatch synth` and give its folder",
            setting=setting,
        )
    if profile not in profiles:
        known = ", ".join(sorted(profiles)) or "none defined"
        raise UsageError(f"{setting}: {spec}: no synth profile {profile!r} in train.synth_profiles ({known})", setting=setting)
    merged = {**config_to_dict(synth), **dict(profiles[profile])}
    return build_config(SynthConfig, merged, where=f"train.synth_profiles.{profile}")


def load_dataset(
    spec: str,
    tiles: TilesConfig,
    *,
    cache_dir: Path,
    synth: SynthConfig | None = None,
    synth_profiles: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    nuisance: bool = True,
    progress: bool | None = None,
    index: int = 0,
    setting: str = TRAIN_DATA,
) -> PairSet:
    """Load one DATASET argument as labelled pairs.

    Args:
        spec: a folder, ``synth:N``, ``synth:N@PROFILE`` or ``xbd:PATH``.
        tiles: how pairs are cut (chip size, pixels, normalisation...).
        cache_dir: cache root.
        synth: the synth settings of a ``synth:N`` dataset (None = the defaults).
        synth_profiles: named replacements of ``synth`` settings for ``synth:N@PROFILE``
            (``train.synth_profiles``); the pair set is named ``synthNsSEED-PROFILE``.
        seed: seed of a ``synth:N`` dataset (the ``index``-th one gets ``seed + index``).
        nuisance: randomise the synthetic nuisance knobs.
        progress: progress bars (None = automatic).
        index: position of this argument among the DATASET arguments (so two ``synth:N`` differ).
        setting: the setting the argument came from (``train.data``, ``evaluate.data``), named
            in errors about the argument itself.

    Raises:
        UsageError: a malformed argument.
        InputError: the dataset cannot be used (message names it and says what to do).
    """
    kind, value = parse_dataset_spec(spec, setting=setting)
    if kind == "synth":
        n, profile = parse_synth_spec(value, spec=spec, setting=setting)
        cfg = profile_synth_config(synth if synth is not None else SynthConfig(), synth_profiles or {}, profile, spec=spec, setting=setting)
        folder = synth_dataset_folder(n, cfg, seed=seed + index, cache_dir=cache_dir, nuisance=nuisance, progress=progress)
        name = f"synth{n}s{seed + index}" + (f"-{profile}" if profile else "")
        return load_labelled_folder(folder, tiles, cache_dir=cache_dir, progress=progress, name=name)
    if kind == "xbd":
        return load_xbd(Path(value), tiles, cache_dir=cache_dir, progress=progress)
    return load_labelled_folder(Path(value), tiles, cache_dir=cache_dir, progress=progress, setting=setting)


def check_dataset_specs(
    specs: Iterable[str], *, synth: SynthConfig | None = None, synth_profiles: Mapping[str, Mapping[str, Any]] | None = None,
    setting: str = TRAIN_DATA,
) -> None:
    """Check every DATASET argument's form and every named synth profile before any is generated
    or cut, so a typo in the last one does not surface after an hour of generating the first.

    Raises:
        UsageError / ConfigError: as :func:`load_dataset` would for that argument.
    """
    for spec in specs:
        kind, value = parse_dataset_spec(spec, setting=setting)
        if kind == "synth":
            _, profile = parse_synth_spec(value, spec=spec, setting=setting)
            profile_synth_config(synth if synth is not None else SynthConfig(), synth_profiles or {}, profile, spec=spec, setting=setting)


def load_datasets(specs: Iterable[str], tiles: TilesConfig, **kwargs: object) -> PairSet:
    """Load and concatenate several DATASET arguments (see :func:`load_dataset`); all of them are
    checked first (:func:`check_dataset_specs`)."""
    specs = list(specs)
    check_dataset_specs(specs, synth=kwargs.get("synth"), synth_profiles=kwargs.get("synth_profiles"), setting=str(kwargs.get("setting", TRAIN_DATA)))  # type: ignore[arg-type]
    sets = [load_dataset(s, tiles, index=i, **kwargs) for i, s in enumerate(specs)]  # type: ignore[arg-type]
    return concat_pairsets(sets)
