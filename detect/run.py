"""``sitewatch detect`` as a library call: :func:`run_detect`, a sequence of typed steps.

1. :func:`prepare_run` — read the sites and the raster headers, load the model and check it fits
   the tiles settings, resolve the operating point (run-level problems stop here, before
   anything slow): a :class:`PreparedRun`.
2. :func:`bind_run` — hash the sites file, the model and the settings, and take a quick
   fingerprint of the rasters (size, modification time, first and last MiB) that binds the
   resume journal: a :class:`RunBinding`. The SHA-256 of every byte of the rasters
   (:class:`detect.provenance.InputHasher`) is computed in a thread, started by
   :func:`run_detect` as soon as the raster headers are read (:func:`read_run_inputs`, quick
   fingerprints first), so it overlaps the import of torch and the model load, then scoring.
3. :func:`plan_run` — the one batch plan (:func:`detect.pipeline.plan_batches`), checked against
   the journal of an interrupted run: a :class:`RunPlan`.
4. :func:`score_run` — score the remaining batches (locally or on Dask) into the journal, keeping
   the chip images of the best sites from that pass (:class:`detect.site_chips.TopChipCache`);
   the rasters' full hashes go into the journal as soon as they are known, checked against
   those of earlier invocations of the run, and a raster that changed while the run read it
   stops the run. The result includes the run's :class:`RunIdentity` (the full hashes, as
   :func:`fingerprint_run` computes them all at once).
5. :func:`rank_and_write` — rank every journal row (:func:`detect.ranking.assign_ranks`, the same
   code as :func:`detect.ranking.rank_rows`), write chips, ``scores.csv``/``scores.geojson``,
   the GIS files, ``embeddings.npz``, ``report.html``, ``config.yaml`` and last
   ``manifest.json`` (:func:`detect.runfolder.write_manifest`).

The journal makes a run resumable: rerunning the same command after an interruption scores only
the batches that are missing and ends with identical outputs.
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import json
import logging
import os
import shutil
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from detect.site_chips import CHIPS_DIR, TopChipCache, write_site_chips
from detect.config import PRESENTATION_KEYS
from detect.gis import GIS_FILES, write_gis_files
from detect.journal import (
    JOURNAL_NAME,
    JournalWriter,
    RunKeyStore,
    check_fingerprint,
    check_recorded_inputs,
    read_batch,
    scan_journal,
)
from detect.pipeline import PlannedBatch, plan_batches, score_batches_local
from detect.workers import bounded_block_cache
from detect.provenance import (
    SIGNATURE_NAME,
    InputHasher,
    epoch_component,
    hash_outputs,
    hash_scene_inputs,
    inputs_record,
    quick_epoch_component,
    quick_file_fingerprint,
    sha256_file,
    sha256_text,
    software_versions,
)
from detect.ranking import OperatingPoint, assign_ranks, resolve_operating_point, sort_key
from detect.report import ReportCollector, write_report
from detect.runfolder import (
    CHIP_COLUMNS,
    MANIFEST_NAME,
    ConfigInfo,
    Counts,
    Execution,
    FileHash,
    Inputs,
    Manifest,
    ModelInfo,
    PER_SITE_COLUMNS,
    PerSite,
    PerSiteSpool,
    RasterInput,
    CAUTION_COLUMN,
    ScoresWriter,
    SitesInput,
    SkippedRaster,
    score_columns,
    write_embeddings_rows,
    write_manifest,
)
from sitewatch import __version__
from sitewatch.config import config_to_dict, write_config
from sitewatch.errors import InputError, ModelError, RunFolderError, UsageError
from detect.caution import Cautions
from detect.config import DetectConfig
from tiles.config import TilesConfig

log = logging.getLogger(__name__)


def mark_phase(phase: str) -> None:
    """Log (at debug level) that the run reached ``phase``, with the wall-clock time: ``timing:
    PHASE at UNIX-SECONDS``; ``benchmarks/bench_detect.py`` reads these lines (``-v``) to say where
    a run's time goes."""
    log.debug("timing: %s at %.3f", phase, time.time())


#: everything sitewatch writes into a run folder (``--overwrite`` removes exactly these).
RUN_FILES = (
    "scores.csv",
    "scores.geojson",
    "report.html",
    "embeddings.npz",
    "config.yaml",
    MANIFEST_NAME,
    SIGNATURE_NAME,
    JOURNAL_NAME,
    *GIS_FILES,
)


@dataclass(frozen=True)
class RunSummary:
    """What a finished run produced.

    Attributes:
        run_dir: the run folder.
        sites: input sites.
        ok: sites scored.
        cannot_assess: sites that could not be assessed.
        flagged: sites at or above the operating threshold.
        operating_point: the threshold used.
        batches_total: batches in the plan.
        batches_resumed: batches taken from an earlier, interrupted run's journal.
        seconds: wall time of this invocation.
        scoring_seconds: time spent cutting and scoring in this invocation.
        run_digest: SHA-256 (hex) of the final ``manifest.json`` bytes, to record outside the
            folder (``sitewatch verify RUN --digest sha256:HEX``).
    """

    run_dir: Path
    sites: int
    ok: int
    cannot_assess: int
    flagged: int
    operating_point: OperatingPoint
    batches_total: int
    batches_resumed: int
    seconds: float
    scoring_seconds: float
    run_digest: str = ""

    @property
    def scores_csv(self) -> Path:
        return self.run_dir / "scores.csv"

    @property
    def report_html(self) -> Path:
        return self.run_dir / "report.html"


