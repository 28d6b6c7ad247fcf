"""Helpers shared by the subcommands: config options and loading."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Mapping, TypeVar

from sitewatch.config import load_config, parse_set_overrides

T = TypeVar("T")


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and repeatable ``--set SECTION.KEY=VALUE``."""
    g = parser.add_argument_group("configuration")
    g.add_argument("--config", metavar="FILE", help="YAML config file (see configs/); flags override it")
    g.add_argument(
        "--set",
        metavar="SECTION.KEY=VALUE",
        action="append",
        default=[],
        help="override one setting, e.g. --set tiles.chip_px=256 (repeatable)",
    )


def add_site_and_raster_inputs(group: argparse.ArgumentParser | argparse._ArgumentGroup, *, series: bool = False) -> None:
    """``--sites FILE`` and repeatable ``--before PATH...`` / ``--after PATH...`` (tiles, detect).

    With ``series``, ``--series PATH...`` too, and ``--before``/``--after`` become optional (the
    command checks that one of the two ways is given).
    """
    group.add_argument("--sites", required=True, metavar="FILE", help="sites CSV (site_id, lon, lat, ...) or GeoJSON")
    if series:
        group.add_argument(
            "--series", nargs="+", action="extend", metavar="PATH",
            help="an image series instead of --before/--after: dated GeoTIFF files, folders, globs or STAC files "
            "(repeatable); each site is scored across its dates and its change bracketed",
        )
    for epoch in ("before", "after"):
        group.add_argument(
            f"--{epoch}", required=not series, nargs="+", action="extend", metavar="PATH",
            help=f"{epoch} rasters: GeoTIFF files, folders, globs or STAC catalogue JSON files (repeatable)",
        )


def add_incident_window_option(group: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--incident-window START/END`` (tiles.incident_window; tiles, detect)."""
    group.add_argument(
        "--incident-window",
        metavar="START/END",
        help="ISO dates of the incident for sites without incident_start/incident_end: before scenes "
        "must be acquired before START, after scenes after END (tiles.incident_window)",
    )


def load_job_config(
    cls: type[T],
    args: argparse.Namespace,
    flags: Mapping[str, Any] | None = None,
) -> T:
    """Defaults < ``--config`` file < ``--set`` < the command's own flags (``None`` = not given).

    Args:
        cls: the job dataclass (:mod:`sitewatch.jobs`).
        args: the parsed command line.
        flags: ``{dotted setting: value}`` or ``{dotted setting: (flag, value)}`` for the
            command's own flags; with the flag's name given, errors about that setting name the
            flag (:func:`describe_error`).
    """
    explicit = parse_set_overrides(getattr(args, "set", None))
    overrides: dict[str, Any] = {}
    for k, v in (flags or {}).items():
        flag = None
        if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) and v[0].startswith("--"):
            flag, v = v
        if v is not None:
            overrides[k] = v
            if flag:
                record_flag(args, k, flag)
    return load_config(cls, getattr(args, "config", None), overrides, explicit=explicit)


def progress_disabled(args: argparse.Namespace) -> bool | None:
    """The value for tqdm's ``disable``: True with -q, else None (automatic: on for terminals)."""
    return True if getattr(args, "quiet", 0) else None


def info(msg: str, args: argparse.Namespace) -> None:
    """User-facing output on stdout, silenced by -q."""
    if not getattr(args, "quiet", 0):
        print(msg, file=sys.stdout, flush=True)



#: argparse attribute where :func:`load_job_config` records ``{setting: flag}`` for flags given.
_FLAG_SETTINGS_ATTR = "_sitewatch_flag_settings"


def record_flag(args: argparse.Namespace, setting: str, flag: str) -> None:
    """Remember that ``flag`` (e.g. ``--operating-point``) set the dotted ``setting``."""
    mapping = getattr(args, _FLAG_SETTINGS_ATTR, None)
    if mapping is None:
        mapping = {}
        setattr(args, _FLAG_SETTINGS_ATTR, mapping)
    mapping[setting] = flag


def describe_error(exc: BaseException, args: argparse.Namespace | None) -> str:
    """The message of a library error, naming the flag that set its setting when a flag did.

    A library error names the dotted setting (``detect.operating_point: ...``, with
    ``exc.setting``); when the user gave that value through a flag, the message names the flag
    the user typed: ``--operating-point (detect.operating_point): ...``. Otherwise the dotted
    name stays, which is also what ``--set`` and ``--config`` files use.
    """
    text = str(exc)
    setting = getattr(exc, "setting", None)
    flags = getattr(args, _FLAG_SETTINGS_ATTR, None) or {} if args is not None else {}
    flag = flags.get(setting) if setting else None
    if not flag:
        return text
    if text.startswith(f"{setting}:"):
        return f"{flag} ({setting}):" + text[len(setting) + 1 :]
    return f"{flag} ({setting}): {text}"
