"""Benchmark of facilities scored part by part (issue 15), side by side in one run.

Generates hospital and school compounds (:mod:`tiles.synth.compounds`): ``intact``, one block
destroyed alone (``isolated``) and one block destroyed with most of the neighbourhood (``area``),
then runs ``run_detect`` on the same scenes three times:

1. ``window``: ``detect.parts=off, detect.context=off`` (one window of ``2 * extent *
   tiles.radius_scale`` resampled to 128 px, as before issue 15);
2. ``parts``: ``detect.parts=auto, detect.context=off``;
3. ``parts+context``: both on (the default for facilities).

It prints the site-level ROC AUC of ``isolated`` (and ``area``) against ``intact`` for the single
window and for the parts, how often ``targeted`` is right (``true`` for isolated, ``false`` for
area damage), and sites/s of scoring for each configuration. Example (README figures)::

    python benchmarks/bench_parts.py --per-case 8 --json /tmp/bench_parts.json

The context ring and the scene size are the defaults (``tiles.parts.context_inner_m`` 100,
``context_outer_m`` 300, scenes of 920 m); ``--ring INNER,OUTER --extent M`` makes it cheaper.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def roc_auc(pos: list[float], neg: list[float]) -> float:
    """Probability that a positive outscores a negative (ties count half)."""
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _read(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {r["site_id"]: r for r in csv.DictReader(fh)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from detect.config import DetectConfig
    from detect.run import run_detect
    from sitewatch.config import build_config
    from tiles.config import TilesConfig
    from tiles.synth.compounds import default_cases, write_compound_cases

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_parts_"))
    data = work / "data"
    t0 = time.perf_counter()
    if not (data / "truth.csv").exists():
        write_compound_cases(data, default_cases(args.per_case, seed=args.seed), extent_m=args.extent, nuisance=args.nuisance)
    gen_s = time.perf_counter() - t0
    truth = _read(data / "truth.csv")
    inner, outer = (float(v) for v in args.ring.split(","))
    tiles = build_config(TilesConfig, {"parts": {"context_inner_m": inner, "context_outer_m": outer}})
    configs = {
        "window": DetectConfig(parts="off", context="off", chips_top_n=0, embeddings=False),
        "parts": DetectConfig(parts="auto", context="off", chips_top_n=0, embeddings=False),
        "parts+context": DetectConfig(parts="auto", context="auto", chips_top_n=0, embeddings=False),
    }
    results: dict[str, Any] = {"cases": len(truth), "per_case": args.per_case, "extent_m": args.extent,
                               "ring_m": [inner, outer], "generate_seconds": round(gen_s, 1), "runs": {}}
    for name, cfg in configs.items():
        out = work / f"run_{name}"
        summary = run_detect(
            data / "sites.geojson", [data / "before"], [data / "after"], out,
            tiles=tiles, detect=cfg, overwrite=True, progress=False,
        )
        rows = _read(out / "scores.csv")

        def scores(case: str) -> list[float]:
            return [float(rows[s]["score"]) for s, t in truth.items() if t["case"] == case and rows[s]["score"]]

        entry: dict[str, Any] = {
            "auc_isolated_vs_intact": roc_auc(scores("isolated"), scores("intact")),
            "auc_area_vs_intact": roc_auc(scores("area"), scores("intact")),
            "assessed": sum(r["status"] == "ok" for r in rows.values()),
            "flagged": {c: sum(rows[s]["flagged"] == "true" for s, t in truth.items() if t["case"] == c) for c in ("intact", "isolated", "area")},
            "scoring_seconds": round(summary.scoring_seconds, 2),
            "sites_per_second": round(len(rows) / max(summary.scoring_seconds, 1e-9), 3),
        }
        if name != "window":
            windows = sum(int(r.get("parts") or 0) + int(r.get("context") or 0) for r in rows.values())
            entry["windows_per_site"] = round(windows / len(rows), 1)
            hits = [s for s, t in truth.items() if t["case"] == "isolated" and rows[s].get("top_part")]
            entry["top_part_on_damaged_block"] = (
                sum(rows[s]["top_part"] in truth[s]["damaged_parts"].split(";") for s in hits) / len(hits) if hits else float("nan")
            )
        if name == "parts+context":
            judged = [(t["case"], rows[s].get("targeted", "")) for s, t in truth.items() if t["case"] in ("isolated", "area")]
            right = sum((c == "isolated" and v == "true") or (c == "area" and v == "false") for c, v in judged)
            entry["targeted_correct"] = right / len(judged)
            entry["targeted_values"] = {c: [v for cc, v in judged if cc == c] for c in ("isolated", "area")}
            entry["context_damage"] = {
                c: [rows[s]["context_damage"] for s, t in truth.items() if t["case"] == c] for c in ("intact", "isolated", "area")
            }
        results["runs"][name] = entry
    base = results["runs"]["window"]["sites_per_second"]
    for entry in results["runs"].values():
        entry["speed_vs_window"] = round(entry["sites_per_second"] / base, 3) if base else float("nan")
    if not args.work and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-case", type=int, default=8, help="compounds of each case (intact, isolated, area)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extent", type=float, default=920.0, help="scene side in metres")
    parser.add_argument("--ring", default="100,300", help="context ring INNER,OUTER metres beyond the site's edge")
    parser.add_argument("--nuisance", type=float, default=0.5, help="scales the generator's nuisance strengths")
    parser.add_argument("--work", default="", help="keep data and runs here (reused when it holds data)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", default="", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    results = run(args)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
