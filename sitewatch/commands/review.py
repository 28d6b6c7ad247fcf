"""``sitewatch review``: the reviewers' web app, and ``sitewatch review export``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sitewatch.commands._common import add_config_options, info, load_job_config, record_flag
from sitewatch.errors import UsageError

NAME = "review"
HELP = "verify a run's flagged sites in the browser; export the verdicts as training labels"
DESCRIPTION = """\
Serve a run folder (written by `sitewatch detect`) to reviewers in the browser:

  sitewatch review RUN                      # http://127.0.0.1:8765/queue
  sitewatch review RUN --host 0.0.0.0       # reachable from other machines: needs the access
                                            # token it prints (or give --token, 128 bits or more)
  sitewatch review RUN --token T --tls      # for a team, behind a TLS reverse proxy (README)
  sitewatch review export RUN --out DATASET # verdicts -> labelled dataset for `sitewatch train`
  sitewatch review RUN2 --verdicts-from RUN   # after re-running detect with a retrained model:
                                            # carry the verdicts over, review what is left

Verdicts are stored in RUN/review.sqlite (append-only, with an audit log). Reviewers type their
name once; every verdict records who and when. Keyboard: 1-5 / 0 verdicts, n note, v swipe or
flicker, h heatmap, s site marker, z context view, j/k next/previous, o map of the run, ? all
shortcuts.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run",
        metavar="RUN",
        help="run folder to review; or the word `export` followed by RUN to export its verdicts",
    )
    parser.add_argument("export_run", metavar="EXPORT_RUN", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--out", metavar="DATASET", help="with `export`: dataset folder to write")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1; others need a token)")
    parser.add_argument("--port", type=int, help="TCP port (default 8765; 0 picks a free one)")
    parser.add_argument(
        "--verdicts-from",
        metavar="OLD_RUN",
        help="first copy the verdicts of an earlier run of the same sites (e.g. before re-running detect with a retrained model)",
    )
    parser.add_argument(
        "--token",
        help="access token for a non-loopback --host (default: $SITEWATCH_REVIEW_TOKEN or a generated one); "
        "at least 128 random bits: 22+ characters of A-Z a-z 0-9 - _, or 32+ hex digits",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        default=None,
        help="served through a TLS reverse proxy (Caddy, nginx): mark every cookie Secure (review.behind_tls)",
    )
    add_config_options(parser)


def _export(run_dir: Path, args: argparse.Namespace) -> int:
    from review.export import export_dataset_summary

    if not args.out:
        raise UsageError("review export: --out DATASET is required (the folder to write the labelled dataset to)")
    summary = export_dataset_summary(run_dir, Path(args.out))
    counts = ", ".join(f"{k} {v}" for k, v in summary.by_damage.items() if v)
    info(
        f"exported {summary.exported} reviewed site(s) to {summary.out_dir} ({counts or 'none'}); "
        f"left out: {summary.skipped_cannot_assess} cannot_assess, {summary.skipped_undecided} undecided",
        args,
    )
    if summary.exported:
        info(f"train on it: sitewatch train --data {summary.out_dir} --out MODEL_DIR --from default", args)
    else:
        # an empty dataset cannot train anything: say what to do instead of suggesting `train`
        info(
            f"nothing to train on yet: no site of {run_dir} has a decided verdict; review sites first "
            f"(sitewatch review {run_dir}), then export again",
            args,
        )
    return 0


def _import(old_run: Path, new_run: Path, args: argparse.Namespace) -> None:
    from review.runfolder import RunFolder
    from review.store import DB_NAME, VerdictStore

    if not (old_run / DB_NAME).is_file():
        raise UsageError(f"--verdicts-from {old_run}: no {DB_NAME} there; give a run folder that was reviewed")
    run = RunFolder(new_run)
    n = VerdictStore.for_run(run.path).import_from(VerdictStore.for_run(old_run), set(run.by_id))
    info(f"imported {n} verdict(s) from {old_run}", args)


def run(args: argparse.Namespace) -> int:
    from sitewatch.jobs import ReviewJob

    if args.run == "export" and args.export_run:
        return _export(Path(args.export_run), args)
    if args.export_run:
        raise UsageError(f"unexpected argument {args.export_run!r}: use `sitewatch review RUN` or `sitewatch review export RUN --out DATASET`")
    if args.run == "export" and not Path("export").is_dir():
        raise UsageError("review export: give the run folder, e.g. `sitewatch review export RUN --out DATASET`")
    if args.out:
        raise UsageError("--out is only for `sitewatch review export RUN --out DATASET`")
    job = load_job_config(
        ReviewJob, args, {"review.host": ("--host", args.host), "review.port": ("--port", args.port), "review.behind_tls": ("--tls", args.tls)}
    )
    from review.security import check_token
    from review.server import TOKEN_ENV, serve

    if args.token:
        record_flag(args, "review.token", "--token")
    elif os.environ.get(TOKEN_ENV):
        record_flag(args, "review.token", f"${TOKEN_ENV}")
    check_token(args.token or os.environ.get(TOKEN_ENV) or None)  # before anything is imported or served
    if args.verdicts_from:
        _import(Path(args.verdicts_from), Path(args.run), args)
    serve(Path(args.run), job.review, token=args.token, announce=lambda msg: print(msg, flush=True))
    return 0
