"""Settings of the review web app (defaults live here and nowhere else)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReviewConfig:
    """How ``sitewatch review`` serves a run. The review helper owns and extends this class."""

    host: str = "127.0.0.1"
    port: int = 8765
