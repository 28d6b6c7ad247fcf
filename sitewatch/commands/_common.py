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


def add_site_and_raster_inputs(group: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--sites FILE`` and repeatable ``--before PATH...`` / ``--after PATH...`` (tiles, detect)."""
    group.add_argument("--sites", required=True, metavar="FILE", help="sites CSV (site_id, lon, lat, ...) or GeoJSON")
    for epoch in ("before", "after"):
        group.add_argument(
            f"--{epoch}", required=True, nargs="+", action="extend", metavar="PATH",
            help=f"{epoch} rasters: GeoTIFF files, folders or globs (repeatable)",
        )


def load_job_config(cls: type[T], args: argparse.Namespace, flags: Mapping[str, Any] | None = None) -> T:
    """Defaults < ``--config`` file < ``--set`` < the command's own flags (``None`` = not given)."""
    overrides: dict[str, Any] = dict(parse_set_overrides(getattr(args, "set", None)))
    for k, v in (flags or {}).items():
        if v is not None:
            overrides[k] = v
    return load_config(cls, getattr(args, "config", None), overrides)


def progress_disabled(args: argparse.Namespace) -> bool | None:
    """The value for tqdm's ``disable``: True with -q, else None (automatic: on for terminals)."""
    return True if getattr(args, "quiet", 0) else None


def info(msg: str, args: argparse.Namespace) -> None:
    """User-facing output on stdout, silenced by -q."""
    if not getattr(args, "quiet", 0):
        print(msg, file=sys.stdout, flush=True)

