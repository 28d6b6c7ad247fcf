"""Settings of the synthetic scene generator (defaults live here and nowhere else)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SynthConfig:
    """What ``sitewatch synth`` generates. Strength knobs are 0 (off) .. 1 (strong).

    A dataset is made of one or more *regions*: independent synthetic towns of
    ``size_px x size_px`` pixels, placed apart from each other in ``crs``. As many regions are
    generated as it takes to hold ``sites`` labelled sites.

    Attributes:
        sites: number of labelled sites written to ``sites.csv``.
        seed: seeds everything; the same config gives byte-identical rasters and sites.
        size_px: side of one region (before epoch) in pixels.
        gsd_m: ground sample distance of the before rasters, metres per pixel (0.3 .. 1).
        crs: projected CRS of the before rasters (metres), e.g. ``EPSG:32633``.
        after_crs: CRS of the after rasters (may be geographic, e.g. ``EPSG:4326``); None =
            same as ``crs``.
        after_gsd_m: GSD of the after rasters in metres; None = same as ``gsd_m``.
        scenes: number of scene files each region is split into per epoch (before: column
            strips, after: row strips, overlapping by ``scene_overlap_m``).
        scene_overlap_m: overlap of neighbouring scene strips, so any window of up to this
            size around a site lies whole inside one scene.
        destroyed_fraction, major_fraction, minor_fraction: share of sites per xBD damage class;
            the rest are ``no-damage``.
        damage_styles: relative weights of the damage kinds ``(fire, wind, blast)`` or
            ``(fire, wind, blast, collapse, strike)``: fire = ash and scorch (wildfire), wind =
            roofs torn and debris strewn (tornado, hurricane), blast = rubble, grey dust and
            craters, collapse = earthquake (pancaked storeys, tilted slabs, grey concrete rubble
            spilling into the street, dust), strike = war damage (roof holes with scorched rims,
            one wing down, scorched facades, craters in yards). Three weights = no collapse/strike.
        edge_margin_m: sites keep this distance from a region's edge.
        max_sites_per_region: upper bound on sites taken from one region (more regions are
            generated when needed); keeps sites spread over many neighbourhoods.
        facilities_per_km2: hospital/school compounds per square kilometre.
        building_density: 0 .. 1, how built-up regions are (sparse rural .. dense town).
        urban_fraction: share of regions drawn as dense urban districts (attached flat-roofed
            houses, courtyard blocks, walls, dusty ground, few trees) instead of suburbs.
        concrete_fraction: share of regions drawn as dense concrete cities of the Middle East
            and the Mediterranean (3-10 storey flat-roofed blocks with water tanks and solar
            heaters, narrow streets, courtyards, mosques with domes and minarets); the rest
            are suburbs and urban districts. ``urban_fraction + concrete_fraction <= 1``.
        tree_density: 0 .. 1, how many trees.
        sun_change: 0 .. 1, how much sun azimuth and elevation differ between epochs.
        season_change: 0 .. 1, vegetation colour and leaf-on/off differences.
        colour_shift: 0 .. 1, sensor/white-balance/gamma/saturation differences.
        haze: 0 .. 1, atmospheric haze (contrast loss, blue-grey airlight).
        noise: 0 .. 1, sensor noise.
        blur: 0 .. 1, optical blur.
        misregistration: 0 .. 1, shift of after against before (up to 8 px at 1).
        off_nadir: 0 .. 1, building lean (up to 30 degrees off-nadir at 1), per epoch.
        vehicles: 0 .. 1, share of vehicles that move between epochs.
        construction: 0 .. 1, new buildings and cleared lots in the after epoch (not at sites).
        jpeg: 0 .. 1, JPEG compression artefacts (quality 95 at 0+ down to 30 at 1; 0 = none).
        clouds: 0 .. 1, cloud cover in the after epoch (up to ~15 % of a region at 1).
        nodata: 0 .. 1, nodata strips along scene edges (up to 12 % of the width at 1).
        resolution_change: 0 .. 1, each epoch's native resolution drawn between ``gsd_m`` and
            ``gsd_m + 0.7 m`` at 1 (e.g. 0.5 .. 1.2 m) and resampled to ``gsd_m``.
        flood: 0 .. 1, chance and extent of flood water (or the mud it leaves) in one epoch.
        winter: 0 .. 1, chance that an epoch has a low winter sun (long shadows of tall blocks,
            bare trees).
        demolition: 0 .. 1, share of non-site buildings demolished (cleared or a heap of
            demolition debris) or replaced between the epochs: look-change without damage at
            the sites.
        max_off_nadir_deg: off-nadir angle at ``off_nadir`` = 1, degrees.
        randomise_nuisance: draw each region's nuisance strengths uniformly in
            ``[0, knob]`` instead of using the knobs as they are (for training variety).
    """

    sites: int = 200
    seed: int = 0
    size_px: int = 2048
    gsd_m: float = 0.5
    crs: str = "EPSG:32633"
    after_crs: str | None = None
    after_gsd_m: float | None = None
    scenes: int = 1
    scene_overlap_m: float = 160.0
    destroyed_fraction: float = 0.2
    major_fraction: float = 0.05
    minor_fraction: float = 0.05
    damage_styles: tuple[float, ...] = (0.4, 0.3, 0.3)
    edge_margin_m: float = 48.0
    max_sites_per_region: int = 400
    facilities_per_km2: float = 3.0
    building_density: float = 0.7
    urban_fraction: float = 0.3
    concrete_fraction: float = 0.0
    tree_density: float = 0.5
    sun_change: float = 0.5
    season_change: float = 0.4
    colour_shift: float = 0.5
    haze: float = 0.3
    noise: float = 0.3
    blur: float = 0.3
    misregistration: float = 0.3
    off_nadir: float = 0.4
    vehicles: float = 0.6
    construction: float = 0.3
    jpeg: float = 0.4
    clouds: float = 0.0
    nodata: float = 0.0
    resolution_change: float = 0.0
    flood: float = 0.0
    winter: float = 0.0
    demolition: float = 0.0
    max_off_nadir_deg: float = 30.0
    randomise_nuisance: bool = False

    def __post_init__(self) -> None:
        if self.sites < 1:
            raise ValueError(f"sites must be at least 1, got {self.sites}")
        if self.size_px < 256:
            raise ValueError(f"size_px must be at least 256, got {self.size_px}")
        if not 0.05 <= self.gsd_m <= 10.0:
            raise ValueError(f"gsd_m must be between 0.05 and 10 metres, got {self.gsd_m}")
        if self.after_gsd_m is not None and not 0.05 <= self.after_gsd_m <= 10.0:
            raise ValueError(f"after_gsd_m must be None (same as gsd_m) or 0.05 .. 10 metres, got {self.after_gsd_m}")
        if self.after_crs is not None and not self.after_crs.strip():
            raise ValueError("after_crs must be None (same as crs) or a CRS such as EPSG:4326, got an empty string")
        if self.scenes < 1:
            raise ValueError(f"scenes must be at least 1, got {self.scenes}")
        if self.max_sites_per_region < 1:
            raise ValueError("max_sites_per_region must be at least 1")
        fractions = (self.destroyed_fraction, self.major_fraction, self.minor_fraction)
        if any(f < 0 for f in fractions) or sum(fractions) > 1.0 + 1e-9:
            raise ValueError(
                "destroyed_fraction, major_fraction and minor_fraction must be >= 0 and sum to at most 1, "
                f"got {fractions}"
            )
        if len(self.damage_styles) not in (3, 5) or any(w < 0 for w in self.damage_styles) or sum(self.damage_styles) <= 0:
            raise ValueError(
                "damage_styles must be three (fire, wind, blast) or five (fire, wind, blast, collapse, strike) "
                f"weights >= 0 with a positive sum, got {self.damage_styles}"
            )
        if self.urban_fraction + self.concrete_fraction > 1.0 + 1e-9:
            raise ValueError(f"urban_fraction + concrete_fraction must be at most 1, got {self.urban_fraction} + {self.concrete_fraction}")
        if not 0.0 <= self.max_off_nadir_deg <= 45.0:
            raise ValueError(f"max_off_nadir_deg must be between 0 and 45 degrees, got {self.max_off_nadir_deg}")
        for name in (
            "building_density", "urban_fraction", "tree_density", "sun_change", "season_change", "colour_shift", "haze",
            "noise", "blur", "misregistration", "off_nadir", "vehicles", "construction", "jpeg",
            "clouds", "nodata", "concrete_fraction", "resolution_change", "flood", "winter", "demolition",
        ):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} is a strength between 0 and 1, got {v}")

    @property
    def effective_after_gsd_m(self) -> float:
        """GSD of the after rasters (``after_gsd_m`` or, when None, ``gsd_m``)."""
        return self.gsd_m if self.after_gsd_m is None else self.after_gsd_m

    @property
    def effective_after_crs(self) -> str:
        """CRS of the after rasters (``after_crs`` or, when None, ``crs``)."""
        return self.crs if self.after_crs is None else self.after_crs
