"""One site's page and the verdicts posted from it."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

from review.guards import Form, Reviewer, view_show, wants_json
from review.state import State, site_parts
from sitewatch.errors import InputError

router = APIRouter()


def _judged_dates(meta: dict) -> str:
    """For a series run, the dates of the pair the site page showed (``BEFORE/AFTER``), else ``""``.

    Taken from the run's own row (the evidence pair's acquisition times), never from the form.
    """
    if not meta.get("series_dates"):
        return ""
    days = [(meta.get(k) or "")[:10] for k in ("before_time", "after_time")]
    return "/".join(days) if all(days) else ""


def marked_parts(form: dict[str, str]) -> list[str]:
    """The parts a verdict marks damaged: the page's ticked boxes (``part:p03=on``) and/or a
    ``damaged_parts=p01,p03`` field (for scripts)."""
    ticked = [key[len("part:"):] for key, value in form.items() if key.startswith("part:") and value not in ("", "0", "off")]
    listed = [p.strip() for p in form.get("damaged_parts", "").split(",") if p.strip()]
    return ticked + listed


@router.get("/site/{index}", response_class=HTMLResponse)
def site_page(request: Request, state: State, reviewer: Reviewer, index: int) -> Response:
    """The site at row ``index`` of ``scores.csv``: chips, scores, quality, verdict buttons."""
    site = state.site(index)
    if site is None:
        return state.render(request, "message.html", 404, title="No such site", message=f"There is no site {index} in this run.")
    view, show = view_show(request.query_params)
    return state.render(request, "site.html", **state.site_context(site, reviewer, view, show))


@router.post("/site/{index}/verdict")
async def post_verdict(request: Request, state: State, form: Form, index: int, background: BackgroundTasks) -> Response:
    """Store a verdict, then answer with the next site of the queue (JSON for the page script,
    a redirect for a plain form post)."""
    reviewer = request.state.reviewer or form.get("reviewer", "")
    site = state.site(index)
    if site is None:
        return PlainTextResponse(f"no site {index} in this run", 404)
    kind = "adjudication" if form.get("adjudicate") in ("1", "on", "true") else "review"
    client = request.client.host if request.client else ""
    parts = site_parts(site)
    try:
        verdict = await run_in_threadpool(
            state.store.add_verdict,
            site.site_id,
            reviewer,
            form.get("verdict", ""),
            note=form.get("note", ""),
            kind=kind,  # type: ignore[arg-type]
            client=client,
            judged_dates=_judged_dates(site.meta),
            damaged_parts=marked_parts(form),
            known_parts=parts.part_ids if parts is not None else (),
        )
    except InputError as exc:
        if wants_json(request):
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)
        return state.render(request, "message.html", 400, title="Verdict not saved", message=str(exc))
    background.add_task(state.queues.maybe_refit)
    view, show = view_show(form)
    _, nxt = await run_in_threadpool(state.queues.neighbours, view, show, reviewer, index)
    qs = urlencode({"view": view, "show": show})
    next_url = f"/site/{nxt}?{qs}" if nxt is not None else f"/queue?{qs}"
    if wants_json(request):
        return JSONResponse({"ok": True, "verdict_id": verdict.id, "next": next_url}, background=background)
    return RedirectResponse(next_url, status_code=303, background=background)
