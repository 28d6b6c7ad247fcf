"""``sitewatch dossier``: per-site evidence pages (HTML + one PDF) with a manifest."""

from __future__ import annotations

import argparse

from sitewatch.commands._common import add_config_options, info, load_job_config

NAME = "dossier"
HELP = "write per-site evidence pages (HTML and one PDF) of a run's flagged, verified or chosen sites"
DESCRIPTION = """\
Write one page per site that an investigator can attach to a report: the before and after chips at
native resolution and the context view with the site marked, acquisition dates and times, sensor,
catalogue id, off-nadir angle, native resolution, co-registration shift and quality flags; the
score, rank, operating point and calibration; every reviewer verdict and the adjudication; SHA-256
of the source scenes, the chips and the model; coordinates (decimal and DMS); the imagery credit;
and the run digest (SHA-256 of the run's manifest.json). As self-contained HTML pages plus one
dossier.pdf (a cover page, then one page per site), with a manifest.json of every file's SHA-256.

examples:
  sitewatch dossier RUN --flagged --out DOSSIER          # the sites detect flagged
  sitewatch dossier RUN --verified --out DOSSIER         # reviewers decided major-damage/destroyed
  sitewatch dossier RUN --sites b11 clinic --out DOSSIER # chosen sites, in this order
  sitewatch verify DOSSIER                               # re-hash the dossier's files
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="a finished run folder (written by `sitewatch detect`)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--flagged", action="store_true", help="the sites detect flagged at the run's operating point")
    which.add_argument("--verified", action="store_true",
                       help="the sites whose reviewers' decision is major-damage or destroyed (RUN/review.sqlite)")
    which.add_argument("--sites", nargs="+", metavar="ID", help="these site ids, in this order")
    parser.add_argument("--out", required=True, metavar="DIR", help="the dossier folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier dossier in --out")
    add_config_options(parser)


def run(args: argparse.Namespace) -> int:
    from review.dossier.build import write_dossier
    from sitewatch.jobs import DossierJob

    job = load_job_config(DossierJob, args)
    selection = "flagged" if args.flagged else "verified" if args.verified else "sites"
    summary = write_dossier(
        args.run_dir, args.out, selection=selection, site_ids=args.sites or (), review=job.review,
        config=job.dossier, overwrite=args.overwrite,
    )
    info(f"dossier of {len(summary.sites)} site(s) in {summary.out_dir}: index.html, dossier.pdf "
         f"({summary.pdf_pages} pages), {summary.files} files listed in manifest.json", args)
    info(f"run digest {summary.run_digest}; dossier manifest sha256 {summary.manifest_sha256}", args)
    info(f"check it: sitewatch verify {summary.out_dir}", args)
    return 0
