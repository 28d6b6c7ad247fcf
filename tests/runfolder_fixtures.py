"""Run folders for tests, written through the run folder contract (:mod:`detect.runfolder`).

A manifest made here has every section a real ``sitewatch detect`` writes, filled with what a
test gives and plain placeholders for the rest (no model files, no software versions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from detect.provenance import hash_outputs
from detect.runfolder import (
    ConfigInfo,
    Counts,
    Execution,
    Inputs,
    Manifest,
    ModelInfo,
    OperatingPoint,
    PerSite,
    RasterInput,
    ScoreRow,
    SitesInput,
    write_manifest,
)
from sitewatch.hashing import sha256_file


def raster_input(path: Path, scene_id: str | None = None) -> RasterInput:
    """A manifest raster record of a real file."""
    return RasterInput(scene_id or path.stem, str(path), sha256_file(path), "EPSG:4326", None, None)


def manifest_for(
    run_dir: Path,
    rows: Sequence[ScoreRow],
    *,
    sites_path: Path,
    before: Sequence[Path] = (),
    after: Sequence[Path] = (),
    threshold: float = 0.5,
    operating_points: Mapping[str, float] | None = None,
    config_values: Mapping[str, Any] | None = None,
    outputs: Mapping[str, str] | None = None,
) -> Manifest:
    """A manifest for ``rows`` in ``run_dir`` (outputs: every file there, hashed, unless given)."""
    n_ok = sum(1 for r in rows if r.ok)
    return Manifest(
        sitewatch_version="test",
        run_fingerprint="0" * 64,
        fingerprint_components={"sites": "0" * 64},
        started="2026-01-01T00:00:00+00:00",
        finished="2026-01-01T00:00:01+00:00",
        inputs=Inputs(
            sites=SitesInput(str(sites_path), sha256_file(sites_path) if sites_path.is_file() else "", len(rows)),
            before=tuple(raster_input(p) for p in before),
            after=tuple(raster_input(p) for p in after),
        ),
        model=ModelInfo(
            argument="default",
            path="default",
            weights_sha256="0" * 64,
            files=(),
            meta={"arch": "test", "operating_points": dict(operating_points or {"screening": threshold})},
        ),
        config=ConfigInfo(file="config.yaml", sha256="", values=dict(config_values or {"detect": {"operating_point": "screening"}})),
        operating_point=OperatingPoint("screening", threshold, "test fixture"),
        software={},
        execution=Execution("local", None, None, 0),
        counts=Counts(len(rows), n_ok, len(rows) - n_ok, sum(1 for r in rows if r.flagged)),
        per_site=tuple(PerSite.of(r) for r in rows),
        outputs=dict(hash_outputs(run_dir) if outputs is None else outputs),
    )


def write_test_manifest(run_dir: Path, rows: Sequence[ScoreRow], **kwargs: Any) -> Path:
    """Write :func:`manifest_for` into ``run_dir``; returns the manifest's path."""
    return write_manifest(run_dir, manifest_for(run_dir, rows, **kwargs))
