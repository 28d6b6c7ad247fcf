"""The reviewers' web app (FastAPI): queues, one site at a time, verdicts, progress.

Build it with :func:`create_app`; :func:`review.server.serve` runs it with uvicorn. Pages are
server-rendered Jinja2 templates with autoescaping on (every text from input files or reviewers is
escaped), plus one static script for keyboard shortcuts and the swipe/flicker views. Requests never
run the CNN: chips come from the run folder (or are cut on demand, see :mod:`review.chips`) and the
quick re-rank uses stored embeddings.
"""

from __future__ import annotations

import logging
import math
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Mapping
from urllib.parse import parse_qsl, urlencode

from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader

from review.chips import ChipProvider
from review.config import ReviewConfig
from review.consensus import agreement, list_quality, needs_adjudication
from review.queue import QUEUE_VIEWS, SHOW_CHOICES, ReviewQueues
from review.runfolder import META_FIRST, RunFolder, RunSite
from review.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    REVIEWER_COOKIE,
    TOKEN_COOKIE,
    cross_site_fetch,
    decode_cookie,
    encode_cookie,
    host_allowed,
    new_token,
    safe_next,
    same_origin,
    tokens_match,
)
from review.store import VERDICTS, VerdictStore, clean_reviewer
from sitewatch.errors import InputError

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



def hidden_column(name: str) -> bool:
    """Columns never shown to reviewers: labels carried through from a labelled input (``damage``,
    ``label``, ``xview2_model_damage``, ...) would bias their verdicts."""
    lowered = name.lower()
    return lowered == "label" or "damage" in lowered

CSP = (
    "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class AppSettings:
    """What the server adds to the review config.

    Attributes:
        token: access token every request must carry, or None (loopback only).
        allowed_hosts: host names accepted in the ``Host`` header, or None for any.
    """

    token: str | None = None
    allowed_hosts: frozenset[str] | None = None


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def osm_url(lat: float, lon: float) -> str:
    """An OpenStreetMap link centred on the site (empty for invalid coordinates)."""
    if math.isnan(lat) or math.isnan(lon):
        return ""
    return f"https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}#map=19/{lat:.6f}/{lon:.6f}"


class ReviewApp:
    """The run, its store, queues and chips, shared by every request of one app."""

    def __init__(self, run_dir: str | Path, config: ReviewConfig, settings: AppSettings) -> None:
        self.config = config
        self.settings = settings
        self.run = RunFolder(run_dir)
        self.store = VerdictStore.for_run(self.run.path)
        self.queues = ReviewQueues(self.run, self.store, config)
        self.chips = ChipProvider(self.run, render=config.render_missing_chips)
        self.env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=True)
        self.env.globals.update(fmt=_fmt, pct=_pct, views=QUEUE_VIEWS, verdicts=VERDICTS, verdict_keys=VERDICT_KEYS)

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
        meta_rows = [(k, site.meta[k]) for k in META_FIRST if site.meta.get(k)]
        meta_rows += [(k, v) for k, v in site.meta.items() if k not in META_FIRST and not hidden_column(k) and v]
        mine = next((v.verdict for v in reversed(history) if v.reviewer == reviewer and v.kind == "review"), None)
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
            "meta_rows": meta_rows,
            "map_url": osm_url(site.lat, site.lon),
            "in_validation": site.site_id in self.queues.validation_ids,
            "rerank_prob": rr.prob.get(site.site_id) if rr is not None else None,
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
        return {
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
            "confidence": self.config.confidence,
        }


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _view_show(params: Mapping[str, str]) -> tuple[str, str]:
    view = params.get("view", "score")
    show = params.get("show", "todo")
    return (view if view in QUEUE_VIEWS else "score", show if show in SHOW_CHOICES else "todo")


async def _form(request: Request) -> dict[str, str]:
    """The URL-encoded form body (the app's forms and script send nothing else)."""
    body = await request.body()
    if len(body) > 64_000:
        raise InputError("request body too large (over 64 kB): shorten the note")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _csrf_ok(request: Request, form: Mapping[str, str]) -> bool:
    expected = request.cookies.get(CSRF_COOKIE, "")
    given = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    return tokens_match(given, expected)


