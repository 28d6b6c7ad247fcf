"""``sitewatch synth``: generate a labelled synthetic before/after dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from sitewatch.commands._common import add_config_options, info, load_job_config, progress_disabled

NAME = "synth"
HELP = "generate a labelled synthetic before/after dataset (GeoTIFFs + sites.csv)"
DESCRIPTION = """\
Generate synthetic satellite scenes of towns before and after an event, with damaged buildings
labelled on the xBD scale, in the project's own input format:

  DIR/before/*.tif   DIR/after/*.tif   DIR/sites.csv   DIR/synth.yaml

sites.csv has site_id, lon, lat, kind, radius_m, damage (and damage_style, region, building_m).
The same --seed always gives the same files. Nuisance strengths (sun, season, colour, haze,
blur, noise, misregistration, off-nadir, vehicles, construction, jpeg, clouds, nodata) are set
in the synth section of --config or with --set synth.KNOB=VALUE (0..1).

With --series K, K dated scenes per region are written to DIR/series/ instead (damage appears
between two known dates; sites.csv adds damage_date, damage_stages, last_intact_date and
first_damaged_date; one cloudy and one misregistered date per region; settings in the series
section: --set series.cloud_cover=0.6 ...). Score it with sitewatch detect --series DIR/series.

examples:
  sitewatch synth --out demo --sites 200 --seed 1 --preview
  sitewatch synth --out ser --sites 60 --size-px 1024 --series 5
  sitewatch synth --out ds --sites 2000 --after-crs EPSG:4326 --after-gsd 0.6 --scenes 2
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tiles.synth.config import SynthConfig  # a light dataclass; the generator loads in run()

    d = SynthConfig()
    parser.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write")
    parser.add_argument("--sites", type=int, metavar="N", help=f"number of labelled sites (default {d.sites})")
    parser.add_argument("--seed", type=int, metavar="S", help=f"random seed (default {d.seed})")
    parser.add_argument("--size-px", type=int, metavar="PX", help=f"side of one region in pixels (default {d.size_px})")
    parser.add_argument("--gsd", type=float, metavar="M", help=f"before pixel size in metres (default {d.gsd_m})")
    parser.add_argument("--crs", metavar="CRS", help=f"projected CRS of the before rasters (default {d.crs})")
    parser.add_argument("--after-crs", metavar="CRS", help="CRS of the after rasters (default: same as --crs)")
    parser.add_argument("--after-gsd", type=float, metavar="M", help="after pixel size in metres (default: same as --gsd)")
    parser.add_argument("--scenes", type=int, metavar="K", help="split each region into K overlapping scene files per epoch")
    parser.add_argument("--series", type=int, metavar="K", help="write K dated scenes per region to DIR/series/ (an image series, K >= 3)")
    parser.add_argument("--preview", action="store_true", help="also write DIR/gallery.png: before/after chips by damage class")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in DIR")
    add_config_options(parser)


def run(args: argparse.Namespace) -> int:
    from sitewatch.errors import UsageError
    from sitewatch.jobs import SynthJob
    from tiles.synth import DatasetExistsError, generate_dataset

    for flag, value in (("--sites", args.sites), ("--size-px", args.size_px), ("--scenes", args.scenes)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value}: must be at least 1")
    job = load_job_config(
        SynthJob,
        args,
        {
            "synth.sites": ("--sites", args.sites),
            "synth.seed": ("--seed", args.seed),
            "synth.size_px": ("--size-px", args.size_px),
            "synth.gsd_m": ("--gsd", args.gsd),
            "synth.crs": ("--crs", args.crs),
            "synth.after_crs": ("--after-crs", args.after_crs),
            "synth.after_gsd_m": ("--after-gsd", args.after_gsd),
            "synth.scenes": ("--scenes", args.scenes),
            "series.dates": ("--series", args.series),
        },
    )
    quiet = progress_disabled(args)
    if job.series.dates:
        from tiles.synth.series import generate_series

        if args.preview:
            raise UsageError("--preview: not available with --series")
        ser = generate_series(Path(args.out), job.synth, job.series, overwrite=args.overwrite, progress=None if quiet is None else False)
        info(
            f"wrote {ser.sites} sites ({ser.damaged} damaged between two known dates) in {ser.regions} region(s), "
            f"{len(ser.files)} dated rasters ({job.series.dates} per region) to {ser.out / 'series'} in {ser.seconds:.1f} s",
            args,
        )
        return 0
    try:
        summary = generate_dataset(
            Path(args.out), job.synth, progress=None if quiet is None else False, overwrite=args.overwrite, gallery=args.preview
        )
    except DatasetExistsError as exc:
        raise UsageError(f"--out {args.out}: already holds a dataset (sites.csv or rasters); choose a new folder or pass --overwrite") from exc
    counts = ", ".join(f"{k} {v}" for k, v in summary.damage_counts.items())
    info(
        f"wrote {summary.sites} sites ({counts}) in {summary.regions} region(s), "
        f"{len(summary.before_files)} before + {len(summary.after_files)} after rasters to {summary.out} "
        f"in {summary.seconds:.1f} s ({summary.pixels_per_second / 1e6:.1f} Mpx/s)",
        args,
    )
    if summary.gallery is not None:
        info(f"gallery: {summary.gallery}", args)
    return 0
