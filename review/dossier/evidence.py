"""What a dossier page states about one site, gathered from the run folder and its verdict store.

Everything comes from files the run recorded: ``scores.csv`` (score, rank, pair metadata),
``manifest.json`` (scenes with their SHA-256 and, for STAC inputs, their catalogue facts: id,
platform, off-nadir angle, credit; the model, the operating point, the calibration), else the
source rasters' tags (sensor, catalogue id, off-nadir angle, imagery credit, when the delivery
wrote them), ``review.sqlite`` (verdicts, adjudication, hash chain) and the chips: the
ones detect wrote (only when unchanged since the run) or cut through the review app's
:class:`review.chip_provider.ChipProvider`, which also cuts the context view.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from review.chip_provider import ChipProvider
from review.config import ReviewConfig
from review.consensus import SiteConsensus, summarise
from review.runfolder import META_FIRST, RunFolder, RunSite
from review.site_facts import Coordinates, FactRow, coordinates, fact_rows, logit_text, score_text
from review.site_marker import SiteMarker, chip_extent_m, site_footprints, site_marker
from detect.part_overlay import PartsOverlay
from review.state import hidden_column, in_facility_section, site_parts
from review.store import DB_NAME, Verdict, VerdictStore
from sitewatch.hashing import sha256_file

log = logging.getLogger(__name__)

NOT_RECORDED = "not recorded"

#: raster tags (upper-cased) read for each scene fact, first match wins. Names used by common
#: deliveries (GDAL/TIFF tags, Maxar/xBD and Planet metadata copied into tags, STAC names).
SCENE_TAGS: dict[str, tuple[str, ...]] = {
    "sensor": ("SENSOR", "SENSOR_NAME", "SATELLITE", "SATELLITE_ID", "SATID", "PLATFORM", "SPACECRAFT", "MISSION"),
    "catalogue_id": ("CATALOG_ID", "CATALOGUE_ID", "CATID", "CAT_ID", "PRODUCT_ID", "ITEM_ID", "SCENE_ID", "STRIP_ID"),
    "off_nadir_deg": ("OFF_NADIR", "OFF_NADIR_ANGLE", "OFFNADIR", "VIEW_OFF_NADIR", "VIEW:OFF_NADIR", "MEAN_OFF_NADIR_VIEW_ANGLE"),
    "credit": ("CREDIT", "COPYRIGHT", "TIFFTAG_COPYRIGHT", "ATTRIBUTION", "IMAGERY_CREDIT", "PROVIDER", "LICENSE"),
}

#: verdicts that confirm severe damage (a site ``--verified`` selects).
SEVERE = ("major-damage", "destroyed")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Scene:
    """One source scene of a site's pair.

    Attributes:
        epoch: ``before`` or ``after``.
        scene_id: the run's id of the scene.
        path: the raster's path as recorded.
        sha256: the raster's SHA-256 recorded by the run ("" when not recorded).
        acquired: acquisition time (ISO-8601, as ``scores.csv`` gives it) or "unknown".
        time_source: where the time came from (``tag``, ``filename``, ...).
        facts: ``sensor``, ``catalogue_id``, ``off_nadir_deg``, ``credit`` (NOT_RECORDED when absent).
        native_gsd: native ground sample distance text, e.g. ``0.50 m/pixel``.
        still_matches: whether the raster at ``path`` still has ``sha256`` (None: not there).
    """

    epoch: str
    scene_id: str
    path: str
    sha256: str
    acquired: str
    time_source: str
    facts: Mapping[str, str]
    native_gsd: str
    still_matches: bool | None


@dataclass(frozen=True)
class Image:
    """A PNG shown on the page.

    Attributes:
        key: ``before``, ``after``, ``heatmap``, ``context_before``, ``context_after``.
        caption: what it is, in words.
        png: the bytes.
        source: ``detect`` (the run's chip, unchanged), or ``cut`` (cut from the run's rasters
            through the tiles stage for this dossier).
        extent_m: ground side of the image in metres.
    """

    key: str
    caption: str
    png: bytes
    source: str
    extent_m: float

    @property
    def sha256(self) -> str:
        return sha256_bytes(self.png)

    @property
    def size_px(self) -> tuple[int, int]:
        import io

        from PIL import Image as PILImage

        with PILImage.open(io.BytesIO(self.png)) as im:
            return im.size


@dataclass(frozen=True)
class SiteEvidence:
    """Everything one dossier page shows about a site."""

    site: RunSite
    coords: Coordinates
    score: str
    logit: str
    flagged: bool
    scenes: tuple[Scene, ...]
    images: tuple[Image, ...]
    image_notes: tuple[str, ...]
    marker: SiteMarker
    quality: tuple[FactRow, ...]
    verdicts: tuple[Verdict, ...]
    consensus: SiteConsensus | None
    credit: str
    parts: PartsOverlay | None = None

    @property
    def marked_parts(self) -> tuple[str, ...]:
        """The parts the reviewers decided are damaged (see :mod:`review.consensus`)."""
        return self.consensus.damaged_parts if self.consensus is not None else ()

    @property
    def title(self) -> str:
        return f"{self.site.site_id}" + (f" — {self.site.name}" if self.site.name else "")

    def image(self, key: str) -> Image | None:
        return next((i for i in self.images if i.key == key), None)


@dataclass(frozen=True)
class RunEvidence:
    """What every page of a dossier shares about the run.

    Attributes:
        run: the run folder.
        digest: SHA-256 of the run's ``manifest.json`` bytes (the run digest).
        fingerprint: the run's fingerprint from its manifest.
        operating_point: ``name``, ``threshold``, ``source``.
        calibration: the calibration the scores carry, in words.
        model: ``arch``, ``weights_sha256``, ``path``, ``files`` ``[(path, sha256)]``.
        chain: the verdict store's hash chain in words (or that there is no store).
        software: sitewatch version of the run.
    """

    run: RunFolder
    digest: str
    fingerprint: str
    operating_point: Mapping[str, Any]
    calibration: str
    model: Mapping[str, Any]
    chain: str
    chain_ok: bool | None
    software: str
    sites_file: Mapping[str, Any] = field(default_factory=dict)


def _tag(tags: Mapping[str, str], names: Sequence[str]) -> str:
    upper = {k.upper(): v for k, v in tags.items()}
    for name in names:
        value = (upper.get(name) or "").strip()
        if value:
            return value
    return ""


def scene_tags(path: Path) -> dict[str, str]:
    """The dataset tags of a raster (and of its IMAGERY domain), or {} when it cannot be read."""
    import rasterio

    try:
        with rasterio.open(path) as ds:
            tags = dict(ds.tags())
            for domain in ("IMAGERY",):
                try:
                    tags.update({k: v for k, v in ds.tags(ns=domain).items() if k not in tags})
                except Exception:  # noqa: BLE001 - a missing domain is not an error
                    pass
    except Exception as exc:  # noqa: BLE001 - a page says "not recorded" rather than fail
        log.warning("cannot read the tags of %s: %s", path, exc)
        return {}
    return tags


def _event_calibration_text(cal: Mapping[str, Any]) -> str:
    """``sitewatch calibrate``'s record in words: what it was fitted on, when, the temperature and
    reliability, and how the screening threshold was chosen (not every field of the record)."""

    def num(key: str, fmt: str) -> str | None:
        v = cal.get(key)
        return format(float(v), fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    parts = [str(cal.get("description") or f"this event's verified sample: {cal.get('n', '?')} labelled sites")]
    if cal.get("created"):
        parts.append(f"fitted {str(cal['created'])[:10]}")
    t, t0 = num("temperature", ".4g"), num("previous_temperature", ".4g")
    if t:
        parts.append(f"temperature {t}" + (f" (was {t0})" if t0 else ""))
    e, e0 = num("ece", ".3f"), num("ece_before", ".3f")
    if e and e0:
        parts.append(f"calibration error (ECE) on the held-out labelled sites {e0} before, {e} after")
    if cal.get("screening_note"):
        parts.append(str(cal["screening_note"]))
    if cal.get("tag"):
        parts.append(f"tag {cal['tag']}")
    return "; ".join(parts)


def calibration_text(manifest: Mapping[str, Any]) -> str:
    """Which calibration the run's scores carry, from the manifest (run-level, then the model's)."""
    run_cal = manifest.get("calibration")
    if isinstance(run_cal, Mapping) and run_cal.get("kind") == "event":
        return _event_calibration_text(run_cal)
    for holder in (manifest.get("calibration"), (manifest.get("model") or {}).get("calibration")):
        if isinstance(holder, Mapping) and holder:
            parts = [f"{k}: {v}" for k, v in sorted(holder.items()) if not isinstance(v, (Mapping, list))]
            return "; ".join(parts) or str(holder)
    meta = (manifest.get("model") or {}).get("meta") or {}
    if not isinstance(meta, Mapping):
        return NOT_RECORDED
    meta_cal = meta.get("calibration")
    if isinstance(meta_cal, Mapping) and meta_cal:
        parts = [f"{k}: {v}" for k, v in sorted(meta_cal.items()) if not isinstance(v, (Mapping, list))]
        return "model calibration (" + "; ".join(parts) + ")"
    temperature = meta.get("temperature")
    if isinstance(temperature, (int, float)):
        data = ", ".join(sorted((meta.get("data_hashes") or {}).keys())) or "its training data"
        created = meta.get("created", "")
        return (f"temperature scaling T = {float(temperature):.4f}, fitted on the validation split of {data} "
                f"when the model was trained{f' ({created})' if created else ''}")
    return NOT_RECORDED


def run_evidence(run: RunFolder) -> RunEvidence:
    """The run-level facts of a dossier."""
    manifest_path = run.path / "manifest.json"
    digest = sha256_file(manifest_path) if manifest_path.is_file() else ""
    m = run.manifest.to_json()  # the typed manifest as its JSON sections
    model = m.get("model") or {}
    files = [(str(f.get("path", "")), str(f.get("sha256", ""))) for f in model.get("files") or [] if isinstance(f, Mapping)]
    meta = model.get("meta") or {}
    op = m.get("operating_point") or {}
    threshold = run.threshold()
    chain_text, chain_ok = "no verdict store (the run has not been reviewed)", None
    if (run.path / DB_NAME).is_file():
        from review.verdict_chain import verify_verdict_chain

        report = verify_verdict_chain(run.path / DB_NAME)
        chain_ok = report.ok
        chain_text = (
            f"intact: {report.verdicts} verdict(s), chain head {report.head}" if report.ok
            else f"BROKEN: {'; '.join(report.problems)}"
        )
    return RunEvidence(
        run=run,
        digest=digest,
        fingerprint=str(m.get("run_fingerprint", "")),
        operating_point={"name": op.get("name", "unknown"), "threshold": threshold, "source": op.get("source", NOT_RECORDED)},
        calibration=calibration_text(m),
        model={"arch": meta.get("arch", "") if isinstance(meta, Mapping) else "",
               "weights_sha256": str(model.get("weights_sha256", "")), "path": str(model.get("path", "")), "files": files},
        chain=chain_text,
        chain_ok=chain_ok,
        software=str(m.get("sitewatch_version", NOT_RECORDED)),
        sites_file=dict((m.get("inputs") or {}).get("sites") or {}),
    )


class EvidenceCollector:
    """Gathers :class:`SiteEvidence` for sites of one run (chips cut through the review app's
    chip provider, so a dossier shows exactly what reviewers saw).

    Args:
        run: the run folder.
        review: review settings (context view size and scale).
    """

    def __init__(self, run: RunFolder, review: ReviewConfig) -> None:
        self.run = run
        self.review = review
        self.tiles = run.tiles_config()
        self.footprints = site_footprints(run)
        self.chips = ChipProvider(
            run,
            render=True,
            footprint_of=self.footprints.get,
            context_scale=review.context_scale,
            context_px=review.context_px,
            chip_extent_m=lambda site: chip_extent_m(site, self.footprints.get(site.site_id), self.tiles),
        )
        self._scene_entries: dict[tuple[str, str], Mapping[str, Any]] = {}
        for epoch in ("before", "after"):
            for entry in run.manifest.to_json()["inputs"][epoch]:
                if isinstance(entry, Mapping) and entry.get("scene_id"):
                    self._scene_entries[(epoch, str(entry["scene_id"]))] = entry
        self._tags: dict[str, dict[str, str]] = {}
        self._hash_ok: dict[str, bool | None] = {}
        store_path = run.path / DB_NAME
        self.verdicts: list[Verdict] = VerdictStore(store_path).verdicts() if store_path.is_file() else []
        self.consensus = summarise(self.verdicts)

    def close(self) -> None:
        self.chips.close()

    def selected(self, how: str, site_ids: Sequence[str] = ()) -> list[RunSite]:
        """The sites a dossier covers, in rank order (unranked last).

        Args:
            how: ``flagged`` (detect flagged them), ``verified`` (the reviewers' decision is
                major-damage or destroyed) or ``sites`` (``site_ids``, in the order given).
        """
        if how == "sites":
            return [self.run.by_id[s] for s in site_ids]
        if how == "flagged":
            chosen = [s for s in self.run.sites if s.flagged]
        elif how == "verified":
            chosen = [s for s in self.run.sites if (c := self.consensus.get(s.site_id)) is not None and c.final in SEVERE]
        else:
            raise ValueError(f"unknown selection {how!r}")
        return sorted(chosen, key=lambda s: (s.rank <= 0, s.rank, s.index))

    def _scene(self, site: RunSite, epoch: str) -> Scene:
        scene_id = site.meta.get(f"{epoch}_scene", "")
        entry = self._scene_entries.get((epoch, scene_id), {})
        path = str(entry.get("path", ""))
        sha = str(entry.get("sha256", ""))
        if path and path not in self._tags:
            p = Path(path)
            self._tags[path] = scene_tags(p) if p.is_file() else {}
            self._hash_ok[path] = (sha256_file(p) == sha) if p.is_file() and sha else None
        tags = self._tags.get(path, {})
        # the STAC catalogue's facts (manifest, scores.csv) first, then the raster's own tags
        recorded = {
            "sensor": (entry.get("platform"), site.meta.get(f"{epoch}_platform")),
            "catalogue_id": (entry.get("catalog_id"),),
            "off_nadir_deg": (entry.get("off_nadir"), site.meta.get(f"{epoch}_off_nadir")),
            "credit": (entry.get("credit"), site.meta.get(f"{epoch}_credit")),
        }
        facts = {}
        for key, names in SCENE_TAGS.items():
            given = next((str(v).strip() for v in recorded[key] if v not in (None, "") and str(v).strip()), "")
            facts[key] = given or _tag(tags, names) or NOT_RECORDED
        gsd = _num(site.meta.get(f"{epoch}_gsd_m", ""))
        return Scene(
            epoch=epoch,
            scene_id=scene_id or NOT_RECORDED,
            path=path or NOT_RECORDED,
            sha256=sha or NOT_RECORDED,
            acquired=site.meta.get(f"{epoch}_time", "") or str(entry.get("acquired") or "unknown"),
            time_source=site.meta.get(f"{epoch}_time_source", "") or str(entry.get("time_source") or ""),
            facts=facts,
            native_gsd=f"{gsd:.2f} m/pixel" if math.isfinite(gsd) else NOT_RECORDED,
            still_matches=self._hash_ok.get(path),
        )

    def _images(self, site: RunSite, marker: SiteMarker) -> tuple[list[Image], list[str]]:
        images: list[Image] = []
        notes: list[str] = []
        chips = self.chips.chips(site)
        if chips.source == "detect":
            for key in ("before", "after", "heatmap"):
                rel = site.chips.get(key, "")
                if not rel:
                    continue
                data, problem = self.chips.outputs.read(rel)
                if data is None:
                    notes.append(f"{key} chip {rel}: {problem}")
                    continue
                caption = {"before": "before", "after": "after", "heatmap": "change heatmap (model output)"}[key]
                images.append(Image(key, caption, data, "detect", marker.extent_m))
        elif chips.source == "rendered":
            for key in ("before", "after"):
                data = self.chips.rendered_png(site, key)
                if data is None:
                    notes.append(self.chips.ensure_rendered(site, "chip") or f"no {key} chip")
                    continue
                images.append(Image(key, key, data, "cut", marker.extent_m))
            notes.append("chips cut for this dossier from the run's rasters (detect wrote chips for its top sites only; no heatmap)")
        else:
            notes.append(chips.note)
        context_note = self.chips.context_note(site)
        if not context_note:
            for key in ("before", "after"):
                data = self.chips.context_png(site, key)
                if data is None:
                    context_note = self.chips.ensure_rendered(site, "context") or "no context view"
                    break
                images.append(Image(f"context_{key}", f"context, {key} ({self.review.context_scale:g}× the chip)",
                                    data, "cut", marker.context_extent_m))
        if context_note:
            notes.append(context_note)
        return images, notes

    def site(self, site: RunSite) -> SiteEvidence:
        """The evidence of one site."""
        footprint = self.footprints.get(site.site_id)
        marker = site_marker(site, footprint, self.tiles, self.review.context_scale)
        images, notes = self._images(site, marker)
        scenes = tuple(self._scene(site, epoch) for epoch in ("before", "after"))
        credits = sorted({s.facts["credit"] for s in scenes if s.facts["credit"] != NOT_RECORDED})
        quality = tuple(fact_rows(site.meta, self.tiles, META_FIRST, lambda c: hidden_column(c) or in_facility_section(c)))
        return SiteEvidence(
            site=site,
            coords=coordinates(site.lat, site.lon),
            score=score_text(site.score if site.ok else None),
            logit=logit_text(site.score if site.ok else None),
            flagged=site.flagged,
            scenes=scenes,
            images=tuple(images),
            image_notes=tuple(n for n in notes if n),
            marker=marker,
            quality=quality,
            verdicts=tuple(v for v in self.verdicts if v.site_id == site.site_id),
            consensus=self.consensus.get(site.site_id),
            credit="; ".join(credits) if credits else NOT_RECORDED,
            parts=site_parts(site),
        )


def _num(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan
