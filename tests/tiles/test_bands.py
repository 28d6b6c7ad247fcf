"""Which bands become R, G, B: colour interpretation, descriptions, tiles.bands."""

from __future__ import annotations

import pytest

from sitewatch.errors import RasterError
from tiles.bands import choose_bands
from tiles.config import TilesConfig

CFG = TilesConfig()
WV8 = ["Coastal", "Blue", "Green", "Yellow", "Red", "Red Edge", "NIR1", "NIR2"]


@pytest.mark.parametrize(
    "count, interp, descriptions, bands, source",
    [
        (3, ["red", "green", "blue"], [], (1, 2, 3), "colour_interpretation"),
        (4, ["red", "green", "blue", "alpha"], [], (1, 2, 3), "colour_interpretation"),
        (4, ["blue", "green", "red", "undefined"], [], (3, 2, 1), "colour_interpretation"),
        (8, ["undefined"] * 8, WV8, (5, 3, 2), "band_description"),
        (3, ["gray", "undefined", "undefined"], ["B", "G", "R"], (3, 2, 1), "band_description"),
        (4, ["gray"] + ["undefined"] * 3, ["band 1 (blue)", "Band 2 - Green", "RED", "Near-Infrared"], (3, 2, 1),
         "band_description"),
        # ambiguous tags are not trusted
        (4, ["red", "red", "green", "blue"], ["Red", "red", "green", "blue"], (1, 2, 3), "tiles.bands"),
        (3, ["gray", "undefined", "undefined"], [], (1, 2, 3), "tiles.bands"),
    ],
)
def test_rgb_from_tags(count, interp, descriptions, bands, source):
    choice = choose_bands(count, interp, descriptions, CFG, where="x.tif")
    assert (choice.bands, choice.source) == (bands, source)
    assert choice.text == ",".join(map(str, bands))


def test_fallbacks_and_warnings():
    untagged = choose_bands(4, ["gray"] + ["undefined"] * 3, [], CFG, where="x.tif")
    assert untagged.source == "tiles.bands" and "x.tif" in untagged.warning and "[3, 2, 1]" in untagged.warning
    # an explicit mapping is not a guess: no warning
    mapped = choose_bands(4, ["gray"] + ["undefined"] * 3, [], TilesConfig(bands=(3, 2, 1)), where="x.tif")
    assert (mapped.bands, mapped.warning) == ((3, 2, 1), "")
    grey = choose_bands(1, ["gray"], [], CFG, where="g.tif")
    assert (grey.bands, grey.source) == ((1, 1, 1), "single_band")
    # four channels (e.g. an RGBN model) are never re-ordered by the RGB tags
    four = choose_bands(4, ["blue", "green", "red", "undefined"], [], TilesConfig(bands=(1, 2, 3, 4)), where="x.tif")
    assert (four.bands, four.source) == ((1, 2, 3, 4), "tiles.bands")
    off = choose_bands(4, ["blue", "green", "red", "undefined"], [], TilesConfig(colour_interpretation=False), where="x")
    assert off.bands == (1, 2, 3)


def test_missing_band_names_the_setting():
    with pytest.raises(RasterError) as exc:
        choose_bands(2, ["gray", "undefined"], [], CFG, where="two.tif")
    assert exc.value.setting == "tiles.bands" and str(exc.value).startswith("tiles.bands: two.tif has 2 bands")
