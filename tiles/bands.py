"""Which raster bands become a chip's channels: R, G and B found from the raster's own tags.

Vendors deliver 4-band imagery in B, G, R, NIR order as often as in R, G, B, NIR. With three
``tiles.bands`` (the RGB case) and ``tiles.colour_interpretation`` on, the bands come from, in
order of preference:

1. ``colour_interpretation``: the GDAL colour interpretation names each of red, green and blue
   exactly once (``gdalinfo`` shows it as ``ColorInterp=Red``);
2. ``band_description``: the band descriptions name each exactly once (``Red``, ``green``,
   ``Band 3 (Blue)``; ``Red Edge``, ``Coastal Blue`` and ``Near-Infrared`` do not count);
3. ``tiles.bands``: the configured indices (a warning for a raster of 4 or more bands when they
   are the default, since its order is then a guess);
4. ``single_band``: a one-band raster is used for every channel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Literal, Sequence

from sitewatch.errors import RasterError
from tiles.config import TilesConfig

__all__ = ["BandChoice", "choose_bands", "BAND_SOURCES"]

BandSource = Literal["colour_interpretation", "band_description", "tiles.bands", "single_band"]
#: every value of :attr:`BandChoice.source`, in order of preference.
BAND_SOURCES: tuple[str, ...] = ("colour_interpretation", "band_description", "tiles.bands", "single_band")

_DEFAULT_BANDS = next(f.default for f in fields(TilesConfig) if f.name == "bands")
_COLOURS = ("red", "green", "blue")
_NOT_RGB = frozenset({"edge", "rededge", "coastal", "deep"})
_SINGLE = {"r": "red", "g": "green", "b": "blue"}


@dataclass(frozen=True)
class BandChoice:
    """The bands of one raster read as the chip's channels, and why.

    Attributes:
        bands: 1-based band indices, one per chip channel.
        source: one of :data:`BAND_SOURCES`.
        warning: why the choice may be wrong (empty when it is not a guess).
    """

    bands: tuple[int, ...]
    source: BandSource
    warning: str = ""

    @property
    def text(self) -> str:
        """The indices as written in ``index.csv``: ``"3,2,1"``."""
        return ",".join(str(b) for b in self.bands)


def _unique_rgb(names: Sequence[str]) -> tuple[int, int, int] | None:
    """1-based indices of red, green and blue when each is named exactly once."""
    found: dict[str, list[int]] = {c: [] for c in _COLOURS}
    for i, name in enumerate(names, start=1):
        if name in found:
            found[name].append(i)
    if all(len(v) == 1 for v in found.values()):
        return found["red"][0], found["green"][0], found["blue"][0]
    return None


def _description_colour(text: str) -> str:
    """``red``/``green``/``blue`` when a band description names that colour alone, else ``""``."""
    words = re.findall(r"[a-z]+", str(text).lower())
    if len(words) == 1 and words[0] in _SINGLE:
        return _SINGLE[words[0]]
    if _NOT_RGB & set(words):
        return ""
    hits = [w for w in words if w in _COLOURS]
    return hits[0] if len(set(hits)) == 1 else ""


def choose_bands(
    count: int,
    colour_interp: Sequence[str],
    descriptions: Sequence[str],
    config: TilesConfig,
    *,
    where: str,
) -> BandChoice:
    """The bands of a raster that become the chip's channels (see the module docstring).

    Args:
        count: the raster's number of bands.
        colour_interp: GDAL colour interpretation name per band, lower case (``"red"``,
            ``"undefined"``, ...); may be empty when unknown.
        descriptions: band descriptions (``""`` where unset); may be empty.
        config: ``bands`` and ``colour_interpretation`` are used.
        where: the raster's path, for messages.

    Raises:
        RasterError: ``tiles.bands`` asks for a band the raster does not have (the message starts
            with ``tiles.bands:`` and ``setting`` is ``"tiles.bands"``).
    """
    wanted = tuple(config.bands)
    if count == 1 and max(wanted) > 1:
        return BandChoice((1,) * len(wanted), "single_band", f"{where} has one band; it is used for all {len(wanted)} channels")
    if config.colour_interpretation and len(wanted) == 3:
        rgb = _unique_rgb([str(c).lower() for c in colour_interp])
        if rgb is not None:
            return BandChoice(rgb, "colour_interpretation")
        rgb = _unique_rgb([_description_colour(d) for d in descriptions])
        if rgb is not None:
            return BandChoice(rgb, "band_description")
    if max(wanted) > count:
        raise RasterError(
            f"tiles.bands: {where} has {count} bands but tiles.bands asks for {list(wanted)} and its tags do not "
            f"name red, green and blue; set tiles.bands to {min(count, len(wanted))} of its band indices",
            setting="tiles.bands",
        )
    warning = ""
    if count >= 4 and wanted == _DEFAULT_BANDS:
        warning = (
            f"{where} has {count} bands and no colour interpretation or band descriptions naming red, green and "
            f"blue; bands {list(wanted)} (tiles.bands) are read as R, G, B; if it is B, G, R, NIR set "
            "tiles.bands: [3, 2, 1]"
        )
    return BandChoice(wanted, "tiles.bands", warning)
