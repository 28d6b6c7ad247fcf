"""Which buildings are damaged in the after epoch, and how (labels and styles, no pixels).

Damage is spatially clustered as in real events (a fire front, a tornado track, a shelled
quarter): a few cluster centres with a radius and a style each; a building's damage follows its
distance to the nearest cluster, with a little background of isolated strikes.
"""

from __future__ import annotations

import numpy as np

from tiles.synth.layout import DAMAGE_STYLES, Layout


def place_damage_clusters(rng: np.random.Generator, lay: Layout, style_weights: tuple[float, ...]) -> None:
    """Choose the damage clusters of a region and set ``damage``/``style`` of every building.

    Args:
        rng: the region's random generator.
        lay: the layout; its buildings are updated in place.
        style_weights: relative weights of ``fire``, ``wind``, ``blast`` (and ``collapse``,
            ``strike`` when five are given).
    """
    w = np.asarray(style_weights, dtype=float)
    w = w / w.sum()
    k = len(w)
    # one dominant style per region (one event), sometimes mixed
    main_style = int(rng.choice(k, p=w))
    n = 1 + int(rng.poisson(1.5))
    centres = []
    for _ in range(n):
        style = main_style if rng.random() < 0.8 else int(rng.choice(k, p=w))
        r = rng.uniform(70, 320) if style != 1 else rng.uniform(60, 160)
        centres.append([rng.uniform(0, lay.width_m), rng.uniform(0, lay.height_m), r, style])
    if main_style == 4:  # strikes: many small impact areas scattered over the district
        for _ in range(int(rng.integers(2, 8))):
            centres.append([rng.uniform(0, lay.width_m), rng.uniform(0, lay.height_m), rng.uniform(30, 110), 4])
    for c in centres:
        if c[3] == 3:  # an earthquake: damage spread over a wide area, patchy from block to block
            c[2] = rng.uniform(250, 700)
    lay.damage_centres = np.asarray(centres, dtype=float)
    lay.burn_field_seed = int(rng.integers(2**31))
    for b in lay.buildings:
        b.damage_seed = int(rng.integers(2**31))
        if b.after_only or b.kind == "minaret":
            continue
        intensity, style = damage_intensity(lay, b.centroid)
        intensity *= rng.uniform(0.6, 1.25)
        if style == 3:
            # which block falls depends on its build, not only on where it is; tall blocks more often
            intensity *= rng.uniform(0.35, 1.5) * (0.8 + 0.4 * min(b.height_m / 30.0, 1.0))
        b.style = DAMAGE_STYLES[style]
        if intensity > 0.6:
            b.damage = "destroyed" if rng.random() < 0.85 else "major-damage"
        elif intensity > 0.4:
            b.damage = str(rng.choice(["destroyed", "major-damage", "minor-damage", "no-damage"], p=[0.35, 0.25, 0.2, 0.2]))
        elif intensity > 0.25:
            b.damage = str(rng.choice(["major-damage", "minor-damage", "no-damage"], p=[0.1, 0.3, 0.6]))
        elif rng.random() < 0.004:
            b.damage = "destroyed"
            b.style = "blast"


def damage_intensity(lay: Layout, xy: tuple[float, float]) -> tuple[float, int]:
    """Damage intensity 0..1 at ``xy`` (metres) and the index of the nearest cluster's style."""
    if len(lay.damage_centres) == 0:
        return 0.0, 2
    c = lay.damage_centres
    d = np.hypot(c[:, 0] - xy[0], c[:, 1] - xy[1]) / c[:, 2]
    inten = np.exp(-(d**2))
    k = int(np.argmax(inten))
    return float(inten[k]), int(c[k, 3])


def damage_radius_m(size_m: float) -> float:
    """Site radius for a building of largest extent ``size_m``: half its size, at least 3 m."""
    return max(3.0, round(size_m / 2.0, 1))
