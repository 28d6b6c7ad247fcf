"""The request rules every route of the review app shares (the policy itself is in :mod:`review.security`).

- :func:`access_guard` (HTTP middleware, so it covers ``/static`` too): the ``Host`` header, the
  access token (with failed attempts rate-limited per client), the CSRF and reviewer cookies
  (``Secure`` behind TLS) and the security headers of every response.
- :func:`csrf_protected` (an app-wide dependency): every request that changes something (any
  method but GET/HEAD/OPTIONS) must come from the app's own pages: same-origin ``Origin`` and
  ``Sec-Fetch-Site`` where the browser sends them, and the page's CSRF token. A route cannot
  forget it: it is declared once on the app, not per route.
- :func:`posted_form`: the URL-encoded body of a POST, read once per request, streamed and
  refused with 413 as soon as it passes :data:`MAX_BODY_BYTES` (never held whole first).
- :func:`current_reviewer`: the reviewer's name, or a redirect to the name form.

Refusals are :class:`Refused` (a plain-text answer with a status) and :class:`ReviewerNeeded`
(a redirect), turned into responses by :func:`install_handlers`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Mapping
from urllib.parse import parse_qsl, urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from review.queue import QUEUE_VIEWS, SHOW_CHOICES
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
    same_origin,
    tokens_match,
)
from review.store import clean_reviewer
from sitewatch.errors import InputError

#: the largest request body accepted (the forms carry a note of at most 2,000 characters).
MAX_BODY_BYTES = 64_000
TOO_LARGE = "request body too large (over 64 kB): shorten the note"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: how long the reviewer cookie lasts (seconds).
REVIEWER_COOKIE_AGE = 90 * 86400

CSP = (
    "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class Refused(Exception):
    """A request the app refuses, answered as plain text.

    Args:
        status: the HTTP status code.
        message: what went wrong and what to do, shown to the user.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ReviewerNeeded(Exception):
    """A page that needs a reviewer name was opened without one (answered by a redirect to the form)."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


def install_handlers(app: FastAPI) -> None:
    """Answer :class:`Refused`, :class:`ReviewerNeeded` and bad input (:class:`InputError`, 400)."""

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        return PlainTextResponse(exc.message, exc.status)

    @app.exception_handler(ReviewerNeeded)
    async def reviewer_needed(request: Request, exc: ReviewerNeeded) -> Response:
        return RedirectResponse("/reviewer?" + urlencode({"next": exc.target}), status_code=303)

    @app.exception_handler(InputError)
    async def bad_input(request: Request, exc: InputError) -> Response:
        return PlainTextResponse(str(exc), 400)


def secure_cookies(request: Request) -> bool:
    """Whether cookies must be ``Secure``: ``review.behind_tls``, or a request that came over
    HTTPS (uvicorn takes the scheme from ``X-Forwarded-Proto`` of a trusted proxy only)."""
    return bool(request.app.state.review.config.behind_tls) or request.url.scheme == "https"


def set_reviewer_cookie(request: Request, response: Response, name: str) -> None:
    """Remember the reviewer's name in the browser."""
    response.set_cookie(
        REVIEWER_COOKIE, encode_cookie(name), samesite="strict", max_age=REVIEWER_COOKIE_AGE,
        secure=secure_cookies(request),
    )


def _token_redirect(request: Request, token: str) -> Response:
    """Move a correct ``?token=`` into an HttpOnly cookie and drop it from the URL."""
    rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
    target = request.url.path + ("?" + urlencode(rest) if rest else "")
    redirect = RedirectResponse(target, status_code=303)
    redirect.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies(request))
    return redirect


def _presented_tokens(request: Request) -> tuple[str | None, str | None]:
    """``(?token= of a GET, cookie or bearer token)`` the request carries (None where absent)."""
    query = request.query_params.get("token") if request.method == "GET" else None
    auth = request.headers.get("authorization", "")
    bearer = auth[7:] if auth.lower().startswith("bearer ") else None
    return query, request.cookies.get(TOKEN_COOKIE) or bearer


def _check_token(request: Request, token: str) -> Response | None:
    """None when the request carries the right token, else the answer: a redirect that moves a
    right ``?token=`` into a cookie, 401, or 429 while the client is refused for guessing."""
    failures = request.app.state.review.token_failures
    client = request.client.host if request.client else ""
    wait = failures.retry_after(client)
    if wait > 0:
        return PlainTextResponse(
            f"too many wrong access tokens from {client}: try again in {math.ceil(wait)} s with the URL "
            "that `sitewatch review` printed",
            429,
            headers={"Retry-After": str(math.ceil(wait))},
        )
    query, kept = _presented_tokens(request)
    if query is not None and tokens_match(query, token):
        return _token_redirect(request, token)
    if tokens_match(kept, token):
        return None
    for wrong in (query, kept):
        if wrong:
            failures.failed(client, wrong)
    return PlainTextResponse(
        "access token required: open the URL that `sitewatch review` printed (it ends in ?token=...)", 401
    )