def create_app(
    run_dir: str | Path,
    config: ReviewConfig | None = None,
    *,
    token: str | None = None,
    allowed_hosts: frozenset[str] | None = None,
) -> FastAPI:
    """The review app for one run folder.

    Args:
        run_dir: the run folder (``scores.csv`` ...); ``review.sqlite`` is created in it.
        config: review settings (defaults when None).
        token: access token required on every request, or None for none.
        allowed_hosts: host names accepted in the ``Host`` header (None: any).

    Raises:
        RunFolderError: the folder is not a readable run folder.
    """
    config = config or ReviewConfig()
    state = ReviewApp(run_dir, config, AppSettings(token=token, allowed_hosts=allowed_hosts))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.chips.close()

    app = FastAPI(title="sitewatch review", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.review = state
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(InputError)
    async def bad_input(request: Request, exc: InputError) -> Response:
        return PlainTextResponse(str(exc), 400)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if not host_allowed(request.headers.get("host"), state.settings.allowed_hosts):
            return PlainTextResponse("Host header not allowed: open the app at the address it printed", 400)
        if state.settings.token is not None:
            query_token = request.query_params.get("token")
            if query_token is not None and request.method == "GET" and tokens_match(query_token, state.settings.token):
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                target = request.url.path + ("?" + urlencode(rest) if rest else "")
                redirect = RedirectResponse(target, status_code=303)
                redirect.set_cookie(TOKEN_COOKIE, state.settings.token, httponly=True, samesite="strict")
                return redirect
            auth = request.headers.get("authorization", "")
            bearer = auth[7:] if auth.lower().startswith("bearer ") else None
            if not tokens_match(request.cookies.get(TOKEN_COOKIE) or bearer, state.settings.token):
                return PlainTextResponse(
                    "access token required: open the URL that `sitewatch review` printed (it ends in ?token=...)",
                    401,
                )
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            if cross_site_fetch(request.headers.get("sec-fetch-site")) or not same_origin(
                request.headers.get("origin"), request.headers.get("host")
            ):
                return PlainTextResponse("cross-site request refused", 403)
        csrf_cookie = request.cookies.get(CSRF_COOKIE)
        request.state.csrf = csrf_cookie or new_token()
        reviewer = decode_cookie(request.cookies.get(REVIEWER_COOKIE))
        set_reviewer = None
        # ?reviewer=NAME names a reviewer who has none yet; changing it goes through the form
        # (so a link from elsewhere cannot silently re-attribute someone's verdicts)
        if request.method == "GET" and request.query_params.get("reviewer") and not reviewer:
            try:
                set_reviewer = clean_reviewer(request.query_params["reviewer"])
                reviewer = set_reviewer
            except InputError:
                pass
        request.state.reviewer = reviewer
        response: Response = await call_next(request)
        if not csrf_cookie:
            response.set_cookie(CSRF_COOKIE, request.state.csrf, httponly=True, samesite="strict")
        if set_reviewer:
            response.set_cookie(REVIEWER_COOKIE, encode_cookie(set_reviewer), samesite="strict", max_age=90 * 86400)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        # not "no-referrer": with it, Chromium sends "Origin: null" on the app's own form posts
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    def need_reviewer(request: Request) -> Response | None:
        if request.state.reviewer:
            return None
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/reviewer?" + urlencode({"next": target}), status_code=303)

    @app.get("/", include_in_schema=False)
    def home() -> Response:
        return RedirectResponse("/queue", status_code=303)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/reviewer", response_class=HTMLResponse)
    def reviewer_form(request: Request, next: str = "/queue") -> Response:
        return state.render(request, "reviewer.html", next=safe_next(next), error="")

    @app.post("/reviewer")
    async def reviewer_set(request: Request) -> Response:
        form = await _form(request)
        if not _csrf_ok(request, form):
            return PlainTextResponse("missing or wrong CSRF token: reload the page and try again", 403)
        try:
            name = clean_reviewer(form.get("name", ""))
        except InputError as exc:
            return state.render(request, "reviewer.html", 400, next=safe_next(form.get("next")), error=str(exc))
        response = RedirectResponse(safe_next(form.get("next")), status_code=303)
        response.set_cookie(REVIEWER_COOKIE, encode_cookie(name), samesite="strict", max_age=90 * 86400)
        return response

    @app.get("/queue", response_class=HTMLResponse)
    def queue(request: Request, page: int = 1) -> Response:
        if (redirect := need_reviewer(request)) is not None:
            return redirect
        view, show = _view_show(request.query_params)
        qp = state.queues.page(view, show, request.state.reviewer, page)
        summaries = state.queues.summaries()
        mine = state.store.reviewed_by(request.state.reviewer) if show == "all" else set()
        rr = state.queues.current_rerank
        return state.render(
            request,
            "queue.html",
            q=qp,
            summaries=summaries,
            mine=mine,
            rerank=rr.prob if rr is not None else {},
            view=view,
            show=show,
        )

    @app.get("/site/{index}", response_class=HTMLResponse)
    def site_page(request: Request, index: int) -> Response:
        if (redirect := need_reviewer(request)) is not None:
            return redirect
        if not 0 <= index < len(state.run.sites):
            return state.render(request, "message.html", 404, title="No such site", message=f"There is no site {index} in this run.")
        view, show = _view_show(request.query_params)
        context = state.site_context(state.run.sites[index], request.state.reviewer, view, show)
        return state.render(request, "site.html", **context)

    @app.post("/site/{index}/verdict")
    async def post_verdict(request: Request, index: int, background: BackgroundTasks) -> Response:
        form = await _form(request)
        if not _csrf_ok(request, form):
            return PlainTextResponse("missing or wrong CSRF token: reload the page and try again", 403)
        reviewer = request.state.reviewer or form.get("reviewer", "")
        if not 0 <= index < len(state.run.sites):
            return PlainTextResponse(f"no site {index} in this run", 404)
        site = state.run.sites[index]
        kind = "adjudication" if form.get("adjudicate") in ("1", "on", "true") else "review"
        client = request.client.host if request.client else ""
        try:
            verdict = await run_in_threadpool(
                state.store.add_verdict,
                site.site_id,
                reviewer,
                form.get("verdict", ""),
                note=form.get("note", ""),
                kind=kind,  # type: ignore[arg-type]
                client=client,
            )
        except InputError as exc:
            if _wants_json(request):
                return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)
            return state.render(request, "message.html", 400, title="Verdict not saved", message=str(exc))
        background.add_task(state.queues.maybe_refit)
        view, show = _view_show(form)
        _, nxt = await run_in_threadpool(state.queues.neighbours, view, show, reviewer, index)
        qs = urlencode({"view": view, "show": show})
        next_url = f"/site/{nxt}?{qs}" if nxt is not None else f"/queue?{qs}"
        if _wants_json(request):
            return JSONResponse({"ok": True, "verdict_id": verdict.id, "next": next_url}, background=background)
        return RedirectResponse(next_url, status_code=303, background=background)

    @app.get("/progress", response_class=HTMLResponse)
    def progress_page(request: Request) -> Response:
        if (redirect := need_reviewer(request)) is not None:
            return redirect
        return state.render(request, "progress.html", p=state.progress())

    @app.get("/api/progress")
    def progress_json() -> JSONResponse:
        p = state.progress()
        ag, qual, rr = p["agreement"], p["quality"], p["rerank"]

        def est(e: Any) -> dict[str, Any]:
            return {"value": _nan_to_none(e.value), "low": _nan_to_none(e.low), "high": _nan_to_none(e.high), "n": e.trials}

        return JSONResponse(
            {
                **{k: p[k] for k in ("total", "assessable", "reviewed", "remaining", "confirmed_destroyed",
                                     "confirmed_severe", "disputed", "adjudicated", "finals", "per_reviewer",
                                     "sample_reviewed")},
                "agreement": {"sites": ag.sites, "pairs": ag.pairs, "exact": _nan_to_none(ag.exact),
                              "binary": _nan_to_none(ag.binary), "kappa": _nan_to_none(ag.kappa)},
                "validation": {"sample_size": qual.sample_size, "decided": qual.decided,
                               "precision": est(qual.precision), "recall": est(qual.recall)},
                "rerank": None if rr is None else {"labelled": rr.labelled, "positives": rr.positives,
                                                   "based_on_verdict": rr.based_on_verdict},
                "threshold": state.queues.threshold,
            }
        )

    @app.post("/rerank")
    async def post_rerank(request: Request) -> Response:
        form = await _form(request)
        if not _csrf_ok(request, form):
            return PlainTextResponse("missing or wrong CSRF token: reload the page and try again", 403)
        result = await run_in_threadpool(state.queues.refit_rerank)
        await run_in_threadpool(
            state.store.log_event,
            request.state.reviewer or "anonymous",
            "rerank",
            {"fitted": result is not None, "labelled": result.labelled if result else 0},
        )
        if _wants_json(request):
            return JSONResponse({"ok": result is not None, "labelled": result.labelled if result else 0})
        return RedirectResponse("/queue?view=rerank" if result else "/progress", status_code=303)

    @app.get("/rendered-chip/{index}/{epoch}.png")
    def rendered_chip(index: int, epoch: str) -> Response:
        if not 0 <= index < len(state.run.sites) or epoch not in ("before", "after"):
            return PlainTextResponse("no such chip", 404)
        site = state.run.sites[index]
        data = state.chips.rendered_png(site, epoch)
        if data is None:
            reason = state.chips.ensure_rendered(site) if state.chips.render else "chips are not cut on demand"
            return PlainTextResponse(reason or "no chip", 404)
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/chip/{path:path}")
    def chip(path: str) -> Response:
        if not path.lower().endswith(".png"):
            return PlainTextResponse("only chip images (.png) are served", 404)
        resolved = state.run.resolve_inside(path)
        if resolved is None:
            return PlainTextResponse("no such chip in this run folder", 404)
        return FileResponse(resolved, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    return app
