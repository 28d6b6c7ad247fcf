"""Provenance of a run folder: SHA-256 of inputs and outputs, versions, and ``sitewatch verify``.

``manifest.json`` records everything needed to trace every figure in a run back to the exact
inputs, model and settings that produced it. :func:`detect.verify.verify_run` re-hashes all of it
and checks the manifest's own consistency.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from detect.runfolder import MANIFEST_FORMAT, MANIFEST_NAME, Manifest, read_manifest, read_manifest_json, write_json_atomic
from sitewatch.hashing import sha256_file
from tiles.catalog import sidecar_paths

log = logging.getLogger(__name__)


#: distributions whose versions are recorded in every manifest.
RECORDED_DISTRIBUTIONS = (
    "sitewatch",
    "numpy",
    "torch",
    "torchvision",
    "rasterio",
    "pyproj",
    "scikit-image",
    "scipy",
    "safetensors",
    "dask",
    "distributed",
    "pillow",
    "pyyaml",
)

#: the detached Ed25519 signature of ``manifest.json`` (``detect --sign``; :mod:`detect.signing`).
SIGNATURE_NAME = MANIFEST_NAME + ".sig"
#: files in a run folder that are not outputs (working state, or written later by other tools).
NOT_OUTPUTS = frozenset({MANIFEST_NAME, SIGNATURE_NAME, "journal.jsonl", "run.lock"})
#: files other stages add to a run folder later (the review app's verdict store); not outputs.
LATER_FILES_PREFIXES = ("review.sqlite",)


def sha256_text(text: str) -> str:
    """Hex SHA-256 of UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def software_versions() -> dict[str, str]:
    """Python, platform, GDAL and the versions of :data:`RECORDED_DISTRIBUTIONS`."""
    versions: dict[str, str] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for name in RECORDED_DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        import rasterio

        versions["gdal"] = rasterio.__gdal_version__
    except Exception:  # pragma: no cover - rasterio is a hard dependency
        versions["gdal"] = "unknown"
    return versions


def hash_scene_inputs(catalog: Any) -> list[dict[str, Any]]:
    """Manifest entries of every raster of a catalogue: path, SHA-256, CRS, acquisition time, and
    the SHA-256 of each JSON sidecar beside it (a sidecar can set the acquisition time, so it is an
    input like the raster; ``sidecars`` is empty when there is none)."""
    entries = []
    for scene in catalog.scenes:
        path = Path(scene.path)
        sidecars = [
            {"path": str(p.resolve()), "sha256": sha256_file(p)} for p in sidecar_paths(path) if p.is_file()
        ]
        entries.append(
            {
                "scene_id": scene.scene_id,
                "path": str(path.resolve()),
                "sha256": sha256_file(path),
                "sidecars": sidecars,
                "crs": scene.crs,
                "acquired": scene.acquired.isoformat() if scene.acquired else None,
                "time_source": scene.time_source,
                **_catalogue_entry(scene),
            }
        )
    return entries


#: bytes at each end of a file that its quick fingerprint hashes.
QUICK_EDGE_BYTES = 1 << 20


