"""PR-curve and reliability plots drawn with PIL (no plotting library needed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 640, 520
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 60
COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))


@dataclass(frozen=True)
class Curve:
    """One line of a plot: ``x`` and ``y`` (M,) in [0, 1] and a legend label."""

    label: str
    x: np.ndarray
    y: np.ndarray


class _UnitAxes:
    """A [0, 1] x [0, 1] plot area on a PIL image."""

    def __init__(self, title: str, xlabel: str, ylabel: str) -> None:
        self.image = Image.new("RGB", (WIDTH, HEIGHT), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.font = ImageFont.load_default()
        self.x0, self.x1 = LEFT, WIDTH - RIGHT
        self.y0, self.y1 = HEIGHT - BOTTOM, TOP
        d = self.draw
        for t in np.linspace(0, 1, 6):
            x, y = self.px(t, t)
            d.line([(x, self.y0), (x, self.y1)], fill=(230, 230, 230))
            d.line([(self.x0, y), (self.x1, y)], fill=(230, 230, 230))
            d.text((x - 10, self.y0 + 6), f"{t:.1f}", fill="black", font=self.font)
            d.text((self.x0 - 30, y - 6), f"{t:.1f}", fill="black", font=self.font)
        d.rectangle([self.x0, self.y1, self.x1, self.y0], outline="black")
        d.text((WIDTH // 2 - 3 * len(title), 12), title, fill="black", font=self.font)
        d.text(((self.x0 + self.x1) // 2 - 3 * len(xlabel), self.y0 + 26), xlabel, fill="black", font=self.font)
        d.text((6, TOP - 20), ylabel, fill="black", font=self.font)

    def px(self, x: float, y: float) -> tuple[float, float]:
        return self.x0 + x * (self.x1 - self.x0), self.y0 - y * (self.y0 - self.y1)

    def line(self, xs: np.ndarray, ys: np.ndarray, colour: tuple[int, int, int], width: int = 2) -> None:
        pts = [self.px(float(a), float(b)) for a, b in zip(xs, ys) if np.isfinite(a) and np.isfinite(b)]
        if len(pts) >= 2:
            self.draw.line(pts, fill=colour, width=width)
        elif pts:
            x, y = pts[0]
            self.draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)

    def legend(self, labels: list[str]) -> None:
        for i, text in enumerate(labels):
            x, y = self.x0 + 10, self.y1 + 10 + 16 * i
            colour = COLOURS[i % len(COLOURS)]
            self.draw.line([(x, y + 6), (x + 20, y + 6)], fill=colour, width=3)
            self.draw.text((x + 26, y), text, fill="black", font=self.font)

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.image.save(path)
        return path


def pr_curve_png(curves: list[Curve], path: Path, *, title: str = "precision-recall") -> Path:
    """Precision (y) against recall (x) for each curve; ``Curve.x`` = recall, ``y`` = precision."""
    ax = _UnitAxes(title, "recall", "precision")
    for i, c in enumerate(curves):
        # step shape: precision holds until the next recall
        xs = np.repeat(np.r_[0.0, c.x], 2)[1:]
        ys = np.repeat(np.r_[c.y[:1], c.y], 2)[:-1] if len(c.y) else np.array([])
        ax.line(xs, ys, COLOURS[i % len(COLOURS)])
    ax.legend([c.label for c in curves])
    return ax.save(Path(path))


def reliability_png(curves: list[Curve], path: Path, *, title: str = "reliability") -> Path:
    """Observed positive rate (y) against mean predicted probability (x) per bin, with the
    diagonal of perfect calibration (grey)."""
    ax = _UnitAxes(title, "mean predicted probability", "observed positive rate")
    ax.line(np.array([0.0, 1.0]), np.array([0.0, 1.0]), (150, 150, 150), width=1)
    for i, c in enumerate(curves):
        colour = COLOURS[i % len(COLOURS)]
        ok = np.isfinite(c.x) & np.isfinite(c.y)
        ax.line(c.x[ok], c.y[ok], colour)
        for a, b in zip(c.x[ok], c.y[ok]):
            x, y = ax.px(float(a), float(b))
            ax.draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    ax.legend([c.label for c in curves])
    return ax.save(Path(path))
