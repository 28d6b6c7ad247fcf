"""``sitewatch verify DOSSIER``: re-hash a dossier folder against its ``manifest.json``.

Checks every listed file (changed, missing, unreadable), files the manifest does not list
(added), that the manifest records the run digest (a SHA-256) and that every site page quotes
it, and, when the run folder is still at its recorded path, that its ``manifest.json`` still has
that digest (otherwise the run was changed or re-run since the dossier was written).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sitewatch.errors import RunFolderError
from sitewatch.hashing import sha256_file

MANIFEST_NAME = "manifest.json"
DOSSIER_KIND = "sitewatch-dossier"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_dossier(folder: str | Path) -> bool:
    """Whether ``folder`` holds a dossier (its manifest's ``kind`` is ``sitewatch-dossier``)."""
    path = Path(folder) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == DOSSIER_KIND


@dataclass(frozen=True)
class DossierFinding:
    """One difference: ``what`` (a file, ``run digest``, ``run``) and the ``problem`` in words."""

    what: str
    problem: str

    def describe(self) -> str:
        return f"{self.what}: {self.problem}"


@dataclass(frozen=True)
class DossierReport:
    """Result of :func:`verify_dossier`.

    Attributes:
        folder: the dossier checked.
        checked: files hashed.
        findings: everything that differs (empty: verified).
        run_digest: the run digest the dossier records.
        run_checked: whether the run folder's manifest was found and re-hashed.
        manifest_sha256: SHA-256 of the dossier's manifest.json.
    """

    folder: Path
    checked: int
    findings: tuple[DossierFinding, ...] = field(default_factory=tuple)
    run_digest: str = ""
    run_checked: bool = False
    manifest_sha256: str = ""

    @property
    def ok(self) -> bool:
        return not self.findings


def _load(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: unreadable ({exc}); not a sitewatch dossier") from None
    if not isinstance(data, dict) or data.get("kind") != DOSSIER_KIND:
        raise RunFolderError(f"{path}: not a sitewatch dossier manifest (kind {DOSSIER_KIND!r})")
    return data


def verify_dossier(folder: str | Path, *, check_run: bool = True) -> DossierReport:
    """Re-hash a dossier folder against its manifest.

    Args:
        folder: the folder ``sitewatch dossier --out`` wrote.
        check_run: also re-hash the run's ``manifest.json`` at its recorded path, when there.

    Raises:
        RunFolderError: the folder has no readable dossier manifest.
    """
    folder = Path(folder)
    manifest = _load(folder)
    findings: list[DossierFinding] = []
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        findings.append(DossierFinding(MANIFEST_NAME, "lists no files"))
        files = {}
    checked = 0
    root = folder.resolve()
    for rel, expected in sorted(files.items()):
        path = (folder / rel).resolve()
        if root not in path.parents:
            findings.append(DossierFinding(rel, "path leads outside the dossier folder"))
            continue
        checked += 1
        if not path.is_file():
            findings.append(DossierFinding(rel, "missing"))
            continue
        try:
            actual = sha256_file(path)
        except OSError as exc:
            findings.append(DossierFinding(rel, f"unreadable ({exc})"))
            continue
        if actual != expected:
            findings.append(DossierFinding(rel, f"changed (recorded sha256 {str(expected)[:16]}..., now {actual[:16]}...)"))
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel != MANIFEST_NAME and rel not in files:
            findings.append(DossierFinding(rel, "added (not listed in manifest.json)"))
    run = manifest.get("run") if isinstance(manifest.get("run"), dict) else {}
    digest = str(run.get("digest") or "")
    if not _SHA256.match(digest):
        findings.append(DossierFinding("run digest", "not recorded in manifest.json (or not a SHA-256)"))
    else:
        for site in manifest.get("sites") or []:
            page = folder / str(site.get("page", ""))
            if page.is_file() and digest not in page.read_text(encoding="utf-8", errors="replace"):
                findings.append(DossierFinding(str(site.get("page")), "does not quote the run digest of manifest.json"))
    run_checked = False
    if check_run and digest and run.get("path"):
        run_manifest = Path(str(run["path"])) / "manifest.json"
        if run_manifest.is_file():
            run_checked = True
            now = sha256_file(run_manifest)
            if now != digest:
                findings.append(DossierFinding(
                    "run", f"{run_manifest} has changed since the dossier was written (digest now {now[:16]}..., "
                    f"recorded {digest[:16]}...): the run was altered or re-run"))
    return DossierReport(
        folder=folder, checked=checked, findings=tuple(findings), run_digest=digest, run_checked=run_checked,
        manifest_sha256=sha256_file(folder / MANIFEST_NAME),
    )
