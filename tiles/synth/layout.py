"""The vector content of one synthetic region: roads, compounds, buildings, trees, vehicles.

Coordinates are local metres: ``x`` to the east, ``y`` to the south, origin at the region's
north-west corner. Everything here is geometry and attributes; pixels are made in
:mod:`tiles.synth.render`, so the same region can be drawn at any GSD and for either epoch.
Objects are placed with per-object Python loops (hundreds to a few thousand per region); no
per-pixel loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from tiles.synth.noise import fractal_noise

#: roof colours (RGB reflectance 0..1): shingles, tiles, metal, membranes.
ROOF_PALETTE = np.array(
    [
        [0.36, 0.35, 0.34],  # grey asphalt shingle
        [0.25, 0.25, 0.26],  # dark shingle
        [0.46, 0.44, 0.41],  # light grey shingle
        [0.42, 0.33, 0.27],  # brown shingle
        [0.55, 0.32, 0.22],  # terracotta tile
        [0.62, 0.42, 0.30],  # light clay tile
        [0.50, 0.52, 0.54],  # metal
        [0.33, 0.38, 0.42],  # blue-grey metal
        [0.30, 0.22, 0.20],  # dark red-brown
        [0.68, 0.67, 0.64],  # pale concrete
    ],
    dtype=np.float32,
)
FLAT_ROOF_PALETTE = np.array(
    [
        [0.78, 0.78, 0.76],  # white membrane
        [0.66, 0.66, 0.64],  # light gravel
        [0.52, 0.52, 0.50],  # grey concrete
        [0.60, 0.57, 0.52],  # beige
        [0.42, 0.42, 0.42],  # dark bitumen
    ],
    dtype=np.float32,
)

#: dense urban districts: flat concrete and plaster roofs, beige to grey
URBAN_ROOF_PALETTE = np.array(
    [
        [0.72, 0.68, 0.60],  # beige plaster
        [0.64, 0.62, 0.58],  # light concrete
        [0.55, 0.52, 0.47],  # weathered concrete
        [0.78, 0.76, 0.72],  # whitewash
        [0.62, 0.55, 0.46],  # sand
        [0.48, 0.47, 0.46],  # dark concrete
    ],
    dtype=np.float32,
)

#: dense concrete cities (Middle East, Mediterranean): concrete, plaster, whitewash, stone
CONCRETE_ROOF_PALETTE = np.array(
    [
        [0.70, 0.69, 0.66],  # light concrete
        [0.60, 0.59, 0.56],  # concrete
        [0.50, 0.49, 0.47],  # weathered concrete
        [0.80, 0.79, 0.76],  # whitewash / membrane
        [0.72, 0.66, 0.56],  # beige plaster
        [0.66, 0.60, 0.52],  # limestone
        [0.58, 0.46, 0.38],  # pale brick-red coating
        [0.42, 0.42, 0.43],  # dark bitumen
    ],
    dtype=np.float32,
)

#: damage kinds; the index is what ``SynthConfig.damage_styles`` weights and the layout's
#: ``damage_centres`` store
DAMAGE_STYLES = ("fire", "wind", "blast", "collapse", "strike")
#: metres per storey of the concrete blocks
STOREY_M = 3.0


@dataclass(eq=False)
class Building:
    """One building. Mutable while a region is assembled; not passed between stages.

    Attributes:
        parts: rectangles (or other convex polygons), each an array of shape ``(K, 2)`` in
            metres ``(x, y)``; the building is their union.
        angle: orientation of the first part's long axis, radians.
        height_m: eave height.
        roof: ``gable``, ``hip`` or ``flat``.
        roof_rgb: roof colour, shape ``(3,)``.
        kind: ``home``, ``apartment``, ``commercial``, ``hospital``, ``school`` or ``shed``.
        centroid: ``(x, y)`` metres (area-weighted over parts).
        size_m: largest extent of the footprint in metres.
        damage: xBD class in the after epoch.
        style: damage kind when damaged (``fire``, ``wind``, ``blast``).
        after_only: new construction, present only in the after epoch.
        site_ok: may be chosen as a labelled site (not too close to the edge).
        damage_seed: seeds how the damage (and rooftop clutter) is drawn.
        rooftop: clutter on a flat roof: ``tanks`` (water tanks and solar heaters), ``dome``
            (a mosque's dome), or None.
        demolition: non-site buildings only: ``cleared`` (gone, bare lot), ``debris`` (a heap of
            demolition debris) in the after epoch, or None.
    """

    parts: list[np.ndarray]
    angle: float
    height_m: float
    roof: str
    roof_rgb: np.ndarray
    kind: str
    centroid: tuple[float, float] = (0.0, 0.0)
    size_m: float = 0.0
    damage: str = "no-damage"
    style: str = ""
    after_only: bool = False
    site_ok: bool = True
    damage_seed: int = 0
    rooftop: str | None = None
    demolition: str | None = None

    def finish(self) -> None:
        """Compute ``centroid`` and ``size_m`` from ``parts``."""
        areas, cents = [], []
        for p in self.parts:
            x, y = p[:, 0], p[:, 1]
            a = 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
            areas.append(abs(a))
            cents.append(p.mean(axis=0))
        w = np.asarray(areas) / max(sum(areas), 1e-9)
        c = (np.asarray(cents) * w[:, None]).sum(axis=0)
        self.centroid = (float(c[0]), float(c[1]))
        allp = np.concatenate(self.parts)
        # extent along the building's own axes
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        u = allp[:, 0] * ca + allp[:, 1] * sa
        v = -allp[:, 0] * sa + allp[:, 1] * ca
        self.size_m = float(max(np.ptp(u), np.ptp(v)))


@dataclass(eq=False)
class Road:
    """A road centre line, shape ``(N, 2)`` metres, with its paved width and class."""

    line: np.ndarray
    width_m: float
    main: bool


@dataclass(eq=False)
class Compound:
    """A walled facility lot (hospital, school) with a yard."""

    polygon: np.ndarray
    kind: str
    yard: str  # paved | sports | bare | grass
    walled: bool


@dataclass(eq=False)
class Layout:
    """Everything drawn in one region.

    Attributes:
        width_m, height_m: extent in metres.
        urban: a dense urban district (flat roofs, attached houses, courtyards, few trees).
        concrete: a dense concrete city (3-10 storey blocks, narrow streets, mosques); implies
            ``urban`` for the ground.
        roads, compounds, buildings: vector objects.
        driveways: segments ``(2, 2)`` metres with their widths.
        fences: lot boundaries, segments ``(2, 2)`` metres with a kind (``fence`` or ``hedge``).
        lawns: irrigated yard polygons around houses (greener than open ground).
        parking: polygons of parking lots.
        pools: polygons of swimming pools.
        trees: arrays ``x, y, radius, height, tone`` (each ``(T,)``) in a dict.
        vehicle_slots: candidate vehicle poses ``(V, 3)``: ``x, y, angle``.
        cleared: polygons cleared to bare soil in the after epoch (construction sites).
        damage_centres: ``(D, 4)``: ``x, y, radius_m, style index`` of damage clusters.
        burn_field_seed: seeds the burnt-ground field of fire clusters.
    """

    width_m: float
    height_m: float
    urban: bool = False
    concrete: bool = False
    roads: list[Road] = field(default_factory=list)
    compounds: list[Compound] = field(default_factory=list)
    buildings: list[Building] = field(default_factory=list)
    driveways: list[tuple[np.ndarray, float]] = field(default_factory=list)
    fences: list[tuple[np.ndarray, str]] = field(default_factory=list)
    lawns: list[np.ndarray] = field(default_factory=list)
    parking: list[np.ndarray] = field(default_factory=list)
    pools: list[np.ndarray] = field(default_factory=list)
    trees: dict[str, np.ndarray] = field(default_factory=dict)
    vehicle_slots: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    cleared: list[np.ndarray] = field(default_factory=list)
    damage_centres: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    burn_field_seed: int = 0


def rectangle(cx: float, cy: float, length: float, width: float, angle: float) -> np.ndarray:
    """Corners ``(4, 2)`` of a rectangle centred on ``(cx, cy)``, long side along ``angle``."""
    ca, sa = math.cos(angle), math.sin(angle)
    hl, hw = length / 2.0, width / 2.0
    local = np.array([[-hl, -hw], [hl, -hw], [hl, hw], [-hl, hw]])
    rot = np.array([[ca, -sa], [sa, ca]])
    return local @ rot.T + np.array([cx, cy])


class _Occupancy:
    """A coarse (1 m) grid of taken ground, to keep objects from overlapping.

    Quadrilaterals are tested and marked by sampling points densely inside them (vectorised),
    which is much cheaper than rasterising thousands of small polygons.
    """

    def __init__(self, width_m: float, height_m: float, cell_m: float = 1.0) -> None:
        self.cell = cell_m
        self.grid = np.zeros((int(math.ceil(height_m / cell_m)), int(math.ceil(width_m / cell_m))), dtype=bool)
        self.width_m, self.height_m = width_m, height_m

    def _cells(self, poly: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p0, p1, p3 = poly[0], poly[1], poly[-1]
        e1, e2 = p1 - p0, p3 - p0
        n1 = max(int(math.ceil(float(np.hypot(*e1)) / (0.7 * self.cell))), 1) + 1
        n2 = max(int(math.ceil(float(np.hypot(*e2)) / (0.7 * self.cell))), 1) + 1
        u = (np.arange(n1, dtype=float) / (n1 - 1))[:, None, None]
        v = (np.arange(n2, dtype=float) / (n2 - 1))[None, :, None]
        pts = (p0 + u * e1 + v * e2).reshape(-1, 2)
        c = np.clip((pts[:, 0] / self.cell).astype(int), 0, self.grid.shape[1] - 1)
        r = np.clip((pts[:, 1] / self.cell).astype(int), 0, self.grid.shape[0] - 1)
        return r, c

    def free(self, poly: np.ndarray) -> bool:
        if poly[:, 0].min() < 0 or poly[:, 1].min() < 0:
            return False
        if poly[:, 0].max() >= self.width_m or poly[:, 1].max() >= self.height_m:
            return False
        r, c = self._cells(poly)
        return not bool(self.grid[r, c].any())

    def take(self, poly: np.ndarray) -> None:
        r, c = self._cells(poly)
        self.grid[r, c] = True

    def taken_at(self, x: float, y: float) -> bool:
        """Whether the cell under ``(x, y)`` metres is taken (outside counts as taken)."""
        r, c = int(y / self.cell), int(x / self.cell)
        if not (0 <= r < self.grid.shape[0] and 0 <= c < self.grid.shape[1]):
            return True
        return bool(self.grid[r, c])

    def take_lines(self, lines: list[tuple[np.ndarray, float]]) -> None:
        """Mark polylines ``(N, 2)`` metres of the given widths (one C fill per line)."""
        img = Image.new("L", (self.grid.shape[1], self.grid.shape[0]), 0)
        draw = ImageDraw.Draw(img)
        for line, width_m in lines:
            pts = [tuple(p) for p in (line / self.cell).tolist()]
            draw.line(pts, fill=255, width=max(int(round(width_m / self.cell)), 1), joint="curve")
        self.grid |= np.asarray(img) > 0


def _expanded(poly: np.ndarray, margin: float) -> np.ndarray:
    c = poly.mean(axis=0)
    d = poly - c
    n = np.linalg.norm(d, axis=1, keepdims=True)
    return c + d * (n + margin * 1.41) / np.maximum(n, 1e-6)


def _road_network(rng: np.random.Generator, w: float, h: float, density: float, *, concrete: bool = False) -> list[Road]:
    """A rotated, jittered grid of main roads with curving residential streets in between
    (``concrete``: a tighter grid of narrow streets)."""
    roads: list[Road] = []
    theta = rng.uniform(-math.pi / 4, math.pi / 4)
    ca, sa = math.cos(theta), math.sin(theta)
    diag = math.hypot(w, h)
    cx, cy = w / 2.0, h / 2.0
    main_spacing = rng.uniform(220, 380)
    street_spacing = rng.uniform(60, 95) if density > 0.3 else rng.uniform(100, 170)
    curvy = rng.random() < 0.45
    if concrete:
        main_spacing = rng.uniform(170, 300)
        street_spacing = rng.uniform(42, 70)
        curvy = rng.random() < 0.2

    def add(u0: float, along_u: bool, main: bool) -> None:
        t = np.arange(-diag / 2, diag / 2 + 10, 10.0)
        amp = 0.0
        if not main and curvy:
            amp = rng.uniform(8, 35)
        wl = rng.uniform(150, 400)
        ph = rng.uniform(0, 2 * math.pi)
        off = u0 + amp * np.sin(2 * math.pi * t / wl + ph)
        if along_u:
            lx, ly = off, t
        else:
            lx, ly = t, off
        x = cx + lx * ca - ly * sa
        y = cy + lx * sa + ly * ca
        line = np.stack([x, y], axis=1)
        inside = (x > -40) & (x < w + 40) & (y > -40) & (y < h + 40)
        if inside.sum() < 2:
            return
        idx = np.flatnonzero(inside)
        line = line[idx[0] : idx[-1] + 1]
        width = rng.uniform(10, 16) if main else rng.uniform(6, 9)
        if concrete:
            width = rng.uniform(9, 15) if main else rng.uniform(4, 7)
        roads.append(Road(line=line, width_m=width, main=main))

    for along_u in (True, False):
        u = -diag / 2 + rng.uniform(0, main_spacing)
        while u < diag / 2:
            add(u, along_u, True)
            s = u + street_spacing * rng.uniform(0.8, 1.2)
            while s < u + main_spacing - street_spacing * 0.5:
                if rng.random() < 0.85:
                    add(s, along_u, False)
                s += street_spacing * rng.uniform(0.8, 1.2)
            u += main_spacing * rng.uniform(0.85, 1.15)
    return roads


def _line_frame(line: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    seg = np.diff(line, axis=0)
    seglen = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(seglen)])
    return seg, seglen, cum


def _point_at(line: np.ndarray, cum: np.ndarray, seg: np.ndarray, seglen: np.ndarray, s: float) -> tuple[np.ndarray, float]:
    i = int(np.clip(np.searchsorted(cum, s) - 1, 0, len(seg) - 1))
    f = (s - cum[i]) / max(seglen[i], 1e-9)
    p = line[i] + f * seg[i]
    return p, math.atan2(seg[i][1], seg[i][0])


def _make_building(
    rng: np.random.Generator, cx: float, cy: float, angle: float, kind: str, length: float, depth: float,
    *, urban: bool = False, courtyard: bool = False,
) -> Building:
    parts = [rectangle(cx, cy, length, depth, angle)]
    r = rng.random()
    if courtyard:
        # a block around an open courtyard: four wings
        ca, sa = math.cos(angle), math.sin(angle)
        t = min(rng.uniform(6, 9), length / 3, depth / 3)
        wings = [(0.0, -(depth - t) / 2, length, t), (0.0, (depth - t) / 2, length, t),
                 (-(length - t) / 2, 0.0, t, depth - 2 * t), ((length - t) / 2, 0.0, t, depth - 2 * t)]
        parts = [rectangle(cx + u * ca - v * sa, cy + u * sa + v * ca, wl, ww, angle) for u, v, wl, ww in wings]
    elif kind in ("home", "apartment") and r < 0.35:
        # L-shape: a wing at one end, perpendicular
        wl = depth * rng.uniform(0.5, 0.9)
        ww = length * rng.uniform(0.3, 0.5)
        side = rng.choice([-1.0, 1.0])
        end = rng.choice([-1.0, 1.0])
        ca, sa = math.cos(angle), math.sin(angle)
        u = end * (length / 2 - ww / 2)
        v = side * (depth / 2 + wl / 2 - 0.5)
        parts.append(rectangle(cx + u * ca - v * sa, cy + u * sa + v * ca, ww, wl, angle))
    elif kind in ("hospital", "school", "commercial") and r < 0.6:
        # L/U/T-shaped blocks
        n = int(rng.integers(1, 3))
        ca, sa = math.cos(angle), math.sin(angle)
        for _ in range(n):
            wl = depth * rng.uniform(0.8, 1.6)
            ww = min(length * rng.uniform(0.2, 0.4), depth * 1.2)
            side = rng.choice([-1.0, 1.0])
            u = rng.uniform(-0.5, 0.5) * (length - ww)
            v = side * (depth / 2 + wl / 2 - 0.5)
            parts.append(rectangle(cx + u * ca - v * sa, cy + u * sa + v * ca, ww, wl, angle))
    if kind in ("hospital", "school", "commercial"):
        roof = "flat"
        rgb = FLAT_ROOF_PALETTE[int(rng.integers(len(FLAT_ROOF_PALETTE)))]
        height = rng.uniform(6, 18) if kind != "commercial" else rng.uniform(4, 9)
    elif kind == "apartment":
        roof = "flat" if rng.random() < 0.6 else "hip"
        pal = FLAT_ROOF_PALETTE if roof == "flat" else ROOF_PALETTE
        rgb = pal[int(rng.integers(len(pal)))]
        height = rng.uniform(7, 20)
    elif kind == "shed":
        roof = "flat" if rng.random() < 0.5 else "gable"
        rgb = ROOF_PALETTE[int(rng.integers(len(ROOF_PALETTE)))]
        height = rng.uniform(2.2, 3.2)
    else:
        roof = "gable" if rng.random() < 0.55 else ("hip" if rng.random() < 0.8 else "flat")
        pal = FLAT_ROOF_PALETTE if roof == "flat" else ROOF_PALETTE
        rgb = pal[int(rng.integers(len(pal)))]
        height = rng.uniform(3.0, 7.5)
    if urban and kind in ("home", "apartment", "commercial") and (courtyard or rng.random() < 0.85):
        roof = "flat"
        rgb = URBAN_ROOF_PALETTE[int(rng.integers(len(URBAN_ROOF_PALETTE)))]
        height = rng.uniform(3.0, 7.0) if kind == "home" else rng.uniform(6.0, 16.0)
    rgb = np.clip(rgb * rng.uniform(0.85, 1.15) + rng.normal(0, 0.02, 3), 0.05, 0.95).astype(np.float32)
    b = Building(parts=parts, angle=angle, height_m=float(height), roof=roof, roof_rgb=rgb, kind=kind)
    b.finish()
    return b


def _compounds(rng: np.random.Generator, lay: Layout, occ: _Occupancy, n: int) -> None:
    """Hospitals and schools: walled lots by a road, large buildings, yards, parking."""
    tries = 0
    while n > 0 and tries < n * 40 and lay.roads:
        tries += 1
        road = lay.roads[int(rng.integers(len(lay.roads)))]
        seg, seglen, cum = _line_frame(road.line)
        if cum[-1] < 200:
            continue
        s = rng.uniform(60, cum[-1] - 60)
        p, ang = _point_at(road.line, cum, seg, seglen, s)
        side = rng.choice([-1.0, 1.0])
        lot_l = rng.uniform(70, 150)
        lot_d = rng.uniform(60, 120)
        nx, ny = -math.sin(ang) * side, math.cos(ang) * side
        off = road.width_m / 2 + 3 + lot_d / 2
        cx, cy = p[0] + nx * off, p[1] + ny * off
        lot = rectangle(cx, cy, lot_l, lot_d, ang)
        if not occ.free(lot):
            continue
        kind = "hospital" if rng.random() < 0.45 else "school"
        yard = rng.choice(["paved", "sports", "bare", "grass"], p=[0.35, 0.3, 0.15, 0.2])
        if kind == "hospital" and yard == "sports":
            yard = "paved"
        lay.compounds.append(Compound(polygon=lot, kind=kind, yard=str(yard), walled=bool(rng.random() < 0.75)))
        occ.take(lot)
        # main building toward the road side, plus 0..2 annexes
        ca, sa = math.cos(ang), math.sin(ang)
        main_l = lot_l * rng.uniform(0.4, 0.7)
        main_d = lot_d * rng.uniform(0.25, 0.4)
        # position along the lot's normal, toward the road (the road is on the -n side)
        inset = lot_d / 2 - main_d / 2 - rng.uniform(6, 12)
        bx, by = cx - nx * inset, cy - ny * inset
        main = _make_building(rng, bx, by, ang, kind, main_l, main_d)
        lay.buildings.append(main)
        for _ in range(int(rng.integers(0, 3))):
            al = rng.uniform(15, 35)
            ad = rng.uniform(10, 20)
            u = rng.uniform(-lot_l / 2 + al / 2 + 5, lot_l / 2 - al / 2 - 5)
            w = rng.uniform(0, lot_d / 2 - ad / 2 - 6)
            ax = cx + u * ca + nx * w
            ay = cy + u * sa + ny * w
            annex = _make_building(rng, ax, ay, ang, kind, al, ad)
            if all(np.hypot(annex.centroid[0] - o.centroid[0], annex.centroid[1] - o.centroid[1]) > (annex.size_m + o.size_m) / 2 + 4 for o in lay.buildings[-3:]):
                lay.buildings.append(annex)
        # a parking lot in a corner of the yard
        pl = rng.uniform(20, 40)
        pd = rng.uniform(12, 20)
        u = rng.choice([-1.0, 1.0]) * (lot_l / 2 - pl / 2 - 3)
        w = lot_d / 2 - pd / 2 - 3
        lay.parking.append(rectangle(cx + u * ca + nx * w, cy + u * sa + ny * w, pl, pd, ang))
        n -= 1


def build_layout(rng: np.random.Generator, width_m: float, height_m: float, *, building_density: float,
                 tree_density: float, facilities_per_km2: float, edge_margin_m: float, urban: bool = False,
                 concrete: bool = False) -> Layout:
    """Lay out one region: roads, compounds, houses along streets, trees, vehicle slots.

    Args:
        rng: random generator (the region's own stream).
        width_m, height_m: extent in metres.
        building_density, tree_density: 0..1 strengths.
        facilities_per_km2: hospital/school compounds per km².
        edge_margin_m: buildings closer than this to the edge are not eligible as sites.
        urban: lay out a dense urban district (attached flat-roofed houses with little or no
            setback, courtyard blocks, walls instead of hedges, few trees and no lawns).
        concrete: lay out a dense concrete city: 3-10 storey flat-roofed blocks with water
            tanks and solar heaters along narrow streets, courtyard blocks, mosques with a dome
            and a minaret (takes precedence over ``urban``).

    Returns:
        the layout, with ``damage`` still ``no-damage`` everywhere.
    """
    lay = Layout(width_m=width_m, height_m=height_m, urban=urban or concrete, concrete=concrete)
    if concrete:
        building_density = max(building_density, 0.85)
        tree_density *= 0.1
    elif urban:
        building_density = max(building_density, 0.8)
        tree_density *= 0.15
    occ = _Occupancy(width_m, height_m)
    coarse = (int(math.ceil(height_m / 4.0)), int(math.ceil(width_m / 4.0)))  # 4 m cells
    dens_field = fractal_noise(rng, coarse, 120.0, octaves=3)
    # built-up probability 0..1: density knob shifts the threshold
    built = 1.0 / (1.0 + np.exp(-(dens_field * 1.6 + (building_density - 0.35) * 5.0)))
    lay.roads = _road_network(rng, width_m, height_m, building_density, concrete=concrete)
    occ.take_lines([(road.line, road.width_m + 2.0) for road in lay.roads])
    area_km2 = width_m * height_m / 1e6
    n_comp = int(rng.poisson(max(facilities_per_km2 * area_km2, 0.0)))
    if facilities_per_km2 > 0:
        n_comp = max(n_comp, 1)
    _compounds(rng, lay, occ, n_comp)
    for road in lay.roads:
        frame = _line_frame(road.line)
        for side in (-1.0, 1.0):
            s = rng.uniform(0, 15)
            while s < frame[2][-1]:
                if concrete:
                    s = _concrete_lot(rng, lay, occ, road, frame, side, s)
                else:
                    s = _street_lot(rng, lay, occ, road, frame, side, s, built, urban)
    if concrete:
        _concrete_infill(rng, lay, occ)
    _vehicle_slots(rng, lay)
    _trees(rng, lay, occ, built, tree_density)
    for b in lay.buildings:
        cx, cy = b.centroid
        m = edge_margin_m
        b.site_ok = b.site_ok and (m <= cx <= width_m - m) and (m <= cy <= height_m - m)
    return lay


def _built_at(built: np.ndarray, x: float, y: float) -> float:
    """Built-up probability of the 4 m cell under ``(x, y)`` metres."""
    r = int(np.clip(y / 4.0, 0, built.shape[0] - 1))
    c = int(np.clip(x / 4.0, 0, built.shape[1] - 1))
    return float(built[r, c])


def _lot_building_kind(rng: np.random.Generator, road: Road, dense: bool, urban: bool, lot: float) -> tuple[str, float, float, float]:
    """``(kind, length, depth, extra frontage used)`` of the building on one street lot."""
    r = rng.random()
    extra = 0.0
    if road.main and r < 0.25:
        kind = "commercial"
        length, depth = rng.uniform(18, 45), rng.uniform(15, 30)
        extra = length * 0.6
    elif urban and r < 0.2:
        kind = "apartment"
        length, depth = rng.uniform(22, 36), rng.uniform(20, 32)
        extra = length * 0.7
    elif dense and r < 0.12:
        kind = "apartment"
        length, depth = rng.uniform(20, 40), rng.uniform(11, 16)
        extra = length * 0.5
    else:
        kind = "home"
        length = rng.uniform(12, 24) if not dense else rng.uniform(8, 15)
        depth = rng.uniform(8, 15) if not dense else rng.uniform(7, 12)
        length = min(length, lot - 2.0)
        if urban:
            length, depth = lot - rng.uniform(0.3, 1.2), rng.uniform(9, 18)
    return kind, float(length), float(depth), float(extra)


def _street_lot(
    rng: np.random.Generator, lay: Layout, occ: _Occupancy, road: Road,
    frame: tuple[np.ndarray, np.ndarray, np.ndarray], side: float, s: float, built: np.ndarray, urban: bool,
) -> float:
    """Fill the street lot at arc length ``s`` on one side of ``road``; returns the next ``s``."""
    seg, seglen, cum = frame
    p, ang = _point_at(road.line, cum, seg, seglen, s)
    b = _built_at(built, *p)
    dense = b > 0.6 or urban
    lot = rng.uniform(12, 18) if dense else rng.uniform(17, 27)
    if urban:
        lot = rng.uniform(8, 15)
    s += lot
    if rng.random() > (b * 1.35 if not urban else 0.5 + b):
        return s
    kind, length, depth, extra = _lot_building_kind(rng, road, dense, urban, lot)
    s += extra
    setback = rng.uniform(4, 10) if kind != "commercial" else rng.uniform(3, 8)
    if urban:
        setback = rng.uniform(0.5, 3.0)
    nx, ny = -math.sin(ang) * side, math.cos(ang) * side
    off = road.width_m / 2 + setback + depth / 2
    if occ.taken_at(p[0] + nx * off, p[1] + ny * off):
        return s
    jit = rng.normal(0, 0.04)
    bld = _make_building(rng, p[0] + nx * off, p[1] + ny * off, ang + jit, kind, length, depth,
                         urban=urban, courtyard=urban and kind == "apartment" and rng.random() < 0.6)
    foot = [_expanded(part, 0.1 if urban else 1.5) for part in bld.parts]
    if not all(occ.free(f) for f in foot):
        return s
    for f in foot:
        occ.take(f)
    lay.buildings.append(bld)
    if urban:
        _block_interior(rng, lay, occ, p, ang, (nx, ny), off + depth / 2, lot)
    _lot_surroundings(rng, lay, occ, road, p, ang, (nx, ny), kind, length, depth, setback, off, lot, urban)
    return s


def concrete_block(
    rng: np.random.Generator, cx: float, cy: float, angle: float, length: float, depth: float, *,
    storeys: int, courtyard: bool = False, kind: str = "apartment",
) -> Building:
    """A flat-roofed concrete block of ``storeys`` storeys (water tanks and solar heaters on the
    roof): a plain slab, or four wings around a courtyard."""
    parts = [rectangle(cx, cy, length, depth, angle)]
    if courtyard:
        ca, sa = math.cos(angle), math.sin(angle)
        t = min(rng.uniform(7, 11), length / 3, depth / 3)
        wings = [(0.0, -(depth - t) / 2, length, t), (0.0, (depth - t) / 2, length, t),
                 (-(length - t) / 2, 0.0, t, depth - 2 * t), ((length - t) / 2, 0.0, t, depth - 2 * t)]
        parts = [rectangle(cx + u * ca - v * sa, cy + u * sa + v * ca, wl, ww, angle) for u, v, wl, ww in wings]
    rgb = np.clip(
        CONCRETE_ROOF_PALETTE[int(rng.integers(len(CONCRETE_ROOF_PALETTE)))] * rng.uniform(0.88, 1.12) + rng.normal(0, 0.015, 3),
        0.05, 0.95,
    ).astype(np.float32)
    b = Building(parts=parts, angle=angle, height_m=float(storeys * STOREY_M + rng.uniform(0.3, 1.5)), roof="flat", roof_rgb=rgb, kind=kind)
    b.rooftop = "tanks" if rng.random() < 0.85 else None
    b.finish()
    return b


def _mosque(rng: np.random.Generator, lay: Layout, occ: _Occupancy, cx: float, cy: float, angle: float, side_m: float) -> bool:
    """A mosque: a square prayer hall with a dome, and a slender minaret at one corner."""
    hall = _make_building(rng, cx, cy, angle, "commercial", side_m, side_m * rng.uniform(0.85, 1.0), urban=True)
    hall.kind = "mosque"
    hall.roof = "flat"
    hall.roof_rgb = np.clip(CONCRETE_ROOF_PALETTE[int(rng.integers(4))] * rng.uniform(0.95, 1.1), 0.05, 0.95).astype(np.float32)
    hall.height_m = float(rng.uniform(7, 12))
    hall.rooftop = "dome"
    ca, sa = math.cos(angle), math.sin(angle)
    u, v = side_m / 2 + 1.8, rng.choice([-1.0, 1.0]) * (side_m / 2 - 2.0)
    mx, my = cx + u * ca - v * sa, cy + u * sa + v * ca
    w = rng.uniform(2.4, 3.4)
    minaret = Building(parts=[rectangle(mx, my, w, w, angle + math.pi / 8)], angle=angle, height_m=float(rng.uniform(24, 45)),
                       roof="flat", roof_rgb=np.array([0.78, 0.77, 0.74], dtype=np.float32), kind="minaret", site_ok=False)
    minaret.finish()
    foot = [_expanded(p, 0.5) for p in hall.parts] + [minaret.parts[0]]
    if not all(occ.free(f) for f in foot):
        return False
    for f in foot:
        occ.take(f)
    lay.buildings += [hall, minaret]
    return True


def _concrete_infill(rng: np.random.Generator, lay: Layout, occ: _Occupancy) -> None:
    """Fill the inside of the blocks of a concrete city with more blocks, aligned to the street grid."""
    if not lay.roads:
        return
    d = lay.roads[0].line[1] - lay.roads[0].line[0]
    grid_angle = math.atan2(d[1], d[0])
    tries = int(lay.width_m * lay.height_m / 35.0)
    xs = rng.uniform(5, lay.width_m - 5, tries)
    ys = rng.uniform(5, lay.height_m - 5, tries)
    for x, y in zip(xs, ys):
        if occ.taken_at(x, y):
            continue
        length, depth = rng.uniform(10, 26), rng.uniform(9, 18)
        ang = grid_angle + (math.pi / 2 if rng.random() < 0.5 else 0.0) + rng.normal(0, 0.02)
        foot = _expanded(rectangle(x, y, length, depth, ang), 0.8)
        if not occ.free(foot):
            continue
        occ.take(foot)
        lay.buildings.append(concrete_block(rng, x, y, ang, length, depth, storeys=int(rng.integers(2, 9))))


def _concrete_lot(
    rng: np.random.Generator, lay: Layout, occ: _Occupancy, road: Road,
    frame: tuple[np.ndarray, np.ndarray, np.ndarray], side: float, s: float,
) -> float:
    """A street lot of a dense concrete city: a block at the street front and more behind it."""
    seg, seglen, cum = frame
    p, ang = _point_at(road.line, cum, seg, seglen, s)
    lot = rng.uniform(12, 28)
    s += lot + rng.uniform(0.5, 4.0)  # narrow gaps and alleys between blocks
    if rng.random() < 0.12:
        return s  # an empty lot or a gap
    nx, ny = -math.sin(ang) * side, math.cos(ang) * side
    setback = rng.uniform(1.6, 4.0)  # the road's own margin is 1 m
    if rng.random() < 0.03:
        side_m = rng.uniform(14, 28)
        off = road.width_m / 2 + setback + side_m / 2
        _mosque(rng, lay, occ, p[0] + nx * off, p[1] + ny * off, ang, side_m)
        return s + side_m * 0.5
    courtyard = rng.random() < 0.2
    length = lot if not courtyard else rng.uniform(26, 42)
    depth = rng.uniform(10, 22) if not courtyard else rng.uniform(24, 38)
    if courtyard:
        s += length - lot
    storeys = int(rng.integers(3, 11))
    kind = "commercial" if road.main and rng.random() < 0.2 else "apartment"
    off = road.width_m / 2 + setback + depth / 2
    if occ.taken_at(p[0] + nx * off, p[1] + ny * off):
        return s
    bld = concrete_block(rng, p[0] + nx * off, p[1] + ny * off, ang + rng.normal(0, 0.03), length, depth,
                         storeys=storeys, courtyard=courtyard, kind=kind)
    foot = [_expanded(part, 0.3) for part in bld.parts]
    if not all(occ.free(f) for f in foot):
        return s
    for f in foot:
        occ.take(f)
    lay.buildings.append(bld)
    back = off + depth / 2
    for _ in range(int(rng.integers(0, 3))):
        d2 = rng.uniform(10, 20)
        back += rng.uniform(1.0, 5.0) + d2 / 2
        inner = concrete_block(rng, p[0] + nx * back, p[1] + ny * back, ang + rng.normal(0, 0.03), lot - rng.uniform(0.5, 3.0), d2,
                               storeys=int(rng.integers(2, 9)))
        back += d2 / 2
        ifoot = [_expanded(part, 0.3) for part in inner.parts]
        if not all(occ.free(f) for f in ifoot):
            break
        for f in ifoot:
            occ.take(f)
        lay.buildings.append(inner)
    if rng.random() < 0.15:  # a car parked in front
        a = np.array([p[0] + nx * (road.width_m / 2 - 1.2), p[1] + ny * (road.width_m / 2 - 1.2)])
        lay.vehicle_slots = np.concatenate([lay.vehicle_slots, [[a[0], a[1], ang]]])
    return s


def _block_interior(
    rng: np.random.Generator, lay: Layout, occ: _Occupancy, p: np.ndarray, ang: float,
    normal: tuple[float, float], back: float, lot: float,
) -> None:
    """Dense blocks: further buildings behind the street front, up to the block's core."""
    nx, ny = normal
    for _ in range(int(rng.integers(1, 4))):
        d2 = rng.uniform(8, 16)
        back += rng.uniform(0.5, 4.0) + d2 / 2
        inner = _make_building(rng, p[0] + nx * back, p[1] + ny * back, ang + rng.normal(0, 0.03), "home",
                               lot - rng.uniform(0.3, 2.0), d2, urban=True)
        back += d2 / 2
        ifoot = [_expanded(part, 0.1) for part in inner.parts]
        if not all(occ.free(f) for f in ifoot):
            break
        for f in ifoot:
            occ.take(f)
        lay.buildings.append(inner)


def _lot_surroundings(
    rng: np.random.Generator, lay: Layout, occ: _Occupancy, road: Road, p: np.ndarray, ang: float,
    normal: tuple[float, float], kind: str, length: float, depth: float, setback: float, off: float, lot: float,
    urban: bool,
) -> None:
    """A lot's lawn, side fence or hedge, driveway (with a vehicle slot), parking and backyard."""
    nx, ny = normal
    ca, sa = math.cos(ang), math.sin(ang)
    lot_depth = depth + setback + rng.uniform(6, 14)
    lc = (p[0] + nx * (road.width_m / 2 + lot_depth / 2), p[1] + ny * (road.width_m / 2 + lot_depth / 2))
    if kind == "home" and not urban and rng.random() < 0.7:
        lay.lawns.append(rectangle(lc[0], lc[1], lot - 1.0, lot_depth, ang))
    if kind == "home" and rng.random() < (0.3 if urban else 0.55):
        bx = -lot / 2 if rng.random() < 0.5 else lot / 2
        a = np.array([p[0] + bx * ca + nx * (road.width_m / 2 + 2), p[1] + bx * sa + ny * (road.width_m / 2 + 2)])
        bpt = a + np.array([nx, ny]) * lot_depth
        lay.fences.append((np.stack([a, bpt]), "hedge" if (rng.random() < 0.4 and not urban) else "fence"))
    # driveway from the front of the building to the road
    if kind in ("home", "commercial") and rng.random() < (0.2 if urban else 0.7):
        u = rng.uniform(-0.3, 0.3) * length
        a = np.array([p[0] + u * ca + nx * (road.width_m / 2), p[1] + u * sa + ny * (road.width_m / 2)])
        bpt = np.array([p[0] + u * ca + nx * (off - depth / 2), p[1] + u * sa + ny * (off - depth / 2)])
        wd = rng.uniform(3, 5) if kind == "home" else rng.uniform(6, 10)
        lay.driveways.append((np.stack([a, bpt]), wd))
        lay.vehicle_slots = np.concatenate([lay.vehicle_slots, [[*(a + bpt) / 2.0, ang + math.pi / 2]]])
    if kind == "commercial" and rng.random() < 0.6:
        # parking lot beside it
        pl, pd = rng.uniform(15, 30), rng.uniform(12, 22)
        pc = np.array([p[0] + (length / 2 + pl / 2 + 2) * ca + nx * off, p[1] + (length / 2 + pl / 2 + 2) * sa + ny * off])
        lot_poly = rectangle(pc[0], pc[1], pl, pd, ang)
        if occ.free(lot_poly):
            occ.take(lot_poly)
            lay.parking.append(lot_poly)
    # backyard: pool or shed
    if kind == "home" and not urban:
        bx = p[0] + nx * (off + depth / 2 + 5)
        by = p[1] + ny * (off + depth / 2 + 5)
        rr = rng.random()
        if rr < 0.15:
            pool = rectangle(bx, by, rng.uniform(4, 9), rng.uniform(3, 5), ang)
            if occ.free(pool):
                occ.take(pool)
                lay.pools.append(pool)
        elif rr < 0.3:
            shed = _make_building(rng, bx, by, ang, "shed", rng.uniform(3, 6), rng.uniform(2.5, 4))
            if occ.free(_expanded(shed.parts[0], 0.5)):
                occ.take(shed.parts[0])
                shed.site_ok = False
                lay.buildings.append(shed)


def _vehicle_slots(rng: np.random.Generator, lay: Layout) -> None:
    """Vehicle slots along roads (parked and moving) and in parking lots."""
    slots = [lay.vehicle_slots]
    for road in lay.roads:
        seg, seglen, cum = _line_frame(road.line)
        n = int(cum[-1] / (25 if road.main else 45))
        if n == 0:
            continue
        s = rng.uniform(0, cum[-1], n)
        for si in s:
            p, ang = _point_at(road.line, cum, seg, seglen, float(si))
            side = rng.choice([-1.0, 1.0])
            lane = road.width_m / 4 * side
            slots.append(np.array([[p[0] - math.sin(ang) * lane, p[1] + math.cos(ang) * lane, ang]]))
    for lot_poly in lay.parking:
        c = lot_poly.mean(axis=0)
        d = lot_poly[1] - lot_poly[0]
        ang = math.atan2(d[1], d[0])
        length = float(np.hypot(*d))
        for u in np.arange(-length / 2 + 2, length / 2 - 1, 2.8):
            for v in (-3.0, 3.0):
                slots.append(np.array([[c[0] + u * math.cos(ang) - v * math.sin(ang), c[1] + u * math.sin(ang) + v * math.cos(ang), ang + math.pi / 2]]))
    lay.vehicle_slots = np.concatenate(slots) if slots else np.zeros((0, 3))


def _trees(rng: np.random.Generator, lay: Layout, occ: _Occupancy, built: np.ndarray, tree_density: float) -> None:
    """Trees: clumps in yards and open land, plus street trees; not on roofs or roads."""
    width_m, height_m = lay.width_m, lay.height_m
    coarse = built.shape
    grid = occ.grid
    n_cand = int(width_m * height_m / 60.0 * (0.2 + 1.6 * tree_density))
    tx = rng.uniform(0, width_m, n_cand)
    ty = rng.uniform(0, height_m, n_cand)
    tree_field = fractal_noise(rng, coarse, 60.0, octaves=3)
    tr_, tc_ = np.clip((ty / 4).astype(int), 0, coarse[0] - 1), np.clip((tx / 4).astype(int), 0, coarse[1] - 1)
    keep_p = 1.0 / (1.0 + np.exp(-(tree_field[tr_, tc_] * 2.6 + (tree_density - 0.5) * 3 + built[tr_, tc_] * 1.2 - 1.6)))
    keep = rng.random(n_cand) < keep_p
    gr = np.clip(ty.astype(int), 0, grid.shape[0] - 1)
    gc = np.clip(tx.astype(int), 0, grid.shape[1] - 1)
    keep &= ~grid[gr, gc]
    tx, ty = tx[keep], ty[keep]
    radius = np.clip(rng.gamma(5.0, 0.85, tx.size), 1.5, 9.0)
    lay.trees = {
        "x": tx,
        "y": ty,
        "radius": radius,
        "height": radius * rng.uniform(1.3, 2.6, tx.size),
        "tone": rng.uniform(-1, 1, tx.size),
        "deciduous": rng.random(tx.size) < 0.55,
    }


def add_demolition(rng: np.random.Generator, lay: Layout, strength: float, keep: list[Building]) -> None:
    """Demolish (clear, or leave a heap of demolition debris) a share of the buildings that are
    not sites, between the epochs: big look-change near sites whose own building is untouched."""
    if strength <= 0:
        return
    keep_ids = {id(b) for b in keep}
    for b in lay.buildings:
        if id(b) in keep_ids or b.after_only or b.damage != "no-damage" or b.kind == "minaret":
            continue
        if rng.random() < strength * 0.12:
            b.demolition = "cleared" if rng.random() < 0.5 else "debris"
            if b.demolition == "cleared":
                for p in b.parts:
                    lay.cleared.append(_expanded(p, rng.uniform(0.5, 3.0)))


def add_construction(rng: np.random.Generator, lay: Layout, strength: float) -> None:
    """New buildings (after only) and cleared lots in open ground, never at existing buildings."""
    if strength <= 0:
        return
    occ = _Occupancy(lay.width_m, lay.height_m)
    occ.take_lines([(road.line, road.width_m + 2.0) for road in lay.roads])
    for b in lay.buildings:
        for p in b.parts:
            occ.take(_expanded(p, 6.0))
    for c in lay.compounds:
        occ.take(c.polygon)
    area_km2 = lay.width_m * lay.height_m / 1e6
    n = int(rng.poisson(strength * 25 * area_km2))
    for _ in range(n * 6):
        if n <= 0:
            break
        x, y = rng.uniform(20, lay.width_m - 20), rng.uniform(20, lay.height_m - 20)
        ang = rng.uniform(0, math.pi)
        if rng.random() < 0.6:
            if lay.concrete:
                b = concrete_block(rng, x, y, ang, rng.uniform(12, 28), rng.uniform(10, 20), storeys=int(rng.integers(2, 9)))
            else:
                b = _make_building(rng, x, y, ang, "home" if rng.random() < 0.7 else "commercial", rng.uniform(9, 25), rng.uniform(8, 16))
            pad = [_expanded(p, 4.0) for p in b.parts]
            if all(occ.free(p) for p in pad):
                for p in pad:
                    occ.take(p)
                b.after_only = True
                b.site_ok = False
                lay.buildings.append(b)
                lay.cleared.append(_expanded(rectangle(x, y, b.size_m, b.size_m * 0.8, ang), 5.0))
                n -= 1
        else:
            lot = rectangle(x, y, rng.uniform(15, 45), rng.uniform(15, 35), ang)
            if occ.free(lot):
                occ.take(lot)
                lay.cleared.append(lot)
                n -= 1
