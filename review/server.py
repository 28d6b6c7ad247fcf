"""Running the review app with uvicorn, with the access policy decided in one place."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from review.config import LOOPBACK_HOSTS, ReviewConfig
from review.security import check_token, is_loopback, new_token

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)

TOKEN_ENV = "SITEWATCH_REVIEW_TOKEN"


@dataclass(frozen=True)
class AccessPolicy:
    """Who may reach the app.

    Attributes:
        token: the access token every request must carry, or None (loopback, no token given).
        generated: True when the token was generated here (it must be printed for the user).
        allowed_hosts: ``Host`` header names accepted, or None for any (with a token).
    """

    token: str | None
    generated: bool
    allowed_hosts: frozenset[str] | None


def access_policy(host: str, token: str | None) -> AccessPolicy:
    """Decide the access policy for listening on ``host``.

    Loopback (127.0.0.1, localhost, ::1) needs no token but only accepts loopback ``Host``
    headers. Any other address requires a token: the given one, ``$SITEWATCH_REVIEW_TOKEN``, or a
    freshly generated one.

    Raises:
        UsageError: (``review.token``) a given token is too weak (:func:`review.security.check_token`).
    """
    token = token or os.environ.get(TOKEN_ENV) or None
    check_token(token)
    if is_loopback(host):
        return AccessPolicy(token, False, None if token else frozenset(LOOPBACK_HOSTS | {"[::1]"}))
    if token:
        return AccessPolicy(token, False, None)
    return AccessPolicy(new_token(), True, None)


def app_url(host: str, port: int, token: str | None) -> str:
    """The URL to open (with the token, when there is one)."""
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}/"
    return base + (f"queue?token={token}" if token else "queue")


def free_port(host: str) -> int:
    """A TCP port that is free on ``host`` right now."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another program already listens on, before anything is printed or loaded.

    uvicorn would otherwise print the app's URL, then its own bind error, and exit with status 3.

    Raises:
        UsageError: ``review.port: ...`` naming the port and what to do.
    """
    import socket

    from sitewatch.errors import UsageError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(
                f"review.port: {port} on {host} is not free ({exc.strerror or exc}; another "
                "`sitewatch review` running?); pick another port, or 0 for a free one",
                setting="review.port",
            ) from None


def uvicorn_config(app: Any, config: ReviewConfig, port: int) -> "uvicorn.Config":
    """How uvicorn serves the app: proxy headers believed from ``config.trusted_proxies`` only."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=config.host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=bool(config.trusted_proxies),
        forwarded_allow_ips=list(config.trusted_proxies) or None,
    )


def serve(
    run_dir: Path,
    config: ReviewConfig,
    *,
    token: str | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve the review app until interrupted.

    Args:
        run_dir: the run folder.
        config: review settings (host, port, ...).
        token: access token (see :func:`access_policy`).
        announce: where the URL (and a generated token) is printed.
    """
    import uvicorn

    from review.app import create_app

    policy = access_policy(config.host, token)
    if config.port:
        check_port_free(config.host, config.port)
    app = create_app(run_dir, config, token=policy.token, allowed_hosts=policy.allowed_hosts)
    port = config.port or free_port(config.host)
    server = uvicorn.Server(uvicorn_config(app, config, port))
    if policy.generated:
        announce(f"access token (generated; needed because {config.host} is reachable from other machines): {policy.token}")
    announce(f"reviewing {Path(run_dir).resolve()} at {app_url(config.host, port, policy.token)}")
    if config.host in ("0.0.0.0", "::"):
        announce("(listening on every interface: replace the address with this machine's name or IP)")
    announce("stop with Ctrl-C; verdicts are saved as they are given")
    server.run()
