"""How many sites get each caution, and is the model worse on them? (detect.caution)

For every labelled real set (the sets of ``bench_generalisation.py``, plus ``--data``),
``sitewatch detect``'s own code (``detect.run.run_detect`` with the default settings, cautions on)
scores the set; the run's ``scores.csv`` is joined to the labels (major-damage/destroyed vs
no-damage). Printed per set: the sites with each caution reason and, for the sites with and
without a caution, ROC AUC, the share of intact sites flagged and the recall at the run's
operating point, and the error rate (flagged intact + missed damaged over all).

The real sets hold plain GeoTIFFs of about 0.5 m on both epochs (no STAC view angles), inside
the bundled model's envelope, so no caution fires there by design. ``--coarsen-after F`` adds,
for each set, a variant whose after rasters are the same real imagery block-averaged by ``F``
(0.5 m -> 1.0 m for ``F = 2``; written under ``--work``, never into the repository): the pairs a
``gsd_outside_training`` caution is meant for.

    python benchmarks/bench_caution.py [--model default] [--sets NAME,...] [--data NAME=FOLDER[:LABELS.csv]]
        [--coarsen-after 2] [--threads 1] [--work DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_generalisation as bg  # noqa: E402


def coarsen_rasters(src: Path, dst: Path, factor: int) -> Path:
    """Block-average every raster of ``src`` by ``factor`` into ``dst`` (same CRS, tags; GSD x factor)."""
    import rasterio
    from rasterio.transform import Affine

    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in src.iterdir() if p.is_file()):
        out = dst / path.name
        if out.is_file():
            continue
        with rasterio.open(path) as ds:
            data = ds.read().astype(np.float64)
            c, h, w = data.shape
            h2, w2 = h // factor, w // factor
            small = data[:, : h2 * factor, : w2 * factor].reshape(c, h2, factor, w2, factor).mean(axis=(2, 4))
            profile = {"driver": "GTiff", "width": w2, "height": h2, "count": c, "dtype": ds.dtypes[0], "crs": ds.crs,
                       "transform": ds.transform @ Affine.scale(factor), "nodata": ds.nodata}
            tags = ds.tags()
        tmp = out.with_suffix(".tmp.tif")
        with rasterio.open(tmp, "w", **profile) as o:
            o.write(np.clip(np.rint(small), 0, 255).astype(profile["dtype"]))
            o.update_tags(**tags)
        os.replace(tmp, out)
    return dst


def coarsened_set(folder: Path, work: Path, factor: int) -> Path:
    """A copy of the materialised set ``folder`` whose after rasters are coarsened by ``factor``."""
    out = work / "sets" / f"{folder.name}-after-x{factor}"
    (out / "before").mkdir(parents=True, exist_ok=True)
    for src in sorted((folder / "before").iterdir()):
        link = out / "before" / src.name
        if not link.exists():
            link.symlink_to(src.resolve())
    coarsen_rasters(folder / "after", out / "after", factor)
    text = (folder / "sites.csv").read_text(encoding="utf-8")
    if not (out / "sites.csv").is_file() or (out / "sites.csv").read_text(encoding="utf-8") != text:
        (out / "sites.csv").write_text(text, encoding="utf-8")
    return out


def group_figures(y: np.ndarray, p: np.ndarray, flagged: np.ndarray) -> dict[str, Any]:
    """n, positives, AUC, intact flagged, recall and error rate of one group of sites."""
    from train.metrics import roc_auc

    out: dict[str, Any] = {"n": int(y.size), "positives": int(y.sum())}
    if y.size == 0:
        return out
    fa, rec = bg.flag_figures(y, flagged)
    out.update(
        auc=roc_auc(y, p) if 0 < y.sum() < y.size else float("nan"),
        false_alarm=fa, recall=rec, error_rate=float(np.mean(flagged != (y == 1))),
    )
    return out


def measure(name: str, folder: Path, model: str, work: Path, threads: int) -> dict[str, Any]:
    """Detect on ``folder`` and split the labelled, assessed sites by caution."""
    from detect.caution import reason_name, split_caution
    from detect.config import DetectConfig
    from detect.run import run_detect
    from detect.runfolder import read_scores
    from tiles.config import TilesConfig
    from tiles.types import damage_to_label

    run_dir = work / "runs" / name
    t0 = time.perf_counter()
    run_detect(folder / "sites.csv", [folder / "before"], [folder / "after"], run_dir, model=model, tiles=TilesConfig(),
               detect=DetectConfig(chips_top_n=0, embeddings=False, threads=threads), overwrite=True, progress=False)
    rows = [r for r in read_scores(run_dir) if r.ok and damage_to_label(r.damage) is not None]
    y = np.array([damage_to_label(r.damage) for r in rows], dtype=np.int64)
    p = np.array([r.score for r in rows], dtype=np.float64)
    flagged = np.array([r.flagged for r in rows], dtype=bool)
    cautioned = np.array([bool(r.caution) for r in rows], dtype=bool)
    reasons = Counter(reason_name(c) for r in rows for c in split_caution(r.caution))
    gsd = sorted({r.pair.get("after_gsd_m", "") for r in rows} | {r.pair.get("before_gsd_m", "") for r in rows})
    return {
        "set": name, "minutes": (time.perf_counter() - t0) / 60.0, "reasons": dict(reasons),
        "all": group_figures(y, p, flagged), "with_caution": group_figures(y[cautioned], p[cautioned], flagged[cautioned]),
        "without_caution": group_figures(y[~cautioned], p[~cautioned], flagged[~cautioned]),
        "native_gsd_m": [f"{float(g):.3f}" for g in gsd if g][:4] + (["..."] if len(gsd) > 4 else []),
    }


def line(label: str, g: dict[str, Any]) -> str:
    if not g.get("n"):
        return f"    {label:<16} n 0"
    return (f"    {label:<16} n {g['n']:>5} (pos {g['positives']:>4})  AUC {bg._num(g.get('auc'))}  intact flagged "
            f"{bg._pct(g.get('false_alarm'))}  recall {bg._pct(g.get('recall'))}  error rate {bg._pct(g.get('error_rate'))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--sets", help="comma-separated set names or globs (default: every labelled set)")
    parser.add_argument("--data", action="append", default=[], metavar="NAME=FOLDER[:LABELS.csv]")
    parser.add_argument("--coarsen-after", type=int, default=0, metavar="F", help="also each set with its after rasters block-averaged by F")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "sitewatch-bench-caution")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.coarsen_after and args.coarsen_after < 2:
        raise SystemExit("--coarsen-after must be 2 or more")
    sets = bg.select(bg.discover_sets(bg.SHARED, bg.LABELS_DIR) + [bg.parse_data_arg(d) for d in args.data], args.sets)
    if not sets:
        raise SystemExit(f"no labelled set found in {bg.SHARED} (set SITEWATCH_SHARED_DATA) and none given with --data")
    from detect.config import DetectConfig
    from models.checkpoint import read_meta, training_envelope

    envelope = training_envelope(read_meta(args.model))
    d = DetectConfig()
    print(f"model {args.model}: training envelope {envelope}; policy caution_gsd_factor {d.caution_gsd_factor}, "
          f"caution_off_nadir_margin_deg {d.caution_off_nadir_margin_deg}")
    results = []
    for ls in sets:
        folder, _ = bg.materialise(ls, args.work)
        variants = [(ls.name, folder)]
        if args.coarsen_after:
            variants.append((f"{ls.name}-after-x{args.coarsen_after}", coarsened_set(folder, args.work, args.coarsen_after)))
        for name, f in variants:
            r = measure(name, f, args.model, args.work, args.threads)
            results.append(r)
            print(f"{name} ({ls.kind}): native GSD {', '.join(r['native_gsd_m'])} m; cautions {r['reasons'] or 'none'}; {r['minutes']:.1f} min")
            for label in ("all", "with_caution", "without_caution"):
                print(line(label, r[label]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(bg.json_safe({"envelope": envelope.to_dict(), "results": results}), indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
