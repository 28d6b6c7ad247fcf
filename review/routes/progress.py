"""Progress figures (page and JSON) and the quick re-rank."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from review.guards import Reviewer, wants_json
from review.routes.downloads import DOWNLOADS
from review.state import State

router = APIRouter()

#: progress figures copied as they are into ``/api/progress``.
PLAIN_FIGURES = (
    "total", "assessable", "reviewed", "remaining", "confirmed_destroyed", "confirmed_severe",
    "disputed", "adjudicated", "finals", "per_reviewer", "sample_reviewed",
)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _estimate(e: Any) -> dict[str, Any]:
    return {"value": _nan_to_none(e.value), "low": _nan_to_none(e.low), "high": _nan_to_none(e.high), "n": e.trials}


@router.get("/progress", response_class=HTMLResponse)
def progress_page(request: Request, state: State, reviewer: Reviewer) -> Response:
    listed = state.chips.outputs.listed
    files = [(name, what) for name, (_, what) in DOWNLOADS.items() if name in listed]
    return state.render(request, "progress.html", p=state.progress(), downloads=files)


@router.get("/api/progress")
def progress_json(state: State) -> JSONResponse:
    """The progress figures as JSON (NaN as null)."""
    p = state.progress()
    ag, qual, rr = p["agreement"], p["quality"], p["rerank"]
    return JSONResponse(
        {
            **{k: p[k] for k in PLAIN_FIGURES},
            "agreement": {"sites": ag.sites, "pairs": ag.pairs, "exact": _nan_to_none(ag.exact),
                          "binary": _nan_to_none(ag.binary), "kappa": _nan_to_none(ag.kappa)},
            "validation": {"sample_size": qual.sample_size, "decided": qual.decided,
                           "precision": _estimate(qual.precision), "recall": _estimate(qual.recall)},
            "rerank": None if rr is None else {"labelled": rr.labelled, "positives": rr.positives,
                                               "based_on_verdict": rr.based_on_verdict},
            "threshold": state.queues.threshold,
            "verdict_chain": {"verdicts": p["chain"]["verdicts"], "head": p["chain"]["head"],
                              "intact_at_start": p["chain"]["at_start"].ok,
                              "problems_at_start": list(p["chain"]["at_start"].problems)},
        }
    )


@router.post("/rerank")
async def post_rerank(request: Request, state: State) -> Response:
    """Refit the quick re-rank now (recorded in the audit log)."""
    result = await run_in_threadpool(state.queues.refit_rerank)
    await run_in_threadpool(
        state.store.log_event,
        request.state.reviewer or "anonymous",
        "rerank",
        {"fitted": result is not None, "labelled": result.labelled if result else 0},
    )
    if wants_json(request):
        return JSONResponse({"ok": result is not None, "labelled": result.labelled if result else 0})
    return RedirectResponse("/queue?view=rerank" if result else "/progress", status_code=303)
