"""``sitewatch detect`` as a library call: :func:`run_detect`.

Order of work: read the sites and the raster headers, load the model (run-level problems stop
here, before anything slow), fingerprint inputs/model/config, open or resume the journal, score
the remaining batches (locally or on Dask), then write every output from the journal and finish
with ``manifest.json``. The journal makes a run resumable: rerunning the same command after an
interruption scores only the batches that are missing and ends with identical outputs.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from detect.chips import CHIPS_DIR, TopChipCache, write_site_chips
from detect.config import PRESENTATION_KEYS
from detect.gis import GIS_FILES, write_gis_files
from detect.journal import JOURNAL_NAME, JournalWriter, RunKeyStore, check_fingerprint, read_batch, scan_journal
from detect.outputs import CHIP_COLUMNS, ScoresWriter, score_columns, write_embeddings
from detect.pipeline import PlannedBatch, plan_batches, score_batches_local
from detect.provenance import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    epoch_component,
    hash_outputs,
    hash_scene_inputs,
    sha256_file,
    sha256_text,
    software_versions,
    write_json_atomic,
)
from detect.ranking import OperatingPoint, resolve_operating_point, sort_key
from detect.report import ReportCollector, write_report
from sitewatch import __version__
from sitewatch.config import config_to_dict, write_config
from sitewatch.errors import InputError, ModelError, RunFolderError, UsageError
from detect.config import DetectConfig
from tiles.config import TilesConfig

log = logging.getLogger(__name__)

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
        others = [p.name for p in run_dir.iterdir() if p.name != "run.lock"]
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


@contextmanager
def _run_lock(run_dir: Path) -> Iterator[None]:
    path = run_dir / "run.lock"
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunFolderError(
                f"--out {run_dir}: another sitewatch detect is writing this run folder; wait for it "
                "or pick a new --out folder"
            ) from None
        yield
    finally:
        fh.close()
        path.unlink(missing_ok=True)


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


def inference_threads(threads: int) -> int:
    """Torch threads for inference: ``threads`` if set, else all cores but one.

    The spare core is for the reader thread that cuts the next batches meanwhile; on a 2-core
    machine one torch thread plus the reader was ~1.8x faster than two torch threads plus the
    reader (benchmarks/bench_detect.py, README).
    """
    if threads > 0:
        return threads
    return max(1, (os.cpu_count() or 2) - 1)


def cut_workers(cfg: DetectConfig) -> int:
    """Cut worker processes of a local run (0: a reader thread); see :mod:`detect.workers`."""
    if cfg.cut_workers is not None:
        return cfg.cut_workers
    from detect.workers import default_cut_workers

    return default_cut_workers(1 if cfg.device == "cuda" else inference_threads(cfg.threads))


def _utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


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

    Raises:
        InputError: the sites file cannot be used.
        RasterError: no readable raster in ``before`` or ``after``.
        ModelError: the model cannot be loaded or does not fit the tiles settings.
        RunFolderError: ``out`` holds a different run or something that is not a run.
        UsageError: a bad operating point or Dask address.
    """
    from tiles.catalog import RasterCatalog
    from tiles.sites import read_sites

    started_clock = time.perf_counter()
    tiles = tiles or TilesConfig()
    cfg = detect or DetectConfig()
    run_dir = Path(out)
    sites_path = Path(sites)
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: must be at least 1")

    site_list = read_sites(sites_path)
    if not site_list:
        raise InputError(f"{sites_path}: no sites to score")
    before_cat = RasterCatalog.from_paths(list(before), epoch="before")
    after_cat = RasterCatalog.from_paths(list(after), epoch="after")

    with ExitStack() as stack:
        client = None
        if workers or dask_address:
            from detect.cluster import dask_client

            client = stack.enter_context(dask_client(dask_address, workers, processes=dask_processes))
        summary, resumed, scoring_seconds = _run_in_folder(
            site_list,
            before_cat,
            after_cat,
            run_dir,
            sites_path=sites_path,
            tiles=tiles,
            cfg=cfg,
            model=model,
            overwrite=overwrite,
            client=client,
            execution={"mode": "dask" if client is not None else "local", "workers": workers, "dask_address": dask_address},
            progress=progress,
        )
    seconds = time.perf_counter() - started_clock
    return replace(summary, batches_resumed=resumed, seconds=seconds, scoring_seconds=scoring_seconds)


