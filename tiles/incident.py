"""Incident windows: which scenes are timely for a site whose damage is dated to a window.

A window is given as ISO dates (``2023-02-06``) or ISO date-times (``2023-02-06T04:17Z``): a
date covers its whole UTC day. The before scene must be acquired strictly before the window
starts, the after scene at or after the window ends (for ``2023-02-06/2023-02-08``: before
``2023-02-06T00:00Z``, after from ``2023-02-09T00:00Z``). A scene whose acquisition time is
unknown is never timely and is always reported, so no pair is made silently from a scene that
may show the site mid-incident.

Pure date logic, no raster I/O; :class:`tiles.cut.PairCutter` applies it to its candidates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Sequence, TypeVar

__all__ = ["IncidentWindow", "parse_incident_time", "parse_window", "site_window", "TimelyChoice", "timely_scenes"]

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?")


@dataclass(frozen=True)
class IncidentWindow:
    """When an incident happened, as a half-open UTC interval ``[start, end)``.

    Attributes:
        start: the first instant of the window (a before scene must be earlier).
        end: the first instant after the window (an after scene must be at or after it).
        text: the window as given, ``START/END`` (for outputs).
    """

    start: datetime
    end: datetime
    text: str

    def gap_days(self, when: datetime, epoch: str) -> float:
        """Days between a scene time and the window (0 at its edge)."""
        delta = (self.start - when) if epoch == "before" else (when - self.end)
        return delta.total_seconds() / 86400.0

    def is_timely(self, when: datetime | None, epoch: str) -> bool:
        """A before scene is timely strictly before ``start``, an after one at or after ``end``."""
        if when is None:
            return False
        return when < self.start if epoch == "before" else when >= self.end


def parse_incident_time(text: str, *, end: bool) -> datetime:
    """One bound of a window: ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS][Z|+hh:mm]`` (UTC if no zone).

    Args:
        text: the value.
        end: the upper bound (a plain date then means the end of that day).

    Raises:
        ValueError: not one of those forms or not a real date; the message says the form.
    """
    value = str(text).strip()
    if _DATE.fullmatch(value):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a real date (YYYY-MM-DD)") from None
        moment = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        return moment + timedelta(days=1) if end else moment
    if _DATETIME.fullmatch(value):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not a real date-time (YYYY-MM-DDTHH:MM[:SS][Z])") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc)
    raise ValueError(f"{value!r} is not an ISO date (YYYY-MM-DD, or YYYY-MM-DDTHH:MM[:SS][Z] with a time)")


def _window(start_text: str | None, end_text: str | None) -> IncidentWindow:
    start_text = (start_text or "").strip() or None
    end_text = (end_text or "").strip() or None
    if start_text is None and end_text is None:
        raise ValueError("a window needs a start or an end")
    # one bound given: the window is that day (or instant)
    s_text = start_text or end_text
    e_text = end_text or start_text
    start = parse_incident_time(s_text, end=False)  # type: ignore[arg-type]
    stop = parse_incident_time(e_text, end=True)  # type: ignore[arg-type]
    if stop < start:
        raise ValueError(f"the window ends ({e_text}) before it starts ({s_text})")
    return IncidentWindow(start, stop, f"{s_text}/{e_text}")


def parse_window(text: str) -> IncidentWindow:
    """A run's default window, ``START/END`` (either side may be empty: that day alone).

    Raises:
        ValueError: no ``/``, a bad date, or an end before the start.
    """
    value = str(text).strip()
    if value.count("/") != 1:
        raise ValueError(f"{value!r} must be START/END, e.g. 2023-02-06/2023-02-08")
    start, end = value.split("/")
    return _window(start, end)


def site_window(start: str | None, end: str | None) -> IncidentWindow | None:
    """A site's own window from its ``incident_start`` / ``incident_end`` cells (None when both empty).

    Raises:
        ValueError: a bad date or an end before the start.
    """
    if not (start or "").strip() and not (end or "").strip():
        return None
    return _window(start, end)


T = TypeVar("T")


@dataclass(frozen=True)
class TimelyChoice:
    """What the window left of one epoch's scenes.

    Attributes:
        kept: indices of the timely scenes, in the given order.
        unknown: scene ids whose acquisition time is unknown (never timely).
        nearest_untimely: ``(scene_id, ISO time, why)`` of the covering scenes that are not timely
            (wrong side of the window, or too far from it), nearest to the window first.
    """

    kept: tuple[int, ...]
    unknown: tuple[str, ...]
    nearest_untimely: tuple[tuple[str, str, str], ...]

    def describe(self, epoch: str, window: IncidentWindow, max_gap_days: float | None, limit: int = 3) -> str:
        """A sentence for the pair's ``detail``: the rule and the nearest dates found."""
        rule = "acquired before the window starts" if epoch == "before" else "acquired after the window ends"
        if max_gap_days is not None:
            rule += f" and within {max_gap_days:g} days of it (tiles.max_incident_gap_days)"
        parts = [f"no {epoch} scene covering the site was {rule} (incident window {window.text})"]
        if self.nearest_untimely:
            found = ", ".join(f"{sid} {when} ({why})" for sid, when, why in self.nearest_untimely[:limit])
            parts.append(f"nearest found: {found}")
        if self.unknown:
            parts.append(
                "scenes with unknown acquisition time (never used with a window): " + ", ".join(self.unknown[:limit])
                + ("" if len(self.unknown) <= limit else f" and {len(self.unknown) - limit} more")
            )
        return "; ".join(parts)


def timely_scenes(
    times: Sequence[tuple[str, datetime | None]], window: IncidentWindow, epoch: str, max_gap_days: float | None
) -> TimelyChoice:
    """Which of one epoch's covering scenes may be used under ``window``.

    Args:
        times: ``(scene_id, acquired or None)`` per candidate, best first.
        window: the site's window.
        epoch: ``before`` or ``after``.
        max_gap_days: a timely scene farther than this from the window is not used (None: any).

    Returns:
        The kept indices (in the given order) and what was left out.
    """
    kept: list[int] = []
    unknown: list[str] = []
    untimely: list[tuple[float, str, str, str]] = []
    for i, (sid, when) in enumerate(times):
        if when is None:
            if sid not in unknown:
                unknown.append(sid)
            continue
        iso = when.isoformat().replace("+00:00", "Z")
        if not window.is_timely(when, epoch):
            side = "not before the window start" if epoch == "before" else "not after the window end"
            untimely.append((abs(window.gap_days(when, epoch)), sid, iso, side))
            continue
        gap = window.gap_days(when, epoch)
        if max_gap_days is not None and gap > max_gap_days:
            untimely.append((gap, sid, iso, f"{gap:.0f} days from the window"))
            continue
        kept.append(i)
    untimely.sort()
    seen: set[str] = set()
    nearest = []
    for _, sid, iso, why in untimely:
        if sid not in seen:
            seen.add(sid)
            nearest.append((sid, iso, why))
    return TimelyChoice(tuple(kept), tuple(unknown), tuple(nearest))
