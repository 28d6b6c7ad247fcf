"""Access control of the review app: access token, cross-site request checks, safe redirects.

- Access token: when the server listens beyond loopback, every request must carry the token, as
  ``?token=`` once (it is then kept in an HttpOnly, SameSite=Strict cookie and removed from the
  URL), the cookie, or an ``Authorization: Bearer`` header. Compared in constant time. A token
  must hold at least 128 random bits (:func:`check_token`); a client that presents too many
  different wrong tokens is refused for a while (:class:`TokenFailures`).
- Cross-site requests: every POST must come from the app's own pages: a per-session CSRF token
  (cookie, echoed in the form or the ``X-CSRF-Token`` header), plus ``Origin`` and
  ``Sec-Fetch-Site`` checks where the browser sends them.
- Host header: on loopback without a token, only loopback host names are accepted, so a web page
  cannot reach the app through DNS rebinding.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import threading
import time
from collections import OrderedDict, deque
from typing import Callable
from urllib.parse import quote, unquote, urlsplit

from review.config import LOOPBACK_HOSTS
from sitewatch.errors import UsageError

TOKEN_COOKIE = "sw_token"
CSRF_COOKIE = "sw_csrf"
REVIEWER_COOKIE = "sw_reviewer"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"


def new_token() -> str:
    """A fresh random access or CSRF token (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(32)


#: the fewest random bits an access token must hold.
MIN_TOKEN_BITS = 128
#: the fewest different characters a token may be made of (refuses ``aaaa...``).
MIN_TOKEN_DISTINCT = 8
_URLSAFE = frozenset(string.ascii_letters + string.digits + "-_")
_HEX = frozenset(string.hexdigits)
TOKEN_RULE = (
    "an access token needs at least 128 random bits: 22 or more characters of A-Z a-z 0-9 - _ "
    "(url-safe base64), or 32 or more hex digits, with at least 8 different characters; make one with "
    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`, or give none and one is generated"
)


def token_bits(token: str) -> int:
    """Bits a random token of this length and alphabet holds: 4 per character for hex digits
    only, 6 per character for url-safe base64 (0 when it holds other characters)."""
    if not token or any(c not in _URLSAFE for c in token):
        return 0
    return len(token) * (4 if all(c in _HEX for c in token) else 6)


def check_token(token: str | None) -> None:
    """Refuse an access token that is too weak to guard a server others can reach.

    Raises:
        UsageError: (setting ``review.token``) shorter than :data:`MIN_TOKEN_BITS` bits, with
            characters outside url-safe base64, or of fewer than 8 different characters; the
            message states the rule.
    """
    if token is None:
        return
    if any(c not in _URLSAFE for c in token):
        why = "it holds characters other than A-Z a-z 0-9 - _ (it must survive in a URL)"
    elif token_bits(token) < MIN_TOKEN_BITS:
        why = f"{len(token)} character(s) hold at most {token_bits(token)} bits"
    elif len(set(token)) < MIN_TOKEN_DISTINCT:
        why = f"it is made of only {len(set(token))} different character(s)"
    else:
        return
    raise UsageError(f"review.token: the access token is too weak ({why}); {TOKEN_RULE}", setting="review.token")


class TokenFailures:
    """Per-client count of wrong access tokens, to refuse guessing.

    A client (IP address, as the server sees it after trusted proxy headers) that presented
    ``limit`` different wrong tokens within ``window_s`` seconds is refused (HTTP 429) until the
    oldest of them is ``window_s`` old. Different tokens are counted, not requests, so a browser
    still holding the cookie of an earlier server (one stale token sent with every image) is not
    locked out, while guessing is. Thread-safe; remembers at most ``max_clients`` clients.

    Args:
        limit: different wrong tokens allowed per window (0: no limit).
        window_s: the window, in seconds.
        max_clients: clients remembered (the longest quiet are forgotten first).
        clock: seconds, monotonic (for tests).
    """

    def __init__(
        self, limit: int, window_s: float, *, max_clients: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[tuple[float, bytes]]] = OrderedDict()

    def _recent(self, client: str, now: float) -> deque[tuple[float, bytes]] | None:
        seen = self._failures.get(client)
        if seen is None:
            return None
        while seen and now - seen[0][0] >= self.window_s:
            seen.popleft()
        if not seen:
            del self._failures[client]
            return None
        return seen

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again (0.0: not refused)."""
        if not self.limit:
            return 0.0
        with self._lock:
            now = self.clock()
            seen = self._recent(client, now)
            if seen is None or len(seen) < self.limit:
                return 0.0
            return max(0.0, self.window_s - (now - seen[0][0]))

    def failed(self, client: str, token: str) -> None:
        """Record that ``client`` presented the wrong ``token`` (only a digest of it is kept)."""
        if not self.limit:
            return
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()[:16]
        with self._lock:
            now = self.clock()
            seen = self._recent(client, now)
            if seen is None:
                seen = self._failures[client] = deque()
            if all(d != digest for _, d in seen):
                seen.append((now, digest))
            self._failures.move_to_end(client)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)


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
