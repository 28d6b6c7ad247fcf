"""What every request of one review app shares: the run, its verdict store, queues, chips, pages.

:class:`ReviewApp` is built once by :func:`review.app.create_app` and kept in ``app.state.review``;
the routers (:mod:`review.routes`) reach it through the :func:`review_state` dependency.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader

from detect.part_overlay import PartsOverlay, read_parts_overlay, score_colour
from detect.runfolder import PART_COLUMNS
from detect.series import timeline_dates
from review.chip_provider import ChipProvider, context_chip_url
from review.config import ReviewConfig
from review.consensus import agreement, list_quality, needs_adjudication
from review.queue import QUEUE_VIEWS, ReviewQueues
from review.overview import RunMap
from review.runfolder import META_FIRST, RunFolder, RunSite
from review.security import TokenFailures, check_token
from review.site_facts import coordinates, fact_rows, logit_text, score_text
from review.site_marker import chip_extent_m, site_footprints, site_marker
from review.store import VERDICTS, VerdictStore

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent

#: keyboard shortcut of each verdict button.
VERDICT_KEYS = {
    "no-damage": "1",
    "minor-damage": "2",
    "major-damage": "3",
    "destroyed": "4",
    "un-classified": "5",
    "cannot_assess": "0",
}


def in_facility_section(name: str) -> bool:
    """The part and context columns: the site page's Facility section (and the dossier's) says
    them in words, so the quality table leaves them out."""
    return name in PART_COLUMNS


def hidden_column(name: str) -> bool:
    """Columns never shown to reviewers: labels carried through from a labelled input (``damage``,
    ``label``, ``xview2_model_damage``, ...) would bias their verdicts."""
    lowered = name.lower()
    return lowered == "label" or "damage" in lowered


@dataclass(frozen=True)
class AppSettings:
    """What the server adds to the review config.

    Attributes:
        token: access token every request must carry, or None (loopback only).
        allowed_hosts: host names accepted in the ``Host`` header, or None for any.
    """

    token: str | None = None
    allowed_hosts: frozenset[str] | None = None


def site_parts(site: RunSite) -> PartsOverlay | None:
    """The facility's parts and surroundings from its ``scores.csv`` row (None for a site without
    them): the same reading :mod:`detect.report` and the dossier use."""
    return read_parts_overlay({**site.meta, "flagged": "true" if site.flagged else "false"})


def fmt(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, or an en dash for None/NaN."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def pct(value: float | None) -> str:
    """``value`` as a percentage with one decimal, or an en dash for None/NaN."""
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def osm_url(lat: float, lon: float) -> str:
    """An OpenStreetMap link centred on the site (empty for invalid coordinates)."""
    if math.isnan(lat) or math.isnan(lon):
        return ""
    return f"https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}#map=19/{lat:.6f}/{lon:.6f}"


class ReviewApp:
    """The run, its store, queues and chips, shared by every request of one app.

    Args:
        run_dir: the run folder.
        config: review settings.
        settings: access settings from the server.

    Raises:
        RunFolderError: the folder is not a readable run folder.
        UsageError: the access token is too weak (:func:`review.security.check_token`).
    """

    def __init__(self, run_dir: str | Path, config: ReviewConfig, settings: AppSettings) -> None:
        check_token(settings.token)
        self.config = config
        self.settings = settings
        self.token_failures = TokenFailures(config.token_failures, config.token_failure_window_s)
        self.run = RunFolder(run_dir)
        self.store = VerdictStore.for_run(self.run.path)
        self.chain_at_start = self.store.verify_chain()
        if not self.chain_at_start.ok:
            log.warning("%s: verdict hash chain broken: %s", self.store.path, "; ".join(self.chain_at_start.problems))
        self.queues = ReviewQueues(self.run, self.store, config)
        self.tiles = self.run.tiles_config()
        self._footprints: dict[str, Any] | None = None
        self._footprints_lock = threading.Lock()
        self.chips = ChipProvider(
            self.run,
            render=config.render_missing_chips,
            footprint_of=self.footprint,
            context_scale=config.context_scale,
            context_px=config.context_px,
            chip_extent_m=lambda site: chip_extent_m(site, self.footprint(site.site_id), self.tiles),
        )
        bands = tuple(int(b) for b in self.tiles.get("bands", (1, 2, 3)))
        self.map = RunMap([(s.lon, s.lat) for s in self.run.sites], self.run.rasters("after"), bands,
                          self.chips.cache, config.map_px)
        self.env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=True)
        self.env.globals.update(fmt=fmt, pct=pct, score_colour=score_colour, score=score_text, logit=logit_text, views=QUEUE_VIEWS,
                                verdicts=VERDICTS, verdict_keys=VERDICT_KEYS,
                                calibration=self.run.calibration_label())

    def footprint(self, site_id: str) -> Any:
        """The site's footprint from the sites file (None when it gave none); read once."""
        with self._footprints_lock:
            if self._footprints is None:
                self._footprints = site_footprints(self.run)
            return self._footprints.get(site_id)

    def site(self, index: int) -> RunSite | None:
        """The site at row ``index`` of ``scores.csv``, or None when there is none."""
        return self.run.sites[index] if 0 <= index < len(self.run.sites) else None

    def render(self, request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        """Render a page with the common context (reviewer, CSRF token, run name)."""
        html = self.env.get_template(template).render(
            reviewer=getattr(request.state, "reviewer", ""),
            csrf=getattr(request.state, "csrf", ""),
            run_name=self.run.path.name,
            threshold=self.queues.threshold,
            **context,
        )
        return HTMLResponse(html, status_code=status_code)

    def site_context(self, site: RunSite, reviewer: str, view: str, show: str) -> dict[str, Any]:
        """Everything the site page shows."""
        summaries = self.queues.summaries()
        consensus = summaries.get(site.site_id)
        history = self.store.verdicts(site.site_id)
        prev, nxt = self.queues.neighbours(view, show, reviewer, site.index)
        # an input's own damage label is never shown: it would bias the reviewer
        facts = fact_rows(site.meta, self.tiles, META_FIRST, lambda c: hidden_column(c) or in_facility_section(c))
        mine_row = next((v for v in reversed(history) if v.reviewer == reviewer and v.kind == "review"), None)
        mine = mine_row.verdict if mine_row is not None else None
        disputed = consensus is not None and needs_adjudication(consensus)
        # independent double review: others' verdicts stay hidden until you give yours,
        # except when adjudicating (disputed queue or a disputed site)
        reveal = mine is not None or view == "disputed" or disputed
        rr = self.queues.current_rerank
        return {
            "site": site,
            "chips": self.chips.chips(site),
            "consensus": consensus,
            "disputed": disputed,
            "history": history if reveal else [v for v in history if v.reviewer == reviewer],
            "hidden_verdicts": 0 if reveal else sum(1 for v in history if v.reviewer != reviewer),
            "mine": mine,
            "prev": prev,
            "next": nxt,
            "view": view,
            "show": show,
            "facts": facts,
            "marker": site_marker(site, self.footprint(site.site_id), self.tiles, self.config.context_scale),
            "context": {
                "before": context_chip_url(site.index, "before"),
                "after": context_chip_url(site.index, "after"),
                "note": self.chips.context_note(site),
                "scale": self.config.context_scale,
            },
            "coords": coordinates(site.lat, site.lon),
            "map_url": osm_url(site.lat, site.lon),
            "in_validation": site.site_id in self.queues.validation_ids,
            "rerank_prob": rr.prob.get(site.site_id) if rr is not None else None,
            "timeline": timeline_dates(site.meta),
            "bracket": (site.meta.get("last_intact", ""), site.meta.get("first_damaged", "")),
            "parts": site_parts(site),
            "my_parts": set(mine_row.damaged_parts) if mine_row is not None else set(),
        }

    def progress(self) -> dict[str, Any]:
        """Figures for the progress page and ``/api/progress``."""
        summaries = self.queues.summaries()
        run_ids = self.run.by_id
        known = {sid: c for sid, c in summaries.items() if sid in run_ids}
        reviewed = sum(1 for c in known.values() if c.votes or c.adjudication)
        finals: dict[str, int] = {v: 0 for v in VERDICTS}
        for c in known.values():
            if c.final is not None:
                finals[c.final] = finals.get(c.final, 0) + 1
        ag = agreement(known.values())
        sample = [(run_ids[sid].site_id, run_ids[sid].score >= self.queues.threshold) for sid in self.queues.validation_ids]
        quality = list_quality(sample, known, self.config.confidence)
        sample_reviewed = sum(1 for sid in self.queues.validation_ids if sid in known and known[sid].final is not None)
        per_reviewer: dict[str, int] = {}
        for c in known.values():
            for name, _ in c.votes:
                per_reviewer[name] = per_reviewer.get(name, 0) + 1
        rr = self.queues.current_rerank
        chain_verdicts, chain_head = self.store.chain_head()
        return {
            "chain": {"verdicts": chain_verdicts, "head": chain_head, "at_start": self.chain_at_start},
            "total": len(self.run.sites),
            "assessable": sum(1 for s in self.run.sites if s.ok),
            "reviewed": reviewed,
            "remaining": len(self.run.sites) - reviewed,
            "finals": finals,
            "confirmed_destroyed": finals.get("destroyed", 0),
            "confirmed_severe": finals.get("destroyed", 0) + finals.get("major-damage", 0),
            "disputed": sum(1 for c in known.values() if needs_adjudication(c)),
            "adjudicated": sum(1 for c in known.values() if c.adjudication is not None),
            "agreement": ag,
            "quality": quality,
            "sample_reviewed": sample_reviewed,
            "per_reviewer": dict(sorted(per_reviewer.items())),
            "rerank": rr,
            "rerank_available": self.queues.rerank_available,
            "threshold_source": self.queues.threshold_source,
            "model": self.run.model_label(),
            "calibration": self.run.calibration_label(),
            "confidence": self.config.confidence,
        }


def review_state(request: Request) -> ReviewApp:
    """Dependency: the app's shared :class:`ReviewApp`."""
    return request.app.state.review


#: a route parameter that receives the app's :class:`ReviewApp`.
State = Annotated[ReviewApp, Depends(review_state)]
