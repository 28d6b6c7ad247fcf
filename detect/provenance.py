"""Provenance of a run folder: SHA-256 of inputs and outputs, versions, and ``sitewatch verify``.

``manifest.json`` records everything needed to trace every figure in a run back to the exact
inputs, model and settings that produced it. :func:`verify_run` re-hashes all of it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from sitewatch.errors import RunFolderError
from sitewatch.hashing import sha256_file

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "sitewatch-run/1"

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

#: files in a run folder that are not outputs (working state, or written later by other tools).
NOT_OUTPUTS = frozenset({MANIFEST_NAME, "journal.jsonl", "run.lock"})
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


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON (sorted keys, indented) via a temporary file and an atomic rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """Load ``manifest.json`` of a run folder.

    Raises:
        RunFolderError: the folder or its manifest is missing or unreadable.
    """
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST_NAME
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: no such run folder")
    if not path.is_file():
        raise RunFolderError(
            f"{path}: missing; this is not a finished sitewatch run folder (run `sitewatch detect` "
            "to completion first)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise RunFolderError(f"{path}: not a sitewatch run manifest (format {MANIFEST_FORMAT!r})")
    return data


@dataclass(frozen=True)
class Difference:
    """One finding of :func:`verify_run`.

    Attributes:
        kind: ``"input"``, ``"model"``, ``"output"`` or ``"manifest"``.
        path: the file concerned.
        problem: ``"changed"``, ``"missing"``, ``"unreadable"`` or ``"added"`` (an output file the
            manifest does not list).
        expected: the recorded SHA-256 (empty when unknown).
        actual: the SHA-256 now (empty when the file is missing).
    """

    kind: str
    path: str
    problem: str
    expected: str = ""
    actual: str = ""

    def describe(self) -> str:
        """One line for people."""
        text = f"{self.kind} {self.problem}: {self.path}"
        if self.problem == "changed":
            text += f" (recorded sha256 {self.expected[:16]}..., now {self.actual[:16]}...)"
        return text


@dataclass(frozen=True)
class VerifyReport:
    """Result of :func:`verify_run`.

    Attributes:
        run_dir: the folder checked.
        checked: how many files were hashed.
        differences: everything that differs from the manifest (empty = verified).
        manifest_sha256: SHA-256 of ``manifest.json`` itself, to quote in a report.
    """

    run_dir: Path
    checked: int
    differences: tuple[Difference, ...] = field(default_factory=tuple)
    manifest_sha256: str = ""

    @property
    def ok(self) -> bool:
        return not self.differences


def _check_file(kind: str, path: Path, expected: str, shown: str) -> Difference | None:
    if not path.is_file():
        return Difference(kind, shown, "missing", expected, "")
    try:
        actual = sha256_file(path)
    except OSError:
        return Difference(kind, shown, "unreadable", expected, "")
    if actual != expected:
        return Difference(kind, shown, "changed", expected, actual)
    return None


def _recorded_inputs(manifest: Mapping[str, Any]) -> Iterable[tuple[str, str, str]]:
    """``(kind, path, sha256)`` of every input the manifest records."""
    inputs = manifest.get("inputs", {})
    sites = inputs.get("sites")
    if sites:
        yield "input", sites["path"], sites["sha256"]
    for epoch in ("before", "after"):
        for raster in inputs.get(epoch, []):
            yield "input", raster["path"], raster["sha256"]
    model = manifest.get("model", {})
    for entry in model.get("files", []):
        yield "model", entry["path"], entry["sha256"]


def verify_run(run_dir: str | Path, *, check_inputs: bool = True) -> VerifyReport:
    """Re-hash a run folder's outputs (and its recorded inputs and model) against its manifest.

    Args:
        run_dir: a finished run folder.
        check_inputs: also re-hash the input rasters, the sites file and the model files at the
            paths recorded in the manifest.

    Raises:
        RunFolderError: the folder has no readable manifest.
    """
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    differences: list[Difference] = []
    checked = 0
    recorded_outputs: Mapping[str, str] = manifest.get("outputs", {})
    for rel, expected in sorted(recorded_outputs.items()):
        checked += 1
        diff = _check_file("output", run_dir / rel, expected, rel)
        if diff:
            differences.append(diff)
    if check_inputs:
        for kind, path, expected in _recorded_inputs(manifest):
            checked += 1
            diff = _check_file(kind, Path(path), expected, path)
            if diff:
                differences.append(diff)
    for rel in output_files(run_dir):
        if rel.as_posix() not in recorded_outputs:
            differences.append(Difference("output", rel.as_posix(), "added"))
    return VerifyReport(
        run_dir=run_dir,
        checked=checked,
        differences=tuple(differences),
        manifest_sha256=sha256_file(run_dir / MANIFEST_NAME),
    )
