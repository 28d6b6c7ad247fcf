"""Tiles settings: errors name the dotted setting; the quality thresholds are settings."""

from __future__ import annotations

import numpy as np
import pytest

from sitewatch.config import build_config
from sitewatch.errors import ConfigError
from tiles.config import TilesConfig
from tiles.quality import chip_quality, cloud_like, pair_cloud_fraction


@pytest.mark.parametrize(
    "kwargs, setting",
    [
        ({"chip_px": 8}, "tiles.chip_px"),
        ({"chip_size_m": -1.0}, "tiles.chip_size_m"),
        ({"max_chip_size_m": 10.0}, "tiles.max_chip_size_m"),
        ({"bands": ()}, "tiles.bands"),
        ({"bands": (0, 1, 2)}, "tiles.bands"),
        ({"max_native_gsd_ratio": 0.5}, "tiles.max_native_gsd_ratio"),
        ({"gsd_mismatch_ratio": float("nan")}, "tiles.gsd_mismatch_ratio"),
        ({"blank_level": 1.5}, "tiles.blank_level"),
        ({"blank_level": 0.99}, "tiles.blank_level"),
        ({"cloud_texture_px": 0}, "tiles.cloud_texture_px"),
        ({"max_scenes_tried": 0}, "tiles.max_scenes_tried"),
    ],
)
def test_bad_settings_name_the_dotted_setting(kwargs, setting):
    with pytest.raises(ConfigError) as exc:
        TilesConfig(**kwargs)
    assert exc.value.setting == setting and str(exc.value).startswith(f"{setting}: ")
    assert "--" not in str(exc.value)  # library errors never name command-line flags
    # through the config machinery too (a YAML file or --set), the setting survives
    with pytest.raises(ConfigError) as again:
        build_config(TilesConfig, kwargs, where="tiles")
    assert again.value.setting == setting


def test_quality_thresholds_are_settings_with_unchanged_defaults():
    cfg = TilesConfig()
    assert (cfg.blank_level, cfg.saturated_level) == (0.02, 0.98)
    assert (cfg.cloud_min_brightness, cfg.cloud_max_band_range, cfg.cloud_max_texture, cfg.cloud_texture_px) == (
        0.75, 0.12, 0.04, 5)
    valid = np.ones((32, 32), bool)
    dark = np.full((3, 32, 32), 0.03, np.float32)
    assert chip_quality(dark, valid, cfg).blank_fraction == 0.0
    assert chip_quality(dark, valid, TilesConfig(blank_level=0.05)).blank_fraction == 1.0
    bright = np.full((3, 32, 32), 0.97, np.float32)
    assert chip_quality(bright, valid, cfg).saturated_fraction == 0.0
    assert chip_quality(bright, valid, TilesConfig(saturated_level=0.95)).saturated_fraction == 1.0
    haze = np.full((3, 32, 32), 0.7, np.float32)
    assert not cloud_like(haze, valid, cfg).any()
    assert cloud_like(haze, valid, TilesConfig(cloud_min_brightness=0.65)).all()
    ground = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32) * 0.5
    assert pair_cloud_fraction(ground, valid, haze, valid, TilesConfig(cloud_min_brightness=0.65)) == 1.0
    assert pair_cloud_fraction(ground, valid, haze, valid, cfg) == 0.0
