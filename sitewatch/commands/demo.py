"""``sitewatch demo``: generate a synthetic scene, detect with the bundled model, check the ranking."""

from __future__ import annotations

import argparse
import math

from sitewatch.commands._common import add_config_options, info, load_job_config, progress_disabled

NAME = "demo"
HELP = "run the whole job on a generated scene (no data needed) and check it against the truth"
DESCRIPTION = """\
Generate a synthetic before/after scene with a few hundred sites (some of them destroyed), run
`sitewatch detect` on it with the bundled model, print the top of the ranked list and how well it
matches the scene's known truth (ROC AUC, precision among the top k), and say where the report is
and how to open the review app. Takes a minute or two on a laptop; needs no data or network.

examples:
  sitewatch demo
  sitewatch demo --out /tmp/demo --sites 500
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="sitewatch-demo", metavar="DIR", help="demo folder (default: ./sitewatch-demo)")
    parser.add_argument("--sites", type=int, default=300, metavar="N", help="sites in the synthetic scene (default 300)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="random seed of the scene (default 0)")
    parser.add_argument("--model", default="default", metavar="DIR", help="model folder (default: the bundled model)")
    add_config_options(parser)


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def run(args: argparse.Namespace) -> int:
    from detect.demo import run_demo
    from sitewatch.errors import UsageError
    from sitewatch.jobs import DetectJob

    if args.sites < 10:
        raise UsageError(f"--sites {args.sites}: use at least 10 sites")
    job = load_job_config(DetectJob, args)
    disabled = progress_disabled(args)
    result = run_demo(
        args.out, sites=args.sites, seed=args.seed, model=args.model, tiles=job.tiles, detect=job.detect, progress=None if disabled is None else False
    )
    s = result.summary
    how = "reused: same --sites and --seed" if result.scene_reused else "generated"
    info(f"\nsynthetic scene: {result.scene_dir} ({s.sites} sites, {how}; truth in sites.csv 'damage')", args)
    info(f"scored {s.ok} sites ({s.cannot_assess} cannot be assessed) in {s.seconds:.1f} s; {s.flagged} flagged", args)
    info("\ntop of the ranked list:", args)
    info(f"  {'rank':>4}  {'site_id':<16} {'score':>8}  truth", args)
    for row in result.top_rows:
        score = "" if row.score is None else f"{row.score:.6f}"
        info(f"  {row.rank or '':>4}  {row.site_id:<16} {score:>8}  {row.damage or ''}", args)
    info(
        f"\nagreement with the truth ({result.positives} damaged vs {result.negatives} intact sites): "
        f"ROC AUC {_fmt(result.auc)}, precision among the top {result.k}: {_fmt(result.precision_at_k)}",
        args,
    )
    info(f"\nreport:  {s.report_html}  (open it in a browser)", args)
    info(f"review:  sitewatch review {s.run_dir}", args)
    info(f"verify:  sitewatch verify {s.run_dir}", args)
    return 0
