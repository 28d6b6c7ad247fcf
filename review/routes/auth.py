"""Who is reviewing: the name form (names, not passwords; access itself is the token's job)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from review.guards import Form, set_reviewer_cookie
from review.security import safe_next
from review.state import State
from review.store import clean_reviewer
from sitewatch.errors import InputError

router = APIRouter()


@router.get("/reviewer", response_class=HTMLResponse)
def reviewer_form(request: Request, state: State, next: str = "/queue") -> Response:
    """The name form; ``next`` is where to go afterwards (local paths only)."""
    return state.render(request, "reviewer.html", next=safe_next(next), error="")


@router.post("/reviewer")
def reviewer_set(request: Request, state: State, form: Form) -> Response:
    """Set the reviewer's name (a cookie) and go on to ``next``."""
    try:
        name = clean_reviewer(form.get("name", ""))
    except InputError as exc:
        return state.render(request, "reviewer.html", 400, next=safe_next(form.get("next")), error=str(exc))
    response = RedirectResponse(safe_next(form.get("next")), status_code=303)
    set_reviewer_cookie(request, response, name)
    return response