def quick_file_fingerprint(path: str | Path, *, with_mtime: bool = True) -> str:
    """A cheap fingerprint of a file: its size, modification time (ns) and the SHA-256 of its
    first and last :data:`QUICK_EDGE_BYTES` (a rewritten GeoTIFF changes at least one of them).

    With ``with_mtime=False`` (the journal's binding of a resume, :func:`quick_epoch_component`)
    the modification time is left out, so a raster that was only touched or copied (same bytes)
    still resumes; the full SHA-256 recorded by the earlier invocation is verified on resume
    (:func:`detect.journal.check_recorded_inputs`). With the time (the default) it is the check
    that a file did not change while one run read it. It is never the provenance record itself.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        stamp = f"{st.st_size}:{st.st_mtime_ns}:" if with_mtime else f"{st.st_size}:"
        digest.update(stamp.encode("ascii"))
        digest.update(fh.read(QUICK_EDGE_BYTES))
        if st.st_size > QUICK_EDGE_BYTES:
            fh.seek(max(QUICK_EDGE_BYTES, st.st_size - QUICK_EDGE_BYTES))
            digest.update(fh.read(QUICK_EDGE_BYTES))
    return f"quick:{digest.hexdigest()}"


def quick_epoch_component(catalog: Any) -> str:
    """The journal's binding of one epoch's rasters (and sidecars): :func:`quick_file_fingerprint`
    of each without its modification time, with the scene ids (see :func:`epoch_component` for the manifest's)."""
    parts = []
    for scene in catalog.scenes:
        path = Path(scene.path)
        parts.append(
            [
                scene.scene_id,
                quick_file_fingerprint(path, with_mtime=False),
                [quick_file_fingerprint(p, with_mtime=False) for p in sidecar_paths(path) if p.is_file()],
            ]
        )
    return sha256_text(json.dumps(parts))


def inputs_record(entries: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, list[list[str]]]:
    """The journal's ``inputs`` line from manifest entries: ``{epoch: [[scene id, path, sha256],
    ...]}`` with each sidecar as an entry of its own (:func:`detect.journal.check_recorded_inputs`)."""
    record: dict[str, list[list[str]]] = {}
    for epoch, items in entries.items():
        rows = []
        for e in items:
            rows.append([e["scene_id"], e["path"], e["sha256"]])
            rows.extend([e["scene_id"], s["path"], s["sha256"]] for s in e.get("sidecars", []))
        record[epoch] = rows
    return record


class InputHasher:
    """Hashes every byte of the run's rasters (and sidecars) in a background thread.

    ``hashlib`` and file reads release the GIL, so the SHA-256 of large rasters is computed while
    torch is imported and the model loaded (one core otherwise idles then), and while the scorer
    works, instead of before it. :meth:`result` waits for it.

    Args:
        catalogs: ``{epoch: RasterCatalog}``.
    """

    def __init__(self, catalogs: Mapping[str, Any]) -> None:
        self._catalogs = dict(catalogs)
        self._result: dict[str, list[dict[str, Any]]] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sitewatch-hash-inputs", daemon=True)
        self.seconds = 0.0
        self._thread.start()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            self._result = {epoch: hash_scene_inputs(cat) for epoch, cat in self._catalogs.items()}
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self._error = exc
        self.seconds = time.perf_counter() - started

    def done(self) -> bool:
        """Whether hashing has finished (successfully or not)."""
        return not self._thread.is_alive()

    def result(self) -> dict[str, list[dict[str, Any]]]:
        """``{epoch: manifest entries}`` (:func:`hash_scene_inputs`), once every file is hashed.

        Raises:
            OSError: a file could not be read.
        """
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._result is None:  # pragma: no cover - the thread always sets one of the two
            raise RuntimeError("input hashing ended without a result")
        return self._result


def _catalogue_entry(scene: Any) -> dict[str, Any]:
    """A STAC scene's catalogue facts for the manifest (nothing for plain files)."""
    if not getattr(scene, "catalog_id", ""):
        return {}
    return {
        "catalog_id": scene.catalog_id,
        "catalog_source": scene.catalog_source,
        "platform": scene.platform,
        "stated_gsd_m": scene.stated_gsd_m,
        "off_nadir": scene.off_nadir,
        "cloud_cover": scene.cloud_cover,
        "credit": scene.credit,
    }


def epoch_component(entries: Iterable[Mapping[str, Any]]) -> str:
    """The fingerprint part of one epoch's rasters (and their sidecars) from their manifest entries."""
    parts = []
    for e in entries:
        item: list[Any] = [e["scene_id"], e["sha256"]]
        if e.get("sidecars"):
            item.append([s["sha256"] for s in e["sidecars"]])
        parts.append(item)
    return sha256_text(json.dumps(parts))


def output_files(run_dir: Path) -> list[Path]:
    """Every output file of a run folder, relative, sorted (manifest, journal, lock excluded)."""
    found = []
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(run_dir)
        if rel.as_posix() in NOT_OUTPUTS or rel.name.startswith(LATER_FILES_PREFIXES):
            continue
        if rel.name.endswith(".tmp"):
            continue
        found.append(rel)
    return found


def hash_outputs(run_dir: Path, files: Iterable[str | Path] | None = None) -> dict[str, str]:
    """``{relative posix path: sha256}`` of ``files`` (relative to ``run_dir``; default: every
    output file found in ``run_dir``)."""
    rels = output_files(run_dir) if files is None else [Path(f) for f in files]
    return {rel.as_posix(): sha256_file(run_dir / rel) for rel in sorted(rels)}


@dataclass(frozen=True)
class Difference:
    """One finding of :func:`verify_run`.

    Attributes:
        kind: ``"input"``, ``"model"``, ``"output"``, ``"manifest"``, ``"signature"`` or
            ``"verdicts"``.
        path: the file concerned (for ``manifest``: ``manifest.json: <field>``).
        problem: ``"changed"``, ``"missing"``, ``"unreadable"``, ``"added"`` (a file the manifest
            does not list), ``"inconsistent"`` (the manifest contradicts itself or the run's
            files), ``"digest"`` (not the digest given) or ``"invalid"`` (a bad signature).
        expected: the recorded SHA-256 or value (empty when unknown).
        actual: the SHA-256 or value now (empty when the file is missing).
        detail: what is wrong, in words, for ``inconsistent`` / ``invalid`` / ``added`` findings.
    """

    kind: str
    path: str
    problem: str
    expected: str = ""
    actual: str = ""
    detail: str = ""

    def describe(self) -> str:
        """One line for people."""
        text = f"{self.kind} {self.problem}: {self.path}"
        if self.problem == "changed":
            text += f" (recorded sha256 {self.expected[:16]}..., now {self.actual[:16]}...)"
        if self.detail:
            text += f": {self.detail}"
        return text


@dataclass(frozen=True)
class VerifyReport:
    """Result of :func:`detect.verify.verify_run`.

    Attributes:
        run_dir: the folder checked.
        checked: how many files were hashed.
        differences: everything that differs from the manifest (empty = verified).
        manifest_sha256: SHA-256 of ``manifest.json`` itself (the run digest), to quote in a report.
        consistency_checks: how many of the manifest's internal consistency checks ran.
        signature: what was found about ``manifest.json.sig``: ``"none"``, ``"unchecked"`` (a
            signature, but no public key to check it with), ``"valid"`` or ``"invalid"``.
        signer: fingerprint of the public key the signature was checked with (``SHA256:...``).
    """

    run_dir: Path
    checked: int
    differences: tuple[Difference, ...] = field(default_factory=tuple)
    manifest_sha256: str = ""
    consistency_checks: int = 0
    signature: str = "none"
    signer: str = ""

    @property
    def ok(self) -> bool:
        return not self.differences