def _run_in_folder(
    site_list: Sequence[Any],
    before_cat: Any,
    after_cat: Any,
    run_dir: Path,
    *,
    sites_path: Path,
    tiles: TilesConfig,
    cfg: DetectConfig,
    model: str | Path,
    overwrite: bool,
    client: Any,
    execution: dict[str, Any],
    progress: bool | None,
) -> tuple[RunSummary, int, float]:
    """Load the model, then fingerprint, resume, score and finish the run folder."""
    from tiles.cut import PairCutter

    from models.backends import make_scorer

    scorer = make_scorer(
        model, backend=cfg.backend, device=cfg.device, tta=cfg.tta, threads=inference_threads(cfg.threads),
        batch_size=cfg.batch_size,
    )
    _check_model_fits(scorer.meta, tiles)
    operating_point = resolve_operating_point(cfg.operating_point, dict(getattr(scorer.meta, "operating_points", {}) or {}))

    _check_folder(run_dir, overwrite)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _run_lock(run_dir):
        if overwrite:
            _discard_run(run_dir)
        log.info("hashing inputs for provenance")
        sites_sha = sha256_file(sites_path)
        before_entries = hash_scene_inputs(before_cat)
        after_entries = hash_scene_inputs(after_cat)
        model_dir = _model_folder(model)
        model_files = _model_files(model_dir)
        fingerprint_config = _fingerprint_config(tiles, cfg)
        components = {
            "sites": sites_sha,
            "before": epoch_component(before_entries),
            "after": epoch_component(after_entries),
            "model": scorer.weights_sha256 + ":" + sha256_text(json.dumps(_meta_dict(scorer.meta), sort_keys=True)),
            "config": sha256_text(json.dumps(fingerprint_config, sort_keys=True)),
            "software": f"sitewatch {__version__}",
        }
        run_token = sha256_text(json.dumps(components, sort_keys=True))

        journal_path = run_dir / JOURNAL_NAME
        keys = RunKeyStore.from_setting(cfg.run_keys_dir)  # the journal's key lives outside the run folder
        index = scan_journal(journal_path, keys)
        header, good_end = index.header, index.good_end
        check_fingerprint(header, components, run_dir)
        plan = plan_batches(
            site_list, before_cat, after_cat, batch_size=cfg.batch_size, group_by_scene=cfg.group_by_scene, tiles=tiles
        )
        plan_ok = all(
            list(index.batches[b.index][2]) == [site_list[i].site_id for i in b.site_indices]
            for b in plan
            if b.index in index.batches
        )
        if not plan_ok:
            raise RunFolderError(
                f"{journal_path}: the journal does not match this run's batches; pick a new --out "
                "folder, or pass --overwrite"
            )
        done = {b.index for b in plan if b.index in index.batches}
        resumed = len(done)
        started = header.get("started") if header else _utc_now()
        if resumed:
            log.info("resuming: %d of %d batches already scored in %s", resumed, len(plan), journal_path)
        todo = [b for b in plan if b.index not in done]

        def make_cutter() -> Any:
            return PairCutter(before_cat, after_cat, tiles)

        scoring_started = time.perf_counter()
        writer = JournalWriter(
            journal_path,
            {"fingerprint": run_token, "components": components, "started": started, "sitewatch_version": __version__},
            truncate_at=good_end if header is not None else None,
            fsync_every=cfg.journal_fsync_every,
            keys=keys,
        )
        chip_cache = TopChipCache(cfg.chips_top_n)
        windows = _site_windows(tiles, cfg, operating_point)
        with writer:
            _score_todo(
                todo,
                site_list,
                writer,
                make_cutter=make_cutter,
                scorer=scorer,
                tiles=tiles,
                cfg=cfg,
                before_cat=before_cat,
                after_cat=after_cat,
                model_dir=model_dir.resolve(),
                run_token=run_token,
                client=client,
                chip_cache=chip_cache,
                windows=windows,
                progress=progress,
                done_sites=sum(len(plan[i].site_indices) for i in done),
            )
        scoring_seconds = time.perf_counter() - scoring_started

        summary = _finish(
            run_dir,
            plan,
            journal_path,
            site_list,
            scorer=scorer,
            make_cutter=make_cutter,
            chip_images=chip_cache.images(),
            tiles=tiles,
            cfg=cfg,
            operating_point=operating_point,
            manifest_parts={
                "started": started,
                "sites_path": sites_path,
                "sites_sha": sites_sha,
                "before": before_entries,
                "after": after_entries,
                "skipped": {
                    "before": [[str(p), r] for p, r in before_cat.skipped],
                    "after": [[str(p), r] for p, r in after_cat.skipped],
                },
                "model_dir": model_dir,
                "model_arg": str(model),
                "model_files": model_files,
                "components": components,
                "run_token": run_token,
                "execution": {**execution, "batches_resumed": resumed},
            },
        )
    return summary, resumed, scoring_seconds


