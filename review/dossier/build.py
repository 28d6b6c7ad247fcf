"""``sitewatch dossier``: per-site evidence pages of a run, as HTML and one PDF, with a manifest.

The dossier folder::

    DIR/index.html            cover: the run, its digest, the sites
    DIR/sites/NNN-ID.html     one self-contained page per site (images embedded)
    DIR/images/NNN-ID_*.png   the same images as files (their SHA-256 is quoted on the pages)
    DIR/dossier.pdf           the cover, then one page per site
    DIR/manifest.json         kind "sitewatch-dossier": the run digest, the sites, every file's SHA-256

``sitewatch verify DIR`` re-hashes every file against ``manifest.json``
(:func:`review.dossier.verify.verify_dossier`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from review.config import ReviewConfig
from review.dossier.config import DossierConfig
from review.dossier.evidence import EvidenceCollector, SiteEvidence, run_evidence
from review.dossier.html_pages import render_index, render_site_page
from review.dossier.pdf import write_pdf
from review.dossier.verify import DOSSIER_KIND, MANIFEST_NAME, is_dossier
from review.runfolder import RunFolder
from sitewatch import __version__
from sitewatch.errors import RunFolderError, UsageError
from sitewatch.hashing import sha256_file

log = logging.getLogger(__name__)

DOSSIER_FORMAT = "sitewatch-dossier/1"
PDF_NAME = "dossier.pdf"
SELECTIONS = ("flagged", "verified", "sites")


@dataclass(frozen=True)
class DossierSummary:
    """What :func:`write_dossier` wrote.

    Attributes:
        out_dir: the dossier folder.
        sites: ids of the sites, in page order.
        pdf: the PDF file.
        pdf_pages: pages of the PDF (cover + at least one per site).
        run_digest: SHA-256 of the run's manifest.json.
        manifest_sha256: SHA-256 of the dossier's own manifest.json.
        files: number of files listed in the dossier manifest.
    """

    out_dir: Path
    sites: tuple[str, ...]
    pdf: Path
    pdf_pages: int
    run_digest: str
    manifest_sha256: str
    files: int


def page_stem(number: int, site_id: str) -> str:
    """A safe, unique file name stem for a site's page: ``NNN-<id letters>-<hash of the id>``."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", site_id).strip("_")[:40] or "site"
    return f"{number:03d}-{slug}-{hashlib.sha256(site_id.encode('utf-8')).hexdigest()[:8]}"


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder; pick a new folder for the dossier")
    if out.is_dir() and any(out.iterdir()):
        ours = is_dossier(out)
        if not overwrite:
            raise UsageError(
                f"--out {out}: the folder is not empty; pick a new folder"
                + (", or pass --overwrite to replace this dossier" if ours else "")
            )
        if not ours:
            raise UsageError(f"--out {out}: not a dossier folder; --overwrite only replaces an earlier dossier")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_dossier(
    run_dir: str | Path,
    out: str | Path,
    *,
    selection: str,
    site_ids: Sequence[str] = (),
    review: ReviewConfig | None = None,
    config: DossierConfig | None = None,
    overwrite: bool = False,
) -> DossierSummary:
    """Write the evidence dossier of some sites of a run.

    Args:
        run_dir: the run folder.
        out: the dossier folder to create.
        selection: ``flagged`` (the sites detect flagged), ``verified`` (the reviewers decided
            major-damage or destroyed) or ``sites`` (``site_ids``).
        site_ids: the sites for ``selection="sites"``, in page order.
        review: review settings (the context view's scale and size).
        config: dossier settings.
        overwrite: replace an earlier dossier in ``out``.

    Raises:
        RunFolderError: the run folder cannot be read, or has no manifest (no run digest).
        UsageError: unknown sites, nothing selected, or ``out`` is not usable.
    """
    review = review or ReviewConfig()
    config = config or DossierConfig()
    if selection not in SELECTIONS:
        raise UsageError(f"dossier selection {selection!r}: choose --flagged, --verified or --sites ID ...")
    run = RunFolder(run_dir)
    if not (run.path / "manifest.json").is_file():
        raise RunFolderError(f"{run.path}: no manifest.json; a dossier needs the run digest of a finished `sitewatch detect` run")
    if selection == "sites":
        unknown = [s for s in site_ids if s not in run.by_id]
        if not site_ids:
            raise UsageError("--sites: give one or more site ids")
        if unknown:
            raise UsageError(f"--sites: {', '.join(map(repr, unknown[:5]))} not in {run.path / 'scores.csv'}"
                             f"{f' (and {len(unknown) - 5} more)' if len(unknown) > 5 else ''}")
        site_ids = list(dict.fromkeys(site_ids))
    collector = EvidenceCollector(run, review)
    try:
        chosen = collector.selected(selection, site_ids)
        if not chosen:
            what = {"flagged": "no site reached the run's operating threshold",
                    "verified": "no site has a reviewers' decision of major-damage or destroyed"}[selection]
            raise UsageError(f"--{selection}: {what} in {run.path}; nothing to write (use --sites ID ... to pick sites)")
        out_dir = Path(out)
        _prepare_out(out_dir, overwrite)
        created = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
        run_facts = run_evidence(run)
        n_ranked = sum(1 for s in run.sites if s.rank > 0)
        label = {"flagged": f"sites flagged by detect (score ≥ {run_facts.operating_point.get('threshold')})",
                 "verified": "sites the reviewers decided are major-damage or destroyed",
                 "sites": "sites chosen by id"}[selection]
        (out_dir / "sites").mkdir()
        (out_dir / "images").mkdir()
        evidence: list[SiteEvidence] = []
        pages: list[tuple[SiteEvidence, str]] = []
        site_entries = []
        for number, site in enumerate(chosen, start=1):
            e = collector.site(site)
            evidence.append(e)
            stem = page_stem(number, site.site_id)
            page = f"sites/{stem}.html"
            html = render_site_page(e, run_facts, number=number, total=len(chosen), n_ranked=n_ranked,
                                    created=created, version=__version__, chip_scale=config.html_chip_scale)
            _write_atomic(out_dir / page, html.encode("utf-8"))
            images = {}
            for img in e.images:
                rel = f"images/{stem}_{img.key}.png"
                _write_atomic(out_dir / rel, img.png)
                images[img.key] = {"file": rel, "sha256": img.sha256, "source": img.source}
            pages.append((e, page))
            site_entries.append({
                "site_id": site.site_id, "page": page, "rank": site.rank, "score": site.score if site.ok else None,
                "status": site.status, "flagged": site.flagged, "images": images,
                "decision": e.consensus.final if e.consensus else None, "verdicts": len(e.verdicts),
            })
        index = render_index([(e, p) for e, p in pages], run_facts, selection=label, created=created)
        _write_atomic(out_dir / "index.html", index.encode("utf-8"))
        firsts, n_pages = write_pdf(out_dir / PDF_NAME, evidence, run_facts, selection=label, created=created,
                                    n_ranked=n_ranked, config=config)
        for entry, first in zip(site_entries, firsts):
            entry["pdf_page"] = first
    finally:
        collector.close()
    files = {p.relative_to(out_dir).as_posix(): sha256_file(p) for p in sorted(out_dir.rglob("*")) if p.is_file()}
    manifest = {
        "kind": DOSSIER_KIND,
        "format": DOSSIER_FORMAT,
        "created": created,
        "sitewatch_version": __version__,
        "run": {
            "path": str(run.path),
            "digest": run_facts.digest,
            "fingerprint": run_facts.fingerprint,
            "operating_point": dict(run_facts.operating_point),
            "verdict_store": run_facts.chain,
        },
        "selection": selection,
        "sites": site_entries,
        "pdf": {"file": PDF_NAME, "pages": n_pages},
        "files": files,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    _write_atomic(out_dir / MANIFEST_NAME, text.encode("utf-8"))
    return DossierSummary(
        out_dir=out_dir,
        sites=tuple(e.site.site_id for e in evidence),
        pdf=out_dir / PDF_NAME,
        pdf_pages=n_pages,
        run_digest=run_facts.digest,
        manifest_sha256=sha256_file(out_dir / MANIFEST_NAME),
        files=len(files),
    )
