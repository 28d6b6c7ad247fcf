"""Contact sheets for labelling sites by eye, from pairs cut by ``sitewatch tiles``.

Given two tiles-stage output folders of the same (blinded) sites CSV, one narrow (e.g. 64 m /
128 px) and one wide (e.g. 128 m / 256 px), this writes PNG sheets of ``--per-sheet`` sites in
the order of the sites CSV. Per site: narrow before | narrow after | wide before | wide after,
each panel ``--panel`` pixels, the site point marked with a small ring, the narrow window drawn
as a thin square on the wide panels, invalid (no-data) pixels grey. Each site is captioned with
its id and the tiles status only: no label, no score, nothing else.

Used for ``benchmarks/labels/turkey-eq-2023-dev-byeye.csv`` (see the README there). The
sheets show licensed imagery: write them outside the repository (scratch) and never commit them.

    python benchmarks/labels/make_contact_sheets.py --narrow T64 --wide T128 --out SHEETS [--per-sheet 8]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

GAP = 4
CAPTION = 16


def read_index(folder: Path) -> dict[str, dict[str, str]]:
    """The tiles stage's ``index.csv`` rows keyed by site id."""
    with (folder / "index.csv").open(newline="", encoding="utf-8") as fh:
        return {r["site_id"]: r for r in csv.DictReader(fh)}


def pair_panels(folder: Path, row: dict[str, str], panel: int) -> tuple[Image.Image, Image.Image] | None:
    """Before and after chips of one site as RGB images ``panel`` pixels square, or None.

    The pair file holds ``image`` float16 ``(2, C, H, W)`` in [0, 1] and ``valid`` ``(2, H, W)``;
    each epoch gets a per-chip 1–99 % stretch (display only) and grey where invalid.
    """
    if not row.get("pair_file"):
        return None
    path = folder / row["pair_file"]
    if not path.is_file():
        return None
    with np.load(path) as z:
        image = np.asarray(z["image"], dtype=np.float32)
        valid = np.asarray(z["valid"], dtype=bool)
    out = []
    for t in range(2):
        rgb = np.moveaxis(image[t, :3], 0, -1)
        ok = valid[t]
        if ok.any():
            lo, hi = np.percentile(rgb[ok], [1, 99])
            rgb = np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1)
        rgb[~ok] = 0.5
        img = Image.fromarray((rgb * 255).astype(np.uint8)).resize((panel, panel), Image.LANCZOS)
        out.append(img)
    return out[0], out[1]


def mark(img: Image.Image, ring_px: float, square_px: float | None) -> Image.Image:
    """Draw the site ring (and the narrow window as a square) at the centre of a panel."""
    img = img.copy()
    d = ImageDraw.Draw(img)
    c = img.size[0] / 2
    d.ellipse([c - ring_px, c - ring_px, c + ring_px, c + ring_px], outline=(255, 230, 0), width=1)
    if square_px:
        h = square_px / 2
        d.rectangle([c - h, c - h, c + h, c + h], outline=(0, 220, 255), width=1)
    return img


def site_tile(site: str, narrow: Path, wide: Path, nrow: dict[str, str], wrow: dict[str, str] | None,
              panel: int, ring_m: float) -> Image.Image:
    """One site's strip: 4 panels and a caption."""
    width = 4 * panel + 3 * GAP
    strip = Image.new("RGB", (width, panel + CAPTION), (30, 30, 30))
    d = ImageDraw.Draw(strip)
    d.text((2, 2), f"{site}  narrow {nrow['chip_size_m']} m: {nrow['status']} {nrow['reason']}", fill=(255, 255, 255))
    narrow_m = float(nrow["chip_size_m"] or 64)
    p = pair_panels(narrow, nrow, panel)
    if p is not None:
        for i, img in enumerate(p):
            strip.paste(mark(img, ring_m * panel / narrow_m, None), (i * (panel + GAP), CAPTION))
    if wrow is not None:
        wide_m = float(wrow["chip_size_m"] or 128)
        q = pair_panels(wide, wrow, panel)
        if q is not None:
            for i, img in enumerate(q):
                strip.paste(mark(img, ring_m * panel / wide_m, narrow_m * panel / wide_m), ((2 + i) * (panel + GAP), CAPTION))
    return strip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--narrow", type=Path, required=True, help="tiles output folder, narrow window")
    parser.add_argument("--wide", type=Path, required=True, help="tiles output folder, wide window (same sites)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the sheets (outside the repository)")
    parser.add_argument("--sites", nargs="*", help="only these site ids, in this order (default: the index order)")
    parser.add_argument("--per-sheet", type=int, default=8)
    parser.add_argument("--columns", type=int, default=2)
    parser.add_argument("--panel", type=int, default=180)
    parser.add_argument("--ring-m", type=float, default=4.0, help="radius of the ring at the site point (metres)")
    parser.add_argument("--prefix", default="sheet")
    args = parser.parse_args()
    narrow, wide = read_index(args.narrow), read_index(args.wide)
    order = args.sites or list(narrow)
    args.out.mkdir(parents=True, exist_ok=True)
    strip_w, strip_h = 4 * args.panel + 3 * GAP, args.panel + CAPTION
    manifest = {}
    for k in range(0, len(order), args.per_sheet):
        chunk = order[k : k + args.per_sheet]
        rows = (len(chunk) + args.columns - 1) // args.columns
        sheet = Image.new("RGB", (args.columns * strip_w + (args.columns - 1) * 20, rows * (strip_h + 6)), (0, 0, 0))
        for j, site in enumerate(chunk):
            strip = site_tile(site, args.narrow, args.wide, narrow[site], wide.get(site), args.panel, args.ring_m)
            sheet.paste(strip, ((j % args.columns) * (strip_w + 20), (j // args.columns) * (strip_h + 6)))
        name = f"{args.prefix}_{k // args.per_sheet:03d}.png"
        sheet.save(args.out / name)
        manifest[name] = chunk
    (args.out / "sheets.json").write_text(json.dumps(manifest, indent=1))
    print(f"{len(manifest)} sheets in {args.out}")


if __name__ == "__main__":
    main()