def _check_folder(run_dir: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, or a non-empty folder that is not a run (unless overwriting)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"--out {run_dir}: exists and is not a folder; pick a new --out folder")
    if run_dir.is_dir() and not overwrite:
        ours = (run_dir / JOURNAL_NAME).exists() or (run_dir / MANIFEST_NAME).exists()
        others = [p.name for p in run_dir.iterdir() if p.name != LOCK_NAME]
        if others and not ours:
            raise RunFolderError(
                f"--out {run_dir}: the folder is not empty and is not a sitewatch run folder; "
                "pick a new --out folder, or pass --overwrite"
            )


def _discard_run(run_dir: Path) -> None:
    """Remove what sitewatch wrote into ``run_dir`` (``--overwrite``); other files are left alone."""
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / CHIPS_DIR, ignore_errors=True)


LOCK_NAME = "run.lock"


def _take_lock(path: Path, run_dir: Path) -> Any:
    """Open and lock ``path`` (non-blocking); the open file is the lock.

    The holder removes the lock file when it is done, so after locking, the file at ``path``
    must still be the one locked (another holder may have removed it in between); if not, try
    again. Two processes never both believe they hold the run folder.
    """
    while True:
        fh = open(path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()  # not ours: leave the holder's lock file alone
            raise RunFolderError(
                f"{run_dir}: another sitewatch detect is writing this run folder; wait for it "
                "or pick a new --out folder"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fh
        fh.close()


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/run.lock`` while writing the folder; refuse at once when another process holds it.

    A lock file is removed only by the process that holds it, while it still holds it: a
    ``detect`` that fails to take the lock never deletes the running job's lock.
    """
    path = run_dir / LOCK_NAME
    fh = _take_lock(path, run_dir)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # still locked by us: nobody else can hold it now
        fh.close()


def run_config(tiles: TilesConfig, detect: DetectConfig) -> dict[str, Any]:
    """The run's effective settings as ``config.yaml`` holds them: ``{"tiles": ..., "detect": ...}``."""
    return {"tiles": config_to_dict(tiles), "detect": config_to_dict(detect)}


def _fingerprint_config(tiles: TilesConfig, detect: DetectConfig) -> dict[str, Any]:
    data = run_config(tiles, detect)
    data["detect"] = {k: v for k, v in data["detect"].items() if k not in PRESENTATION_KEYS}
    return data


def _model_folder(model: str | Path) -> Path:
    if str(model) == "default":
        from models import default_model_dir

        return default_model_dir()
    return Path(model)


def _model_files(folder: Path) -> list[dict[str, str]]:
    if not folder.is_dir():
        return []
    return [
        {"path": str(p.resolve()), "sha256": sha256_file(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix in (".safetensors", ".json")
    ]


def _meta_dict(meta: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    data = asdict(meta) if is_dataclass(meta) else dict(meta)
    return json.loads(json.dumps(data, default=str))


def _check_model_fits(meta: Any, tiles: TilesConfig) -> None:
    bands = len(tiles.bands)
    in_channels = int(getattr(meta, "in_channels", bands))
    if in_channels != bands:
        raise ModelError(
            f"the model takes {in_channels} band(s) but tiles.bands reads {bands} "
            f"({list(tiles.bands)}); set tiles.bands to {in_channels} band(s) or "
            "use a model trained on these bands",
            setting="tiles.bands",
        )
    input_px = getattr(meta, "input_px", None)
    if input_px and int(input_px) != tiles.chip_px:
        log.warning(
            "the model was trained on %s px chips but tiles.chip_px is %d; scores may be less reliable",
            input_px,
            tiles.chip_px,
        )


def cut_workers(cfg: DetectConfig) -> int:
    """Processes that cut pairs for the scorer (``detect.cut_workers``; 0 = a reader thread)."""
    if cfg.cut_workers is not None:
        return cfg.cut_workers
    from detect.workers import default_cut_workers

    return default_cut_workers(1 if cfg.device == "cuda" else inference_threads(cfg.threads))


def inference_threads(threads: int) -> int:
    """Torch threads for inference: ``threads`` if set, else all cores but one.

    The spare core is for the reader thread that cuts the next batches meanwhile; on a 2-core
    machine one torch thread plus the reader was ~1.8x faster than two torch threads plus the
    reader (benchmarks/bench_detect.py, README).
    """
    if threads > 0:
        return threads
    return max(1, (os.cpu_count() or 2) - 1)


def _utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class RunInputs:
    """What a run reads, as given (detect's own arguments; the settings are the config sections).

    Attributes:
        sites: the sites file (CSV or GeoJSON).
        before, after: GeoTIFF files, folders or globs of each epoch.
        model: a model folder or ``"default"`` (the bundled model).
        series: an image series instead of ``before``/``after`` (:mod:`detect.series`).
    """

    sites: Path
    before: tuple[str | Path, ...]
    after: tuple[str | Path, ...]
    model: str | Path = "default"
    series: tuple[str | Path, ...] = ()


@dataclass(frozen=True)
class PreparedRun:
    """Step 1: the inputs read (headers only), the model loaded, the threshold chosen.

    Attributes:
        windows: the parts-and-context step (:class:`detect.parts.SiteWindows`), or None.
        series_cat: the image series (:class:`tiles.series.SeriesCatalog`), or None.
    """

    inputs: RunInputs
    tiles: TilesConfig
    detect: DetectConfig
    sites: Sequence[Any]
    before: Any
    after: Any
    scorer: Any
    operating_point: OperatingPoint
    windows: Any
    series_cat: Any = None

    def make_cutter(self) -> Any:
        """A new :class:`tiles.cut.PairCutter` over the run's catalogues, or a
        :class:`tiles.series.SeriesCutter` over its series (the caller closes it)."""
        if self.series_cat is not None:
            from tiles.series import SeriesCutter

            cfg = self.detect
            return SeriesCutter(
                self.series_cat,
                self.tiles,
                max_reference_tries=cfg.series_max_reference_tries,
                max_cloud_fraction=cfg.series_max_cloud_fraction,
            )
        from tiles.cut import PairCutter

        return PairCutter(self.before, self.after, self.tiles)

    def make_chip_source(self) -> Any:
        """What cuts (and, for a series, scores) the sites whose chips were not kept while scoring."""
        if self.series_cat is None:
            return self.make_cutter()
        from detect.series import SeriesEvidenceSource

        return SeriesEvidenceSource(self.make_cutter(), self.scorer, self.detect, self.detect.score_decimals)


@dataclass(frozen=True)
class RunIdentity:
    """Step 2: the hashes that make a run this run, and the manifest's input records."""

    sites_sha256: str
    before: tuple[RasterInput, ...]
    after: tuple[RasterInput, ...]
    model_dir: Path
    model_files: tuple[FileHash, ...]
    components: dict[str, str]
    fingerprint: str


@dataclass(frozen=True)
class RunBinding:
    """Step 2: what binds the resume journal before the rasters' full SHA-256 is known.

    The sites file, the model and the settings are hashed in full; the rasters (``deferred``)
    by :func:`detect.provenance.quick_epoch_component`, while :class:`detect.provenance.InputHasher`
    hashes every byte of them alongside scoring (:func:`score_run` records and checks it).

    Attributes:
        quick_files: ``(path, quick fingerprint)`` of every raster and sidecar, checked again
            once scoring ends (a file that changed while the run read it stops the run).
    """

    sites_sha256: str
    model_dir: Path
    model_files: tuple[FileHash, ...]
    components: dict[str, str]
    fingerprint: str
    deferred: tuple[str, ...]
    quick_files: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RunPlan:
    """Step 3: the one batch plan, and what an earlier, interrupted invocation already scored."""

    batches: tuple[PlannedBatch, ...]
    done: frozenset[int]
    journal: Any  # detect.journal.JournalIndex
    started: str

    @property
    def todo(self) -> list[PlannedBatch]:
        return [b for b in self.batches if b.index not in self.done]


def _series_manifest(series_cat: Any, cfg: DetectConfig) -> dict[str, Any]:
    """The manifest's ``series`` section: the days and the scenes of each, and the fit settings."""
    return {
        "days": [{"day": d.day.isoformat(), "scenes": [s.scene_id for s in d.before.scenes]} for d in series_cat.days],
        "fit": {
            k: getattr(cfg, k)
            for k in (
                "series_pair_span", "series_min_llr", "series_eps", "series_outlier_penalty",
                "series_max_reference_tries", "series_max_cloud_fraction",
            )
        },
    }


def _site_windows(tiles: TilesConfig, cfg: DetectConfig, operating_point: OperatingPoint) -> Any:
    """The parts-and-context step (:mod:`detect.parts`), or None when both are off."""
    from detect.parts import SiteWindows

    step = SiteWindows(tiles, cfg, operating_point.threshold)
    return step if step.active else None


@dataclass(frozen=True)
class ReadInputs:
    """What :func:`read_run_inputs` read: the sites, the catalogues (headers only) and the series."""

    sites: Sequence[Any]
    before: Any
    after: Any
    series_cat: Any = None


def read_run_inputs(inputs: RunInputs) -> ReadInputs:
    """Read the sites and the raster headers (step 1 without the model).

    Raises:
        InputError: the sites file cannot be used or holds no site.
        RasterError: no readable raster in ``before`` or ``after``.
    """
    from tiles.catalog import RasterCatalog, check_epochs
    from tiles.sites import read_sites

    sites = read_sites(inputs.sites)
    if not sites:
        raise InputError(f"{inputs.sites}: no sites to score")
    series_cat = None
    if inputs.series:
        from tiles.series import SeriesCatalog

        series_cat = SeriesCatalog.from_paths(list(inputs.series))
        before = RasterCatalog(series_cat.scenes, epoch="before", skipped=series_cat.skipped)
        after = RasterCatalog(series_cat.scenes, epoch="after")
    else:
        before = RasterCatalog.from_paths(list(inputs.before), epoch="before")
        after = RasterCatalog.from_paths(list(inputs.after), epoch="after")
        check_epochs(before, after)
    mark_phase("inputs read")
    return ReadInputs(sites, before, after, series_cat)


def prepare_run(inputs: RunInputs, tiles: TilesConfig, detect: DetectConfig, *, read: ReadInputs | None = None) -> PreparedRun:
    """Step 1: read the sites and raster headers, load the model, choose the operating point.

    Args:
        read: the inputs already read (:func:`read_run_inputs`); None: read here.

    Raises:
        InputError: the sites file cannot be used or holds no site.
        RasterError: no readable raster in ``before`` or ``after``.
        ModelError: the model cannot be loaded or does not fit the tiles settings.
        ConfigError: a bad ``detect.operating_point``.
    """
    read = read or read_run_inputs(inputs)
    from models.backends import make_scorer

    mark_phase("torch imported")
    scorer = make_scorer(
        inputs.model, backend=detect.backend, device=detect.device, tta=detect.tta,
        threads=inference_threads(detect.threads), batch_size=detect.batch_size,
    )
    mark_phase("scorer ready")
    _check_model_fits(scorer.meta, tiles)
    operating_point = resolve_operating_point(detect.operating_point, dict(getattr(scorer.meta, "operating_points", {}) or {}))
    windows = _site_windows(tiles, detect, operating_point)
    return PreparedRun(inputs, tiles, detect, read.sites, read.before, read.after, scorer, operating_point, windows, read.series_cat)


def _base_components(run: PreparedRun, sites_sha: str) -> dict[str, str]:
    scorer = run.scorer
    return {
        "sites": sites_sha,
        "model": scorer.weights_sha256 + ":" + sha256_text(json.dumps(_meta_dict(scorer.meta), sort_keys=True)),
        "config": sha256_text(json.dumps(_fingerprint_config(run.tiles, run.detect), sort_keys=True)),
        "software": f"sitewatch {__version__}",
    }


def _with_series(run: PreparedRun, components: dict[str, str]) -> dict[str, str]:
    if run.series_cat is not None:
        components["series"] = sha256_text(json.dumps([d.day.isoformat() for d in run.series_cat.days]))
    return components


def _catalogs(run: PreparedRun) -> dict[str, Any]:
    return {"before": run.before, "after": run.after}


def _quick_files(run: PreparedRun | ReadInputs) -> tuple[tuple[str, str], ...]:
    """``(path, quick fingerprint)`` of every raster and sidecar of the run."""
    from tiles.catalog import sidecar_paths

    files = []
    for catalog in (run.before, run.after):
        for scene in catalog.scenes:
            path = Path(scene.path)
            for p in (path, *(q for q in sidecar_paths(path) if q.is_file())):
                files.append((str(p.resolve()), quick_file_fingerprint(p)))
    return tuple(files)


def bind_run(run: PreparedRun, *, quick_files: tuple[tuple[str, str], ...] | None = None) -> RunBinding:
    """Step 2: hash the sites file, the model and the settings, and take the quick fingerprint of
    every raster (:class:`RunBinding`); the rasters' full SHA-256 follows during scoring.

    Args:
        quick_files: :func:`_quick_files` taken earlier, before the full hashing started
            (None: taken here).
    """
    model_dir = _model_folder(run.inputs.model)
    sites_sha = sha256_file(run.inputs.sites)
    components = _base_components(run, sites_sha)
    quick = {epoch: quick_epoch_component(catalog) for epoch, catalog in _catalogs(run).items()}
    components = _with_series(run, {"sites": components.pop("sites"), **quick, **components})
    return RunBinding(
        sites_sha256=sites_sha,
        model_dir=model_dir,
        model_files=tuple(FileHash(f["path"], f["sha256"]) for f in _model_files(model_dir)),
        components=components,
        fingerprint=sha256_text(json.dumps(components, sort_keys=True)),
        deferred=tuple(quick),
        quick_files=quick_files if quick_files is not None else _quick_files(run),
    )


def _identity(run: PreparedRun, binding: RunBinding, entries: dict[str, list[dict[str, Any]]]) -> RunIdentity:
    """The run's provenance identity from its binding and the rasters' full hashes."""
    base = _base_components(run, binding.sites_sha256)
    components = _with_series(
        run,
        {
            "sites": base.pop("sites"),
            "before": epoch_component(entries["before"]),
            "after": epoch_component(entries["after"]),
            **base,
        },
    )
    return RunIdentity(
        sites_sha256=binding.sites_sha256,
        before=tuple(RasterInput.from_json(e) for e in entries["before"]),
        after=tuple(RasterInput.from_json(e) for e in entries["after"]),
        model_dir=binding.model_dir,
        model_files=binding.model_files,
        components=components,
        fingerprint=sha256_text(json.dumps(components, sort_keys=True)),
    )


def fingerprint_run(run: PreparedRun) -> RunIdentity:
    """SHA-256 of the sites file, every raster (and sidecar), the model and the settings that
    change a score, all at once (:func:`run_detect` hashes the rasters during scoring instead)."""
    log.info("hashing inputs for provenance")
    entries = {epoch: hash_scene_inputs(catalog) for epoch, catalog in _catalogs(run).items()}
    return _identity(run, bind_run(run), entries)


def plan_run(run: PreparedRun, binding: RunBinding | RunIdentity, run_dir: Path, keys: RunKeyStore) -> RunPlan:
    """Step 3: the batch plan, checked against the journal of an interrupted run.

    Raises:
        RunFolderError: the journal belongs to a different run, or its batches are not this plan's.
    """
    journal_path = run_dir / JOURNAL_NAME
    index = scan_journal(journal_path, keys)
    check_fingerprint(index.header, binding.components, run_dir)
    cfg = run.detect
    batches = tuple(
        plan_batches(
            run.sites, run.before, run.after, batch_size=cfg.batch_size, group_by_scene=cfg.group_by_scene,
            tiles=run.tiles, spatial=cfg.spatial_order,
        )
    )
    done = frozenset(b.index for b in batches if b.index in index.batches)
    if not _journal_matches(index, batches, run.sites):
        hint = ""
        if cfg.group_by_scene and run.before is not None and run.after is not None:
            # batches differ with detect.spatial_order alone (a journal of a run started with the
            # other value, e.g. by a version before it existed, where the order was the input's)
            other = not cfg.spatial_order
            alt = plan_batches(
                run.sites, run.before, run.after, batch_size=cfg.batch_size, group_by_scene=cfg.group_by_scene,
                tiles=run.tiles, spatial=other,
            )
            if _journal_matches(index, alt, run.sites):
                hint = (
                    f" (it was written with detect.spatial_order={str(other).lower()}: pass --set "
                    f"detect.spatial_order={str(other).lower()} to resume it)"
                )
        raise RunFolderError(
            f"{journal_path}: the journal does not match this run's batches{hint}; pick a new --out "
            "folder, or pass --overwrite"
        )
    if done:
        log.info("resuming: %d of %d batches already scored in %s", len(done), len(batches), journal_path)
    started = index.header.get("started") if index.header else _utc_now()
    return RunPlan(batches=batches, done=done, journal=index, started=str(started))


def _journal_matches(index: Any, batches: Sequence[PlannedBatch], sites: Sequence[Any]) -> bool:
    """Whether every batch the journal holds is the same sites, in order, as ``batches``' one."""
    by_index = {b.index: b for b in batches}
    for k, entry in index.batches.items():
        b = by_index.get(k)
        if b is not None and list(entry[2]) != [sites[i].site_id for i in b.site_indices]:
            return False
    return True


class _InputsRecorder:
    """Takes the rasters' full hashes into the journal as soon as they are known (between
    batches), after checking them against what earlier invocations of the run recorded."""

    def __init__(self, run: PreparedRun, binding: RunBinding, plan: RunPlan, run_dir: Path, hasher: InputHasher) -> None:
        self.run, self.binding, self.plan, self.run_dir, self.hasher = run, binding, plan, run_dir, hasher
        self.identity: RunIdentity | None = None

    def poll(self, writer: JournalWriter, *, wait: bool = False) -> None:
        """Record the hashes once ready (``wait``: wait for them).

        Raises:
            RunFolderError: an input hashes differently from an earlier invocation's record.
            OSError: an input could not be read.
        """
        if self.identity is not None or not (wait or self.hasher.done()):
            return
        entries = self.hasher.result()
        record = inputs_record({epoch: entries[epoch] for epoch in self.binding.deferred})
        check_recorded_inputs(self.plan.journal.inputs, record, self.run_dir)
        writer.append_note("inputs", record)
        log.info("inputs hashed for provenance in %.1f s while scoring", self.hasher.seconds)
        self.identity = _identity(self.run, self.binding, entries)


def _check_unchanged(binding: RunBinding) -> None:
    """Stop a run whose rasters changed (size, time or ends) while it read them.

    Raises:
        InputError: names the file.
    """
    for path, quick in binding.quick_files:
        try:
            now = quick_file_fingerprint(path)
        except OSError as exc:
            raise InputError(f"{path}: can no longer be read ({exc.strerror or exc}) after scoring; rerun when the input is stable") from None
        if now != quick:
            raise InputError(
                f"{path}: the file changed while this run read it (its size, modification time or first/last "
                "bytes differ from the start of the run), so its scores may mix two versions of it; rerun "
                "with --overwrite once the input is stable"
            )


def score_run(
    run: PreparedRun,
    binding: RunBinding,
    plan: RunPlan,
    run_dir: Path,
    keys: RunKeyStore,
    *,
    hasher: InputHasher | None = None,
    client: Any = None,
    progress: bool | None = None,
) -> tuple[dict[str, Any], RunIdentity]:
    """Step 4: score the batches still to do into the journal (locally or on Dask), while the
    rasters are hashed (``hasher``; started here when None).

    Returns:
        ``({site_id: ChipImages}, identity)``: the chip images kept from this scoring pass for the
        best sites (local path; Dask workers keep none, so their top sites are cut again for
        chips), and the run's identity with the rasters' full SHA-256.

    Raises:
        RunFolderError: an input hashes differently from when earlier batches were scored.
        InputError: an input changed while the run read it.
    """
    from tqdm import tqdm

    cfg = run.detect
    hasher = hasher or InputHasher(_catalogs(run))
    header = {
        "fingerprint": binding.fingerprint,
        "components": binding.components,
        "deferred": list(binding.deferred),
        "started": plan.started,
        "sitewatch_version": __version__,
    }
    continuing = plan.journal.header is not None
    writer = JournalWriter(
        run_dir / JOURNAL_NAME,
        header,
        truncate_at=plan.journal.good_end if continuing else None,
        fsync_every=cfg.journal_fsync_every,
        keys=keys,
        resumed={"started": _utc_now()} if continuing else None,
    )
    recorder = _InputsRecorder(run, binding, plan, run_dir, hasher)
    chip_cache = TopChipCache(cfg.chips_top_n)
    bar = tqdm(
        total=len(run.sites),
        initial=sum(len(b.site_indices) for b in plan.batches if b.index in plan.done),
        unit="site",
        desc="detect",
        disable=(None if progress is None else not progress),
        dynamic_ncols=True,
        smoothing=0.1,
    )
    try:
        with writer:
            recorder.poll(writer)
            if run.series_cat is not None:
                from detect.series import score_series_batches

                records = score_series_batches(
                    run.sites, plan.todo, run.make_cutter, run.scorer, cfg=cfg, decimals=cfg.score_decimals, chip_cache=chip_cache
                )
            elif client is not None:
                from detect.cluster import WorkerSpec, score_batches_dask

                spec = WorkerSpec(
                    run_token=binding.fingerprint,
                    tiles=run.tiles,
                    model=str(binding.model_dir.resolve()),
                    device=cfg.device,
                    tta=cfg.tta,
                    threads=cfg.threads,
                    decimals=cfg.score_decimals,
                    windows=run.windows,
                    backend=cfg.backend,
                )
                records = score_batches_dask(client, run.sites, plan.todo, run.before, run.after, spec)
            elif cut_workers(cfg):
                from detect.workers import CutterSpec, score_batches_workers

                records = score_batches_workers(
                    run.sites, plan.todo, CutterSpec(run.before, run.after, run.tiles, run.windows), run.scorer,
                    workers=cut_workers(cfg), decimals=cfg.score_decimals, prefetch=cfg.prefetch_batches, chip_cache=chip_cache,
                )
            else:
                records = score_batches_local(
                    run.sites,
                    plan.todo,
                    run.make_cutter,
                    run.scorer,
                    decimals=cfg.score_decimals,
                    prefetch=cfg.prefetch_batches,
                    chip_cache=chip_cache,
                    windows=run.windows,
                )
            first = True
            for record in records:
                writer.append(record)
                if first:
                    mark_phase("first batch")
                    first = False
                bar.update(len(record.rows))
                recorder.poll(writer)
            mark_phase("last batch")
            recorder.poll(writer, wait=True)
            try:
                _check_unchanged(binding)
            except InputError as exc:  # a rerun scores this invocation's batches again
                writer.append_note("changed", {"reason": str(exc)})
                raise
    finally:
        bar.close()
    if recorder.identity is None:  # pragma: no cover - poll(wait=True) sets it or raises
        raise RuntimeError("the inputs were not hashed")
    return chip_cache.images(), recorder.identity


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    When scoring ends, GDAL's block cache and the cut and inference buffers are freed, but the
    allocator keeps the pages (much of them in the reader thread's arena, where the writing
    steps on the main thread never reuse them). Trimming them first means the outputs are
    written from a smaller base: 1,127 -> 847 MiB RSS at the end of scoring 20,000 sites (README,
    "Peak memory").
    """
    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)


class _Spool:
    """Every journal row in plan order, spooled to a temporary file: only sort keys, file offsets
    and the embeddings (a compact float16 array, ``D`` values per site) stay in memory, so ranking
    any number of sites needs little memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: list[tuple[int, float, str, int, int, int]] = []
        self.columns: dict[str, None] = {}
        self._fh = open(path, "wb")
        self._embeddings: list[np.ndarray] = []
        self._slots = 0

    def add(self, row: dict[str, str], slot: int = -1) -> None:
        """Spool one row; ``slot``: its row in :meth:`embeddings` (-1: none)."""
        line = (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        self.keys.append((*sort_key(row), self._fh.tell(), len(line), slot))
        self._fh.write(line)
        for column in row:
            self.columns.setdefault(column)

    def add_embeddings(self, embeddings: np.ndarray) -> int:
        """Keep a batch's ``(K, D)`` embeddings; returns the slot of its first row."""
        first = self._slots
        if len(embeddings):
            self._embeddings.append(np.asarray(embeddings, dtype=np.float16))
            self._slots += len(embeddings)
        return first

    def embeddings(self) -> np.ndarray:
        """``(slots, D)`` float16: every kept embedding, in spooling order (``(0, 0)`` when none)."""
        if not self._embeddings:
            return np.zeros((0, 0), np.float16)
        if len(self._embeddings) > 1:
            self._embeddings = [np.concatenate(self._embeddings)]
        return self._embeddings[0]

    def ranked_ok(self) -> list[tuple[str, int]]:
        """``(site id, embedding slot)`` of the assessed rows, in rank order."""
        self.keys.sort()
        return [(k[2], k[5]) for k in self.keys if k[0] == 0]

    def ordered(self) -> Iterator[dict[str, str]]:
        """The rows in ``scores.csv`` order (:func:`detect.ranking.sort_key`)."""
        self._fh.close()
        self.keys.sort()
        with open(self.path, "rb") as fh:
            for *_, offset, length, _slot in self.keys:
                fh.seek(offset)
                yield json.loads(fh.read(length).decode("utf-8"))

    def close(self) -> None:
        """Remove the file and let go of the keys and embeddings."""
        self._fh.close()
        self.path.unlink(missing_ok=True)
        self.keys = []
        self._embeddings = []


def _read_journal(plan: RunPlan, run_dir: Path, keys: RunKeyStore, spool: _Spool, *, embeddings: bool) -> None:
    """Spool every row of the plan's batches, and their embeddings (when wanted)."""
    journal_path = run_dir / JOURNAL_NAME
    index = scan_journal(journal_path, keys)
    for batch in plan.batches:
        offset, length, _ = index.batches[batch.index]
        record = read_batch(journal_path, offset, length, index.key)
        slot_of: dict[str, int] = {}
        if embeddings and len(record.embedding_ids):
            first = spool.add_embeddings(record.embeddings)
            slot_of = {sid: first + j for j, sid in enumerate(record.embedding_ids)}
        for row in record.rows:
            spool.add(dict(row), slot_of.get(row["site_id"], -1))


def _write_embeddings(run_dir: Path, ranked: Sequence[tuple[str, int]], spool: _Spool, enabled: bool) -> None:
    """``embeddings.npz``: the assessed sites that have an embedding, in rank order, streamed."""
    path = run_dir / "embeddings.npz"
    if not enabled:
        path.unlink(missing_ok=True)
        return
    with_emb = [(sid, slot) for sid, slot in ranked if slot >= 0]
    store = spool.embeddings()
    write_embeddings_rows(path, [sid for sid, _ in with_emb], store, np.array([slot for _, slot in with_emb], dtype=np.int64))


def _write_ranked(run: PreparedRun, run_dir: Path, spool: _Spool, chips: dict[str, dict[str, str]], per_site: PerSiteSpool) -> ReportCollector:
    """Stream the spooled rows, ranked (:func:`detect.ranking.assign_ranks`), into ``scores.csv``
    and ``scores.geojson``, gathering the report and spooling the per-site records on the way."""
    cfg = run.detect
    collector = ReportCollector(cfg.report_max_sites)
    columns = dict(spool.columns)
    renamed_input = CAUTION_COLUMN in columns  # an input column of that name (pair rows never hold ours)
    if renamed_input:
        columns[f"input_{CAUTION_COLUMN}"] = None
    cautions = Cautions(run.scorer.meta, cfg) if cfg.caution else None
    writer = ScoresWriter(run_dir, score_columns([{**columns, **({CAUTION_COLUMN: None} if cautions else {})}]))
    for row in assign_ranks(spool.ordered(), run.operating_point):
        if renamed_input:
            row[f"input_{CAUTION_COLUMN}"] = row.pop(CAUTION_COLUMN, "")
        if cautions is not None:
            row[CAUTION_COLUMN] = cautions.of(row)
        paths = chips.get(row["site_id"], {})
        for column in CHIP_COLUMNS:
            row[column] = paths.get(column, "")
        writer.add(row)
        collector.add(row)
        per_site.add(PerSite(row["site_id"], row["status"], *(row.get(k, "") for k in PER_SITE_COLUMNS[2:])))
    writer.close()
    return collector


def rank_and_write(
    run: PreparedRun,
    identity: RunIdentity,
    plan: RunPlan,
    run_dir: Path,
    keys: RunKeyStore,
    *,
    chip_images: dict[str, Any],
    execution: Execution,
) -> tuple[Manifest, str]:
    """Step 5: rank every journal row and write the outputs, ``manifest.json`` last.

    Returns:
        The manifest and the run digest (SHA-256 of ``manifest.json``'s bytes).
    """
    cfg = run.detect
    # The per-site records wait on disk (an anonymous file) for manifest.json, and the spooled
    # rows' keys, the ranked list and the embeddings are let go before the GIS files are
    # gathered: the steps that hold something per site do not hold it at the same time.
    per_site = PerSiteSpool()
    spool = _Spool(run_dir / "rows.spool.tmp")
    try:
        _read_journal(plan, run_dir, keys, spool, embeddings=cfg.embeddings)
        mark_phase("journal read")
        ranked = spool.ranked_ok()
        n_ok = len(ranked)
        wanted = [sid for sid, _ in (ranked if cfg.chips_top_n < 0 else ranked[: cfg.chips_top_n])]
        wanted_set = set(wanted)
        by_id = {s.site_id: s for s in run.sites if s.site_id in wanted_set}
        del wanted_set
        shutil.rmtree(run_dir / CHIPS_DIR, ignore_errors=True)
        chips = write_site_chips(
            [by_id[sid] for sid in wanted], run_dir, run.make_chip_source, run.scorer, cached=chip_images, batch_size=min(cfg.batch_size, 32)
        )
        del wanted, by_id
        mark_phase("chips written")
        collector = _write_ranked(run, run_dir, spool, chips, per_site)
        _write_embeddings(run_dir, ranked, spool, cfg.embeddings)
        mark_phase("scores written")
        del ranked
    finally:
        spool.close()
    del spool
    config_path = write_config(run_config(run.tiles, cfg), run_dir)

    written = ["scores.csv", "scores.geojson", "config.yaml", "report.html"]
    footprints = {s.site_id: s.footprint for s in run.sites if s.footprint}
    written += write_gis_files(run_dir, threshold=run.operating_point.threshold, footprints=footprints)
    mark_phase("gis written")
    written += [paths[c] for paths in chips.values() for c in CHIP_COLUMNS]
    if cfg.embeddings:
        written.append("embeddings.npz")
    meta = _meta_dict(run.scorer.meta)
    report = collector.summary()
    write_report(
        run_dir / "report.html",
        report,
        operating_point=run.operating_point,
        model_info={"arch": meta.get("arch", ""), "weights_sha256": run.scorer.weights_sha256, "path": str(identity.model_dir)},
        run_info={
            "sites_file": str(run.inputs.sites),
            "before": len(identity.before),
            "after": len(identity.after),
            "credits": sorted({e.credit for e in (*identity.before, *identity.after) if e.credit}),
        },
    )
    mark_phase("report written")
    manifest = Manifest(
        sitewatch_version=__version__,
        run_fingerprint=identity.fingerprint,
        fingerprint_components=identity.components,
        started=plan.started,
        finished=_utc_now(),
        inputs=Inputs(
            sites=SitesInput(str(Path(run.inputs.sites).resolve()), identity.sites_sha256, len(run.sites)),
            before=identity.before,
            after=identity.after,
            skipped_before=tuple(SkippedRaster(str(p), r) for p, r in run.before.skipped),
            skipped_after=tuple(SkippedRaster(str(p), r) for p, r in run.after.skipped),
        ),
        model=ModelInfo(
            argument=str(run.inputs.model),
            path=str(identity.model_dir.resolve()),
            weights_sha256=run.scorer.weights_sha256,
            files=identity.model_files,
            meta=meta,
        ),
        config=ConfigInfo(file="config.yaml", sha256=sha256_file(config_path), values=run_config(run.tiles, cfg)),
        operating_point=run.operating_point,
        software=software_versions(),
        execution=execution,
        counts=Counts(sites=len(per_site), ok=n_ok, cannot_assess=len(per_site) - n_ok, flagged=report.flagged),
        per_site=per_site,
        outputs=hash_outputs(run_dir, written),
        series=_series_manifest(run.series_cat, cfg) if run.series_cat is not None else None,
    )
    (run_dir / SIGNATURE_NAME).unlink(missing_ok=True)  # a signature of an earlier manifest is void
    write_manifest(run_dir, manifest)
    mark_phase("manifest written")
    run_digest = sha256_file(run_dir / MANIFEST_NAME)
    log.info("run digest: sha256:%s (SHA-256 of %s; record it outside the folder)", run_digest, run_dir / MANIFEST_NAME)
    return manifest, run_digest


def run_detect(
    sites: str | Path,
    before: Sequence[str | Path],
    after: Sequence[str | Path],
    out: str | Path,
    *,
    tiles: TilesConfig | None = None,
    detect: DetectConfig | None = None,
    model: str | Path = "default",
    overwrite: bool = False,
    workers: int | None = None,
    dask_address: str | None = None,
    dask_processes: bool = True,
    progress: bool | None = None,
    series: Sequence[str | Path] | None = None,
) -> RunSummary:
    """Score every site and write the run folder (resuming an interrupted run in ``out``).

    Args:
        sites: the sites file (CSV or GeoJSON; see :func:`tiles.sites.read_sites`).
        before, after: GeoTIFF files, folders or globs of each epoch.
        out: the run folder.
        tiles: the tiles settings (defaults when None).
        detect: the detect settings (defaults when None).
        model: a model folder or ``"default"`` (the bundled model).
        overwrite: discard an existing run in ``out`` instead of refusing or resuming.
        workers: score on a new Dask ``LocalCluster`` with this many workers.
        dask_address: score on an existing Dask cluster (``tcp://HOST:PORT``).
        dask_processes: LocalCluster workers as processes (False: threads in this process).
        progress: show a progress bar (None: automatic, on for terminals).
        series: an image series instead of ``before``/``after`` (which must then be empty):
            dated GeoTIFF files, folders, globs or STAC files; every site is scored across its
            usable dates and its change bracketed (:mod:`detect.series`). Local runs only.

    Raises:
        InputError: the sites file cannot be used.
        RasterError: no readable raster in ``before`` or ``after``.
        ModelError: the model cannot be loaded or does not fit the tiles settings.
        RunFolderError: ``out`` holds a different run or something that is not a run, or another
            detect is writing it.
        ConfigError: a bad operating point.
        UsageError: a bad worker count or Dask address.
    """
    started_clock = time.perf_counter()
    mark_phase("run_detect")
    tiles = tiles or TilesConfig()
    cfg = detect or DetectConfig()
    run_dir = Path(out)
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: must be at least 1")
    if series and (before or after):
        raise UsageError("--series: give either --series or --before/--after, not both")
    if series and (workers or dask_address):
        raise UsageError("--series: image series are scored locally; drop --workers/--dask")
    inputs = RunInputs(Path(sites), tuple(before), tuple(after), model, tuple(series or ()))
    with ExitStack() as stack:
        stack.enter_context(bounded_block_cache())  # GDAL_CACHEMAX unset: a fixed cache, not 5 % of RAM
        # GIL-free work overlaps the start-up: every raster byte is hashed in a thread from
        # before torch is imported (cutting batches meanwhile was measured to starve the import
        # of the GIL: README, "Start-up")
        read = read_run_inputs(inputs)
        quick_files = _quick_files(read)  # before the full hash starts: a later change is caught
        hasher = InputHasher({"before": read.before, "after": read.after})
        prepared = prepare_run(inputs, tiles, cfg, read=read)
        client = None
        if workers or dask_address:
            from detect.cluster import dask_client

            client = stack.enter_context(dask_client(dask_address, workers, processes=dask_processes))
        _check_folder(run_dir, overwrite)
        run_dir.mkdir(parents=True, exist_ok=True)
        with run_lock(run_dir):
            if overwrite:
                _discard_run(run_dir)
            keys = RunKeyStore.from_setting(cfg.run_keys_dir)  # the journal's key lives outside the run folder
            binding = bind_run(prepared, quick_files=quick_files)
            plan = plan_run(prepared, binding, run_dir, keys)
            mark_phase("planned")
            scoring_started = time.perf_counter()
            chip_images, identity = score_run(prepared, binding, plan, run_dir, keys, hasher=hasher, client=client, progress=progress)
            scoring_seconds = time.perf_counter() - scoring_started
            release_free_heap()
            execution = Execution(
                mode="dask" if client is not None else "local", workers=workers, dask_address=dask_address, batches_resumed=len(plan.done)
            )
            manifest, run_digest = rank_and_write(prepared, identity, plan, run_dir, keys, chip_images=chip_images, execution=execution)
    counts = manifest.counts
    return RunSummary(
        run_dir=run_dir,
        sites=counts.sites,
        ok=counts.ok,
        cannot_assess=counts.cannot_assess,
        flagged=counts.flagged,
        operating_point=prepared.operating_point,
        batches_total=len(plan.batches),
        batches_resumed=len(plan.done),
        seconds=time.perf_counter() - started_clock,
        scoring_seconds=scoring_seconds,
        run_digest=run_digest,
    )