def _score_todo(
    todo: Sequence[PlannedBatch],
    site_list: Sequence[Any],
    writer: JournalWriter,
    *,
    make_cutter: Any,
    scorer: Any,
    tiles: TilesConfig,
    cfg: DetectConfig,
    before_cat: Any,
    after_cat: Any,
    model_dir: Path,
    run_token: str,
    client: Any,
    chip_cache: TopChipCache,
    progress: bool | None,
    done_sites: int,
    windows: Any = None,
) -> None:
    from tqdm import tqdm

    bar = tqdm(
        total=len(site_list),
        initial=done_sites,
        unit="site",
        desc="detect",
        disable=(None if progress is None else not progress),
        dynamic_ncols=True,
        smoothing=0.1,
    )
    try:
        if client is not None:
            from detect.cluster import WorkerSpec, score_batches_dask

            spec = WorkerSpec(
                run_token=run_token,
                tiles=tiles,
                model=str(model_dir),
                device=cfg.device,
                tta=cfg.tta,
                threads=cfg.threads,
                decimals=cfg.score_decimals,
                windows=windows,
                backend=cfg.backend,
            )
            for record in score_batches_dask(client, site_list, todo, before_cat, after_cat, spec):
                writer.append(record)
                bar.update(len(record.rows))
        else:
            workers = cut_workers(cfg)
            if workers:
                from detect.workers import CutterSpec, score_batches_workers

                spec_w = CutterSpec(before_cat, after_cat, tiles, windows)
                records = score_batches_workers(
                    site_list, todo, spec_w, scorer, workers=workers, decimals=cfg.score_decimals,
                    prefetch=cfg.prefetch_batches, chip_cache=chip_cache,
                )
            else:
                records = score_batches_local(
                    site_list,
                    todo,
                    make_cutter,
                    scorer,
                    decimals=cfg.score_decimals,
                    prefetch=cfg.prefetch_batches,
                    chip_cache=chip_cache,
                    windows=windows,
                )
            for record in records:
                writer.append(record)
                bar.update(len(record.rows))
    finally:
        bar.close()


def _site_windows(tiles: TilesConfig, cfg: DetectConfig, operating_point: OperatingPoint) -> Any:
    """The parts-and-context step (:mod:`detect.parts`), or None when both are off."""
    from detect.parts import SiteWindows

    step = SiteWindows(tiles, cfg, operating_point.threshold)
    return step if step.active else None