def _reviewer_from_link(request: Request, reviewer: str) -> str | None:
    """``?reviewer=NAME`` names a reviewer who has none yet; changing it goes through the form
    (so a link from elsewhere cannot silently re-attribute someone's verdicts)."""
    if request.method != "GET" or reviewer or not request.query_params.get("reviewer"):
        return None
    try:
        return clean_reviewer(request.query_params["reviewer"])
    except InputError:
        return None


async def access_guard(request: Request, call_next: Any) -> Response:
    """HTTP middleware: host and token checks, cookies, security headers (see the module doc)."""
    settings = request.app.state.review.settings
    if not host_allowed(request.headers.get("host"), settings.allowed_hosts):
        return PlainTextResponse("Host header not allowed: open the app at the address it printed", 400)
    if settings.token is not None:
        refusal = _check_token(request, settings.token)
        if refusal is not None:
            return refusal
    csrf_cookie = request.cookies.get(CSRF_COOKIE)
    request.state.csrf = csrf_cookie or new_token()
    reviewer = decode_cookie(request.cookies.get(REVIEWER_COOKIE))
    from_link = _reviewer_from_link(request, reviewer)
    request.state.reviewer = from_link or reviewer
    response: Response = await call_next(request)
    if not csrf_cookie:
        response.set_cookie(CSRF_COOKIE, request.state.csrf, httponly=True, samesite="strict", secure=secure_cookies(request))
    if from_link:
        set_reviewer_cookie(request, response, from_link)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    # not "no-referrer": with it, Chromium sends "Origin: null" on the app's own form posts
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


async def posted_form(request: Request) -> dict[str, str]:
    """Dependency: the URL-encoded form body (the app's forms and script send nothing else).

    Read once per request and kept on ``request.state``. The body is streamed: a declared
    ``Content-Length`` over the limit is refused before reading anything, and a body without
    one (chunked) as soon as it passes the limit, so memory stays flat whatever is sent.

    Raises:
        Refused: 413 when the body is over :data:`MAX_BODY_BYTES`; 400 for a bad Content-Length.
    """
    cached = getattr(request.state, "form", None)
    if cached is not None:
        return cached
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise Refused(400, f"Content-Length {declared!r} is not a number of bytes")
        if int(declared) > MAX_BODY_BYTES:
            raise Refused(413, TOO_LARGE)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Refused(413, TOO_LARGE)
        chunks.append(chunk)
    body = b"".join(chunks)
    form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    request.state.form = form
    return form


async def csrf_protected(request: Request) -> None:
    """App-wide dependency: refuse a state-changing request that did not come from the app's pages.

    Raises:
        Refused: 403 for a cross-site ``Origin``/``Sec-Fetch-Site`` or a missing or wrong CSRF
            token (cookie, echoed in the form's ``csrf`` field or the ``X-CSRF-Token`` header).
    """
    if request.method in SAFE_METHODS:
        return
    if cross_site_fetch(request.headers.get("sec-fetch-site")) or not same_origin(
        request.headers.get("origin"), request.headers.get("host")
    ):
        raise Refused(403, "cross-site request refused")
    form = await posted_form(request)
    given = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    if not tokens_match(given, request.cookies.get(CSRF_COOKIE, "")):
        raise Refused(403, "missing or wrong CSRF token: reload the page and try again")


def current_reviewer(request: Request) -> str:
    """Dependency: the reviewer's name; pages opened without one redirect to the name form.

    Raises:
        ReviewerNeeded: no reviewer cookie (nor ``?reviewer=`` for a first visit).
    """
    if request.state.reviewer:
        return request.state.reviewer
    raise ReviewerNeeded(request.url.path + (f"?{request.url.query}" if request.url.query else ""))


#: a route parameter holding the posted form.
Form = Annotated[dict[str, str], Depends(posted_form)]
#: a route parameter holding the reviewer's name (pages that need one).
Reviewer = Annotated[str, Depends(current_reviewer)]


def wants_json(request: Request) -> bool:
    """Whether the client asked for JSON (the page script does; plain form posts do not)."""
    return "application/json" in request.headers.get("accept", "")


def view_show(params: Mapping[str, str]) -> tuple[str, str]:
    """The queue view and filter named in ``params`` (defaults for unknown values)."""
    view = params.get("view", "score")
    show = params.get("show", "todo")
    return (view if view in QUEUE_VIEWS else "score", show if show in SHOW_CHOICES else "todo")
