"""``sitewatch detect``: score every site and write a ranked, evidence-grade run folder."""

from __future__ import annotations

import argparse

from sitewatch.commands._common import add_config_options, add_incident_window_option, add_site_and_raster_inputs, info, load_job_config, progress_disabled

NAME = "detect"
HELP = "score sites in before/after imagery and write a ranked run folder"
DESCRIPTION = """\
Cut a before/after pair around every site, score it with the change-detection model and write a
run folder: scores.csv (one row per site, highest score first), scores.geojson, chips/,
report.html (open it in a browser), manifest.json (SHA-256 of every input, the model, the config
and every output; check it later with `sitewatch verify RUN`), config.yaml and embeddings.npz.

`score` is a calibrated probability of severe damage (xBD major-damage or destroyed). `flagged`
marks scores at or above the operating point: `screening` (the model's high-recall threshold, for
a first pass) or `evidence` (its high-precision threshold), or a probability such as 0.7.

Interrupted runs resume: run the same command again and only the missing batches are scored.
A run folder holding a different run is refused (pick a new --out, or pass --overwrite).

At the end it prints the run digest (`run digest: sha256:<64 hex>`, the SHA-256 of manifest.json):
record it outside the folder (case log, e-mail, a timestamping service) and check the folder
later with `sitewatch verify RUN --digest sha256:HEX`. With --sign KEY the manifest is also signed
(Ed25519, manifest.json.sig; make a key with `sitewatch keygen KEY`); anyone with KEY.pub checks it
with `sitewatch verify RUN --public-key KEY.pub`.

examples:
  sitewatch detect --sites sites.csv --before before/ --after after/ --out RUN
  sitewatch detect --sites s.geojson --before 'b/*.tif' --after a.tif --out RUN --operating-point evidence
  sitewatch detect --sites sites.csv --series series/ --out RUN   # an image series: bracket the change
  sitewatch detect ... --workers 4                  # a local Dask cluster
  sitewatch detect ... --dask tcp://scheduler:8786  # an existing Dask cluster
  sitewatch detect ... --sign ~/.sitewatch/alice.key # sign the run (Ed25519)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("inputs and output")
    add_site_and_raster_inputs(g, series=True)
    g.add_argument("--out", required=True, metavar="RUN", help="run folder to write (resumed if interrupted)")
    g.add_argument("--model", default="default", metavar="DIR", help="model folder (default: the bundled model)")
    g.add_argument("--overwrite", action="store_true", help="discard an existing run in --out")
    g.add_argument(
        "--sign", metavar="KEY", help="sign manifest.json with this Ed25519 private key (PEM or OpenSSH), into manifest.json.sig"
    )
    s = parser.add_argument_group("scoring")
    s.add_argument(
        "--operating-point",
        metavar="NAME|P",
        help="'screening' (high recall), 'evidence' (high precision) or a probability (default from config)",
    )
    add_incident_window_option(s)
    s.add_argument("--batch-size", type=int, metavar="N", help="sites per batch (detect.batch_size)")
    s.add_argument("--chips", metavar="N|all", help="write chips for the top N sites, or 'all' (detect.chips_top_n)")
    s.add_argument("--device", choices=("auto", "cpu", "cuda"), help="inference device (detect.device)")
    d = parser.add_argument_group("scaling out")
    x = d.add_mutually_exclusive_group()
    x.add_argument("--workers", type=int, metavar="N", help="score on a local Dask cluster of N worker processes")
    x.add_argument("--dask", metavar="tcp://HOST:PORT", help="score on an existing Dask cluster")
    add_config_options(parser)


def _chips_flag(value: str | None) -> int | None:
    from sitewatch.errors import UsageError

    if value is None:
        return None
    if value.strip().lower() == "all":
        return -1
    try:
        n = int(value)
    except ValueError:
        raise UsageError(f"--chips {value}: give a number of top sites or 'all'") from None
    if n < 0:
        raise UsageError(f"--chips {value}: give 0 or more, or 'all'")
    return n


def run(args: argparse.Namespace) -> int:
    from detect.run import mark_phase, run_detect

    mark_phase("cli")
    from sitewatch.jobs import DetectJob

    job = load_job_config(
        DetectJob,
        args,
        {
            "detect.operating_point": ("--operating-point", args.operating_point),
            "detect.batch_size": ("--batch-size", args.batch_size),
            "detect.chips_top_n": ("--chips", _chips_flag(args.chips)),
            "detect.device": ("--device", args.device),
            "tiles.incident_window": ("--incident-window", args.incident_window),
        },
    )
    from sitewatch.errors import UsageError

    if args.series and (args.before or args.after):
        raise UsageError("--series: give either --series or --before and --after, not both")
    if not args.series and not (args.before and args.after):
        raise UsageError("give --before and --after (two epochs), or --series (an image series)")
    signing_key = _signing_key(args.sign)  # before the run: a bad key fails in seconds, not after hours
    disabled = progress_disabled(args)
    try:
        summary = run_detect(
            args.sites,
            args.before or [],
            args.after or [],
            args.out,
            tiles=job.tiles,
            detect=job.detect,
            model=args.model,
            overwrite=args.overwrite,
            workers=args.workers,
            dask_address=args.dask,
            progress=None if disabled is None else False,
            series=args.series,
        )
    except KeyboardInterrupt:
        print(f"sitewatch detect: scored batches are kept in {args.out}; run the same command again to resume")
        raise
    op = summary.operating_point
    info(
        f"scored {summary.ok} of {summary.sites} sites ({summary.cannot_assess} cannot be assessed) in "
        f"{summary.seconds:.1f} s ({summary.sites / max(summary.seconds, 1e-9):.1f} sites/s); {summary.flagged} flagged at {op.name} (score >= {op.threshold:.3f})"
        + (f"; resumed {summary.batches_resumed} of {summary.batches_total} batches" if summary.batches_resumed else ""),
        args,
    )
    if summary.cannot_assess:
        _say_why_unassessed(summary, args)
    info(f"ranked list: {summary.scores_csv}", args)
    info(f"report:      {summary.report_html} (open it in a browser)", args)
    info(f"review:      sitewatch review {summary.run_dir}", args)
    if signing_key is not None:
        from detect.signing import key_fingerprint, sign_run

        sig = sign_run(summary.run_dir, signing_key)
        info(f"signed:      {sig} (key {key_fingerprint(signing_key.public_key())})", args)
    # always printed (also with -q): the one line to record outside the folder
    print(f"run digest: sha256:{summary.run_digest}", flush=True)
    return 0


def _say_why_unassessed(summary, args: argparse.Namespace) -> None:  # noqa: ANN001 - detect.run.RunSummary
    """Why sites could not be assessed, counted per reason; when none could, the first one's detail
    (it says what to check: coverage, swapped lon/lat, the incident window, ...)."""
    from detect.runfolder import unassessed_reasons

    try:
        reasons = unassessed_reasons(summary.scores_csv)
    except (OSError, UnicodeDecodeError, ValueError):  # the counts above stand; this is a hint only
        return
    if not reasons:
        return
    counts = ", ".join(f"{reason} {n}" for reason, (n, _, _) in reasons.items())
    info(f"cannot be assessed: {counts} (per site: the reason and detail columns of scores.csv)", args)
    if summary.ok == 0:
        reason, (_, site, detail) = next(iter(reasons.items()))
        info(f"no site could be assessed; e.g. {site} ({reason}): {detail}", args)


def _signing_key(path: str | None):
    """The ``--sign`` key, asking for its passphrase on a terminal when it has one."""
    if path is None:
        return None
    import getpass
    import sys

    from detect.signing import EncryptedKeyError, load_private_key
    from sitewatch.errors import InputError, UsageError

    try:
        try:
            return load_private_key(path)
        except EncryptedKeyError:
            if not sys.stdin.isatty():
                raise
            return load_private_key(path, getpass.getpass(f"passphrase for {path}: ").encode("utf-8"))
    except InputError as exc:
        raise UsageError(f"--sign {path}: {exc}") from None
