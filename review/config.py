"""Settings of the review web app (defaults live here and nowhere else)."""

from __future__ import annotations

from dataclasses import dataclass

#: addresses that only this machine can reach; binding any other address needs an access token.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class ReviewConfig:
    """How ``sitewatch review`` serves a run folder and summarises the verdicts.

    The access token is deliberately not a setting: it is passed with ``--token`` (or the
    ``SITEWATCH_REVIEW_TOKEN`` environment variable) or generated, so config files never hold
    credentials.

    Attributes:
        host: address to listen on. Anything but 127.0.0.1/localhost/::1 requires an access
            token on every request.
        port: TCP port (0 picks a free one).
        threshold: the score above which a site counts as flagged (used by the uncertainty queue
            and the validation estimate). ``None`` takes the threshold the run itself used
            (``manifest.json``), or 0.5 when the run does not record one.
        page_size: rows per queue page.
        validation_size: sites in the random validation sample (drawn among assessable sites).
        validation_seed: seed of the validation sample, so every reviewer sees the same sample.
        rerank_every: refit the quick re-rank after every N new verdicts (0: only on request).
        rerank_l2: L2 penalty of the logistic correction fitted on stored embeddings (10 kept the
            run's ranking when verdicts were few or biased, and gained most otherwise, on xBD).
        rerank_min_labels: fewest labelled sites (each class at least 2) before a re-rank is fit.
        render_missing_chips: cut chips on demand (no CNN) for sites that ``detect`` wrote no chip
            for (cached in ``RUN/review.sqlite-chips``); otherwise the page shows a "no chip" note.
        confidence: confidence level of the intervals on the progress page.
        behind_tls: the app is reached through a TLS reverse proxy (Caddy, nginx): every cookie
            is marked ``Secure``. Without it, cookies are ``Secure`` on requests that a trusted
            proxy marks ``X-Forwarded-Proto: https``.
        trusted_proxies: addresses whose ``X-Forwarded-For``/``X-Forwarded-Proto`` headers are
            believed (the reverse proxy's address; ``[]``: none, ``["*"]``: any). The client
            address they name is the one failed token attempts are counted for.
        token_failures: different wrong access tokens one client may present within
            ``token_failure_window_s`` before it is refused with HTTP 429 (0: no limit).
        token_failure_window_s: that window, in seconds.
        context_scale: the context view shows this many times the chip's side (same centre).
        context_px: side of the context view in pixels.
        map_px: pixels on the longer side of the run map's picture of the after scenes.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    threshold: float | None = None
    page_size: int = 50
    validation_size: int = 200
    validation_seed: int = 0
    rerank_every: int = 25
    rerank_l2: float = 10.0
    rerank_min_labels: int = 10
    render_missing_chips: bool = True
    confidence: float = 0.95
    behind_tls: bool = False
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    token_failures: int = 10
    token_failure_window_s: float = 60.0
    context_scale: float = 3.0
    context_px: int = 256
    map_px: int = 2048

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        if self.page_size < 1:
            raise ValueError("page_size must be at least 1")
        if self.validation_size < 0:
            raise ValueError("validation_size must be 0 or more")
        if self.rerank_every < 0:
            raise ValueError("rerank_every must be 0 (only on request) or more")
        if self.rerank_l2 <= 0:
            raise ValueError("rerank_l2 must be positive")
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError("confidence must be in [0.5, 1)")
        if self.token_failures < 0:
            raise ValueError("token_failures must be 0 (no limit) or more")
        if self.token_failure_window_s <= 0:
            raise ValueError("token_failure_window_s must be positive")
        if not 1.0 < self.context_scale <= 20.0:
            raise ValueError("context_scale must be above 1 and at most 20")
        if not 32 <= self.context_px <= 2048:
            raise ValueError("context_px must be between 32 and 2048")
        if not 256 <= self.map_px <= 8192:
            raise ValueError("map_px must be between 256 and 8192")