def _finish(
    run_dir: Path,
    plan: Sequence[PlannedBatch],
    journal_path: Path,
    site_list: Sequence[Any],
    *,
    scorer: Any,
    make_cutter: Any,
    chip_images: Any,
    tiles: TilesConfig,
    cfg: DetectConfig,
    operating_point: OperatingPoint,
    manifest_parts: dict[str, Any],
) -> RunSummary:
    """Rank, write chips and every output from the journal, and finally ``manifest.json``.

    Memory stays small for any number of sites: rows are spooled to a temporary file in plan
    order and only their sort keys and file offsets are held; the outputs are then streamed in
    ranked order.
    """
    index = scan_journal(journal_path, RunKeyStore.from_setting(cfg.run_keys_dir))
    spool_path = run_dir / "rows.spool.tmp"
    keys: list[tuple[int, float, str, int, int]] = []
    seen_columns: dict[str, None] = {}
    emb_by_id: dict[str, np.ndarray] = {}
    with open(spool_path, "wb") as spool:
        for batch in plan:
            offset, length, _ = index.batches[batch.index]
            record = read_batch(journal_path, offset, length, index.key)
            for row in record.rows:
                line = (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
                keys.append((*sort_key(row), spool.tell(), len(line)))
                spool.write(line)
                for column in row:
                    seen_columns.setdefault(column)
            if cfg.embeddings:
                for sid, vec in zip(record.embedding_ids, record.embeddings):
                    emb_by_id[sid] = vec
    keys.sort()
    ok_ids = [k[2] for k in keys if k[0] == 0]

    # chips for the top-ranked assessable sites (kept while scoring, or cut again)
    wanted = ok_ids if cfg.chips_top_n < 0 else ok_ids[: cfg.chips_top_n]
    by_id = {s.site_id: s for s in site_list}
    shutil.rmtree(run_dir / CHIPS_DIR, ignore_errors=True)
    chips = write_site_chips(
        [by_id[sid] for sid in wanted],
        run_dir,
        make_cutter,
        scorer,
        cached=chip_images,
        batch_size=min(cfg.batch_size, 32),
    )
    columns = score_columns([seen_columns])

    collector = ReportCollector(cfg.report_max_sites)
    per_site: list[list[str]] = []
    writer = ScoresWriter(run_dir, columns)
    rank = 0
    with open(spool_path, "rb") as spool:
        for group, neg_score, sid, offset, length in keys:
            spool.seek(offset)
            row = json.loads(spool.read(length).decode("utf-8"))
            if group == 0:
                rank += 1
                row["rank"] = str(rank)
                row["flagged"] = "true" if -neg_score >= operating_point.threshold else "false"
            else:
                row["score"], row["rank"], row["flagged"] = "", "", "false"
            paths = chips.get(sid, {})
            for column in CHIP_COLUMNS:
                row[column] = paths.get(column, "")
            writer.add(row)
            collector.add(row)
            per_site.append(
                [sid, row["status"]] + [row.get(k, "") for k in ("before_scene", "after_scene", "before_time", "after_time")]
            )
    writer.close()
    spool_path.unlink(missing_ok=True)

    if cfg.embeddings:
        ids = [sid for sid in ok_ids if sid in emb_by_id]
        dim = next((v.shape[0] for v in emb_by_id.values()), 0)
        matrix = np.stack([emb_by_id[i] for i in ids]) if ids else np.zeros((0, dim), np.float16)
        write_embeddings(run_dir / "embeddings.npz", ids, matrix)
        del emb_by_id
    else:
        (run_dir / "embeddings.npz").unlink(missing_ok=True)
    config_path = write_config(run_config(tiles, cfg), run_dir)

    parts = manifest_parts
    written = ["scores.csv", "scores.geojson", "config.yaml", "report.html"]
    written += write_gis_files(run_dir, threshold=operating_point.threshold, footprints={s.site_id: s.footprint for s in site_list if s.footprint})
    written += [paths[c] for paths in chips.values() for c in CHIP_COLUMNS]
    if cfg.embeddings:
        written.append("embeddings.npz")
    meta = _meta_dict(scorer.meta)
    model_info = {"arch": meta.get("arch", ""), "weights_sha256": scorer.weights_sha256, "path": str(parts["model_dir"])}
    report = collector.summary()
    write_report(
        run_dir / "report.html",
        report,
        operating_point=operating_point,
        model_info=model_info,
        run_info={
            "sites_file": str(parts["sites_path"]),
            "before": len(parts["before"]),
            "after": len(parts["after"]),
            "credits": sorted({e["credit"] for e in (*parts["before"], *parts["after"]) if e.get("credit")}),
        },
    )

    n_ok = len(ok_ids)
    manifest = {
        "format": MANIFEST_FORMAT,
        "sitewatch_version": __version__,
        "run_fingerprint": parts["run_token"],
        "fingerprint_components": parts["components"],
        "started": parts["started"],
        "finished": _utc_now(),
        "inputs": {
            "sites": {"path": str(Path(parts["sites_path"]).resolve()), "sha256": parts["sites_sha"], "count": len(site_list)},
            "before": parts["before"],
            "after": parts["after"],
            "skipped_rasters": parts["skipped"],
        },
        "model": {
            "argument": parts["model_arg"],
            "path": str(Path(parts["model_dir"]).resolve()),
            "weights_sha256": scorer.weights_sha256,
            "files": parts["model_files"],
            "meta": meta,
        },
        "config": {"file": "config.yaml", "sha256": sha256_file(config_path), "values": run_config(tiles, cfg)},
        "operating_point": {"name": operating_point.name, "threshold": operating_point.threshold, "source": operating_point.source},
        "software": software_versions(),
        "execution": parts["execution"],
        "counts": {"sites": len(keys), "ok": n_ok, "cannot_assess": len(keys) - n_ok, "flagged": report.flagged},
        "per_site_columns": ["site_id", "status", "before_scene", "after_scene", "before_time", "after_time"],
        "per_site": per_site,
        "outputs": hash_outputs(run_dir, written),
    }
    (run_dir / SIGNATURE_NAME).unlink(missing_ok=True)  # a signature of an earlier manifest is void
    write_json_atomic(run_dir / MANIFEST_NAME, manifest)
    run_digest = sha256_file(run_dir / MANIFEST_NAME)
    log.info("run digest: sha256:%s (SHA-256 of %s; record it outside the folder)", run_digest, run_dir / MANIFEST_NAME)
    return RunSummary(
        run_dir=run_dir,
        sites=len(keys),
        ok=n_ok,
        cannot_assess=len(keys) - n_ok,
        flagged=report.flagged,
        operating_point=operating_point,
        batches_total=len(plan),
        batches_resumed=0,
        seconds=0.0,
        scoring_seconds=0.0,
        run_digest=run_digest,
    )
