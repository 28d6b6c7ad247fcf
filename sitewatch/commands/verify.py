"""``sitewatch verify``: re-hash a run folder against its manifest."""

from __future__ import annotations

import argparse

from sitewatch.commands._common import info

NAME = "verify"
HELP = "check a run folder (outputs, inputs, model) or a dossier folder against its manifest"
DESCRIPTION = """\
Re-hash every output file of a run folder, and the input rasters, sites file and model files at
the paths recorded in its manifest.json, and report every difference (changed, missing, unreadable
or added files). Exit code 0 when everything matches, 1 when anything differs.

A dossier folder (`sitewatch dossier --out DIR`) is recognised by its manifest and checked too:
every file's SHA-256, files added, and that the run digest it quotes is still the run's.

examples:
  sitewatch verify RUN
  sitewatch verify DOSSIER
  sitewatch verify RUN --outputs-only      # the inputs are not on this machine
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="a finished run folder")
    parser.add_argument(
        "--outputs-only", action="store_true", help="check only the run folder's files, not the inputs and model"
    )


def _verify_dossier(args: argparse.Namespace) -> int:
    from review.dossier.verify import verify_dossier

    report = verify_dossier(args.run_dir, check_run=not args.outputs_only)
    for finding in report.findings:
        print(finding.describe())
    if report.ok:
        run_note = "run manifest re-hashed: digest matches" if report.run_checked else "run folder not here: digest not re-checked"
        info(f"verified dossier: {report.checked} files match {args.run_dir}/manifest.json "
             f"(sha256 {report.manifest_sha256}); run digest {report.run_digest} ({run_note})", args)
        return 0
    print(f"{len(report.findings)} difference(s) from {args.run_dir}/manifest.json; this dossier no longer matches what was written")
    return 1


def run(args: argparse.Namespace) -> int:
    from review.dossier.verify import is_dossier

    if is_dossier(args.run_dir):  # a dossier folder (sitewatch dossier) carries its own manifest kind
        return _verify_dossier(args)
    from detect.provenance import verify_run

    report = verify_run(args.run_dir, check_inputs=not args.outputs_only)
    for diff in report.differences:
        print(diff.describe())
    if report.ok:
        info(f"verified: {report.checked} files match {args.run_dir}/manifest.json (sha256 {report.manifest_sha256})", args)
        return 0
    print(
        f"{len(report.differences)} difference(s) from {args.run_dir}/manifest.json; "
        "this run folder no longer matches what the run produced"
    )
    return 1
