"""The queue pages: one view (score, uncertainty, validation, disputed, re-rank), one filter, one page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from review.guards import Reviewer, view_show
from review.state import State

router = APIRouter()


@router.get("/", include_in_schema=False)
def home() -> Response:
    return RedirectResponse("/queue", status_code=303)


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    return Response(status_code=204)


@router.get("/queue", response_class=HTMLResponse)
def queue(request: Request, state: State, reviewer: Reviewer, page: int = 1) -> Response:
    """One page of a queue (``?view=``, ``?show=``, ``?page=``)."""
    view, show = view_show(request.query_params)
    qp = state.queues.page(view, show, reviewer, page)
    mine = state.store.reviewed_by(reviewer) if show == "all" else set()
    rr = state.queues.current_rerank
    return state.render(
        request,
        "queue.html",
        q=qp,
        summaries=state.queues.summaries(),
        mine=mine,
        rerank=rr.prob if rr is not None else {},
        view=view,
        show=show,
    )
