"""``sitewatch tiles``: cut aligned before/after pairs around every site."""

from __future__ import annotations

import argparse
from pathlib import Path

from sitewatch.commands._common import add_config_options, add_incident_window_option, add_site_and_raster_inputs, info, load_job_config, progress_disabled
from sitewatch.errors import UsageError

NAME = "tiles"
HELP = "cut aligned before/after tile pairs around each site"
DESCRIPTION = """\
Cut an aligned before/after pair around every site and write them for the later stages.

For each site the best before and after scene is chosen (full coverage first, then the latest
before / earliest after acquisition), a square window of tiles.chip_size_m metres (wider for
radius_m or footprints) is resampled to tiles.chip_px pixels on one local metric grid shared by
both epochs, the after chip is co-registered to the before chip and radiometrically normalised,
and its quality decides the status (ok, or cannot_assess with a reason).

Output folder:
  pairs/<site>.npz   image float16 (2, C, H, W) in [0, 1], valid (2, H, W), meta JSON
  chips/<site>_before.png, <site>_after.png, <site>_pair.png
  index.csv          one row per input site (outside coverage and invalid rows included)
  config.yaml        the effective config

example:
  sitewatch tiles --sites sites.csv --before pre/ --after 'post/*.tif' --out tiles_out
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_site_and_raster_inputs(parser)
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="write into a folder that already holds an index.csv")
    parser.add_argument("--no-chips", action="store_true", help="do not write PNG chips")
    g = parser.add_argument_group("tiles settings (override the config file)")
    g.add_argument("--chip-size-m", type=float, metavar="M", help="window side on the ground for a point site (metres)")
    g.add_argument("--chip-px", type=int, metavar="PX", help="chip side in pixels")
    g.add_argument("--normalisation", choices=("histogram", "standardise", "none"), help="radiometric normalisation")
    add_incident_window_option(g)
    g.add_argument("--no-coregister", action="store_true", help="do not estimate or apply the after-vs-before shift")
    add_config_options(parser)


def run(args: argparse.Namespace) -> int:
    from sitewatch.config import write_config
    from sitewatch.jobs import TilesJob
    from tiles.catalog import RasterCatalog, check_epochs
    from tiles.output import write_tiles_folder
    from tiles.sites import read_sites

    job = load_job_config(
        TilesJob,
        args,
        {
            "tiles.chip_size_m": args.chip_size_m,
            "tiles.chip_px": args.chip_px,
            "tiles.normalisation": args.normalisation,
            "tiles.coregister": False if args.no_coregister else None,
            "tiles.incident_window": ("--incident-window", args.incident_window),
        },
    )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder; choose a new folder")
    if (out / "index.csv").exists() and not args.overwrite:
        raise UsageError(f"--out {out}: already holds an index.csv; choose a new folder or pass --overwrite")
    sites = read_sites(args.sites)
    before = RasterCatalog.from_paths(args.before, epoch="before")
    after = RasterCatalog.from_paths(args.after, epoch="after")
    check_epochs(before, after)
    info(
        f"{len(sites)} sites; {len(before.scenes)} before and {len(after.scenes)} after scenes"
        + (f" ({len(before.skipped) + len(after.skipped)} inputs skipped, see warnings)" if before.skipped or after.skipped else ""),
        args,
    )
    write_config(job, out)
    summary = write_tiles_folder(
        sites, before, after, out, job.tiles, chips=not args.no_chips,
        progress=False if progress_disabled(args) else None,
    )
    parts = ", ".join(f"{k}: {v}" for k, v in sorted(summary.by_status.items()))
    info(f"wrote {summary.n_sites} rows to {summary.index} ({parts})", args)
    return 0
