"""The values that travel between stages."""

from __future__ import annotations

import numpy as np
import pytest

from tiles.types import Pair, Site


def test_cannot_assess_is_the_one_way_to_make_a_failed_pair():
    site = Site("s1", 1.0, 2.0)
    pair = Pair.cannot_assess(site, "cloud", "cloud-like fraction 80%", cloud_fraction=0.8, before_scene="b")
    assert pair.site is site and not pair.ok and pair.image is None and pair.valid is None
    m = pair.meta
    assert (m.site_id, m.status, m.reason, m.detail) == ("s1", "cannot_assess", "cloud", "cloud-like fraction 80%")
    assert (m.cloud_fraction, m.before_scene) == (0.8, "b")
    image, valid = np.zeros((2, 3, 4, 4), np.float32), np.zeros((2, 4, 4), bool)
    with_chips = Pair.cannot_assess(site, "mostly_nodata", image=image, valid=valid)
    assert with_chips.image is image and with_chips.valid is valid and with_chips.meta.detail == ""
    with pytest.raises(ValueError, match="reason"):
        Pair.cannot_assess(site, "")
    with pytest.raises(TypeError):
        Pair.cannot_assess(site, "cloud", no_such_field=1)
