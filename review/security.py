"""Access control of the review app: access token, cross-site request checks, safe redirects.

- Access token: when the server listens beyond loopback, every request must carry the token, as
  ``?token=`` once (it is then kept in an HttpOnly, SameSite=Strict cookie and removed from the
  URL), the cookie, or an ``Authorization: Bearer`` header. Compared in constant time.
- Cross-site requests: every POST must come from the app's own pages: a per-session CSRF token
  (cookie, echoed in the form or the ``X-CSRF-Token`` header), plus ``Origin`` and
  ``Sec-Fetch-Site`` checks where the browser sends them.
- Host header: on loopback without a token, only loopback host names are accepted, so a web page
  cannot reach the app through DNS rebinding.
"""

from __future__ import annotations

import secrets
from urllib.parse import quote, unquote, urlsplit

from review.config import LOOPBACK_HOSTS

TOKEN_COOKIE = "sw_token"
CSRF_COOKIE = "sw_csrf"
REVIEWER_COOKIE = "sw_reviewer"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"


def new_token() -> str:
    """A fresh random access or CSRF token (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.1, localhost and ::1 (the only addresses that need no token)."""
    return host.strip("[]") in LOOPBACK_HOSTS


def tokens_match(given: str | None, expected: str) -> bool:
    """Constant-time comparison; False for a missing value."""
    if not given or not expected:
        return False
    return secrets.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


def same_origin(origin: str | None, host_header: str | None) -> bool:
    """Whether an ``Origin`` header names the host the request was sent to (absent: True)."""
    if origin is None:
        return True
    if origin == "null" or not host_header:
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host_header.lower()


def cross_site_fetch(sec_fetch_site: str | None) -> bool:
    """True when the browser says the request came from another site."""
    return sec_fetch_site is not None and sec_fetch_site not in ("same-origin", "none")


def host_allowed(host_header: str | None, allowed: frozenset[str] | None) -> bool:
    """Whether the ``Host`` header's name (without port) is allowed; ``allowed`` None = any."""
    if allowed is None:
        return True
    if not host_header:
        return False
    name = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
    return name.strip("[]").lower() in allowed


def safe_next(target: str | None, default: str = "/queue") -> str:
    """A local path to redirect to: refuses absolute URLs and protocol-relative ``//host``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if any(ord(c) < 32 for c in target):
        return default
    return target


def encode_cookie(value: str) -> str:
    """Cookie-safe text (percent-encoded)."""
    return quote(value, safe="")


def decode_cookie(value: str | None) -> str:
    """Inverse of :func:`encode_cookie` ("" for None)."""
    return unquote(value) if value else ""
