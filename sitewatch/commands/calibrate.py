"""``sitewatch calibrate``: refit a run's probabilities and operating points on this event's labels."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

from sitewatch.commands._common import add_config_options, info, load_job_config

NAME = "calibrate"
HELP = "refit a run's calibration and operating points on this event's verified sites"
DESCRIPTION = """\
The bundled model is calibrated on synthetic scenes; on a new event its scores can be far too
confident. Given labelled sites of this run, refit the temperature (on one stratified half) and
the screening/evidence operating points (on the other half, which also measures the reliability
with bootstrap confidence intervals), then rewrite scores.csv / scores.geojson (new score, rank
and flagged; the raw logit kept in the 'logit' column), report.html, calibration.txt,
calibration.json and reliability.png, and record in manifest.json where the calibration came from.
The policy (targets, minimum sample sizes, the split) is the 'calibration' section of --config
(configs/calibrate.yaml). With fewer than calibration.trust_positives (10) damaged sites in the
half that chooses the operating points, screening is never made stricter than the run's previous
screening threshold (same logit on the new temperature): a small random sample of a rare-damage
event cannot drop a site the run flagged before. Which rule applied is printed and recorded.

Labels: --labels FILE.csv with site_id and damage columns (e.g. from 'sitewatch review export'),
or, without --labels, the run's own review store (review.sqlite): the decided verdicts on the
review app's random validation sample (a sample the score did not choose, so the fit is not
biased); --all-verdicts uses every decided verdict instead (biased toward what reviewers were
shown first: the top of the list and the uncertain ones).

examples:
  sitewatch calibrate RUN --labels verified.csv
  sitewatch calibrate RUN                       # the run's verified random sample
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="a finished run folder")
    parser.add_argument("--labels", metavar="LABELS.csv", help="CSV with site_id and damage (default: the run's review store)")
    parser.add_argument("--all-verdicts", action="store_true", help="without --labels: every decided verdict, not only the random validation sample")
    parser.add_argument("--operating-point", choices=("screening", "evidence"), help="which fitted point flags sites (default: the run's)")
    add_config_options(parser)


def labels_from_review(run_dir: Path, review_config: Any, *, all_verdicts: bool) -> Any:
    """The run's decided verdicts (on the validation sample unless ``all_verdicts``) as
    :class:`detect.recalibrate.EventLabels`.

    Raises:
        InputError: no review store, or a broken verdict chain.
    """
    from detect.recalibrate import EventLabels
    from review.consensus import summarise
    from review.queue import ReviewQueues
    from review.runfolder import RunFolder
    from review.store import VerdictStore
    from sitewatch.errors import InputError
    from tiles.types import DAMAGE_CLASSES

    store_path = run_dir / "review.sqlite"
    if not store_path.is_file():
        raise InputError(
            f"{store_path}: no review store; give --labels LABELS.csv, or verify sites first with 'sitewatch review {run_dir}' "
            "(the 'validation' queue is the random sample calibration uses)"
        )
    run = RunFolder(run_dir)
    store = VerdictStore.for_run(run_dir)
    chain = store.verify_chain()
    if not chain.ok:
        raise InputError(f"{store.path}: the verdicts' hash chain is broken ({chain.problems[0]}); they are not used as labels")
    summaries = summarise(v for v in store.verdicts() if v.id <= chain.last_id)
    if all_verdicts:
        wanted = set(summaries)
        source = "review store, every decided verdict"
    else:
        wanted = set(ReviewQueues(run, store, review_config).validation_ids)
        source = f"review store, random validation sample (review.validation_size {review_config.validation_size}, seed {review_config.validation_seed})"
    damage = {sid: c.final for sid, c in summaries.items() if sid in wanted and c.final in DAMAGE_CLASSES}
    text = "".join(f"{sid},{d}\n" for sid, d in sorted(damage.items()))
    return EventLabels(
        damage=damage, source=source, path=str(store.path),
        sha256=hashlib.sha256(("site_id,damage\n" + text).encode("utf-8")).hexdigest(),
        detail={"verdict_chain_head": chain.head, "last_verdict_id": chain.last_id, "sample_sites": len(wanted)},
    )


def _validation_url(review: Any) -> str:
    """Where ``sitewatch review`` serves the validation queue with these ``review.ReviewConfig`` settings."""
    path = "/queue?view=validation"
    if not review.port:  # 0: the app picks a free port and prints its address
        return f"the address sitewatch review prints, {path}"
    host = f"[{review.host}]" if ":" in review.host else review.host
    return f"http://{host}:{review.port}{path}"


def run(args: argparse.Namespace) -> int:
    from detect.recalibrate import read_labels_csv, recalibrate_run
    from detect.runfolder import require_run_folder
    from sitewatch.errors import InputError
    from sitewatch.jobs import CalibrateJob

    job = load_job_config(CalibrateJob, args)
    run_dir = require_run_folder(args.run_dir)
    labels = read_labels_csv(args.labels) if args.labels else labels_from_review(run_dir, job.review, all_verdicts=args.all_verdicts)
    try:
        result = recalibrate_run(run_dir, labels, job.calibration, operating_point=args.operating_point)
    except InputError as exc:
        if args.labels or not (exc.setting or "").startswith("calibration.min_"):
            raise
        # too few verdicts in the store: say where a reviewer gives them
        where = "any queue" if args.all_verdicts else f"the 'validation' queue ({_validation_url(job.review)})"
        raise InputError(
            f"{exc}; give verdicts in {where} of 'sitewatch review {run_dir}', or pass --labels LABELS.csv",
            setting=exc.setting,
        ) from None
    for line in result.lines():
        info(line, args)
    info(f"wrote {run_dir}/scores.csv, report.html, calibration.txt, reliability.png; manifest.json sha256 {result.manifest_sha256}", args)
    # as detect does (also with -q): the run's new digest, to record in place of the old one
    print(f"run digest: sha256:{result.manifest_sha256}", flush=True)
    return 0
