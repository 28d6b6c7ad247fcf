"""Several synthetic worlds in one training set: ``synth:N@PROFILE`` and ``train.synth_profiles``."""

from __future__ import annotations

import json

import pytest

from sitewatch.cli import main
from sitewatch.config import load_config
from sitewatch.errors import ConfigError, UsageError
from sitewatch.jobs import TrainJob
from tiles.config import TilesConfig
from train.datasets import load_datasets, parse_dataset_spec, profile_synth_config

TILES = TilesConfig(chip_px=32, chip_size_m=24.0)
SMALL = {"synth.size_px": 512, "synth.max_sites_per_region": 30}
CITY = {"concrete_fraction": 0.6, "urban_fraction": 0.2, "damage_styles": [0.1, 0.1, 0.1, 0.4, 0.3], "flood": 0.3}


def job(**overrides):
    return load_config(TrainJob, None, {**SMALL, **overrides})


def test_spec_forms():
    assert parse_dataset_spec("synth:40") == ("synth", "40")
    assert parse_dataset_spec("synth:40@city") == ("synth", "40@city")
    with pytest.raises(UsageError, match=r"train.data: synth:40@: synth:N@PROFILE needs a profile name"):
        parse_dataset_spec("synth:40@")
    with pytest.raises(UsageError, match=r"synth:x@city: synth:N needs a whole number"):
        parse_dataset_spec("synth:x@city")


def test_profile_errors_name_the_setting():
    with pytest.raises(ConfigError, match=r"train.synth_profiles.city.concrete: not a synth setting; valid keys are: .*concrete_fraction"):
        job(**{"train.synth_profiles": {"city": {"concrete": 0.5}}})
    with pytest.raises(ConfigError, match=r"train.synth_profiles.city.sites: set by the DATASET argument"):
        job(**{"train.synth_profiles": {"city": {"sites": 10}}})
    with pytest.raises(ConfigError, match=r"train.data\[1\]: synth:8@town: no synth profile 'town' in train.synth_profiles \(city\)"):
        job(**{"train.synth_profiles": {"city": CITY}, "train.data": ["synth:8", "synth:8@town"]})
    with pytest.raises(ConfigError, match=r"train.synth_profiles: 'a city' is not a usable profile name"):
        job(**{"train.synth_profiles": {"a city": CITY}})


def test_profile_values_are_checked_against_the_synth_section(tmp_path):
    # each value is fine alone; with the job's urban_fraction the town styles sum past 1
    j = job(**{"synth.urban_fraction": 0.5, "train.synth_profiles": {"city": {"concrete_fraction": 0.7}}})
    with pytest.raises(ConfigError, match=r"train.synth_profiles.city: urban_fraction \+ concrete_fraction must be at most 1"):
        profile_synth_config(j.synth, j.train.synth_profiles, "city", spec="synth:8@city")
    # ... and found before the first (valid) dataset is generated
    with pytest.raises(ConfigError, match=r"train.synth_profiles.city"):
        load_datasets(["synth:8", "synth:8@city"], TILES, cache_dir=tmp_path, synth=j.synth, synth_profiles=j.train.synth_profiles, progress=False)
    assert not (tmp_path / "synth").exists()
    with pytest.raises(ConfigError, match=r"train.synth_profiles.city.flood: expected a number"):
        profile_synth_config(j.synth, {"city": {"flood": "lots"}}, "city", spec="synth:8@city")
    # a profile replaces only what it names
    cfg = profile_synth_config(j.synth, {"city": CITY}, "city", spec="synth:8@city")
    assert cfg.concrete_fraction == 0.6 and cfg.damage_styles == (0.1, 0.1, 0.1, 0.4, 0.3) and cfg.size_px == 512
    assert profile_synth_config(j.synth, {}, None, spec="synth:8") is j.synth


@pytest.mark.slow
def test_two_worlds_are_generated_once_each_and_concatenated(tmp_path):
    j = job(**{"train.synth_profiles": {"city": CITY}})
    kwargs = {"cache_dir": tmp_path, "synth": j.synth, "synth_profiles": j.train.synth_profiles, "seed": 3, "progress": False}
    ps = load_datasets(["synth:12", "synth:12@city"], TILES, **kwargs)
    folders = sorted((tmp_path / "synth").iterdir())
    assert len(folders) == 2
    made = [json.loads((f / ".complete").read_text()) for f in folders]
    by_world = {m["concrete_fraction"]: m for m in made}
    assert set(by_world) == {0.0, 0.6}
    assert by_world[0.6]["flood"] == 0.3 and by_world[0.6]["seed"] == 4 and by_world[0.0]["seed"] == 3
    assert by_world[0.6]["size_px"] == by_world[0.0]["size_px"] == 512  # the synth section still applies
    assert ps.name == "synth12s3+synth12s4-city"
    assert len(ps) > 12
    again = load_datasets(["synth:12", "synth:12@city"], TILES, **kwargs)
    assert sorted((tmp_path / "synth").iterdir()) == folders  # from the cache, nothing generated again
    assert (again.images == ps.images).all() and (again.labels == ps.labels).all()


def test_cli_names_the_setting(tmp_path, capsys):
    assert main(["train", "--data", "synth:8@city", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "synth:8@city: no synth profile 'city' in train.synth_profiles (none defined)" in err


def test_evaluate_data_with_a_profile_names_evaluate_not_train():
    from tiles.synth.config import SynthConfig  # noqa: PLC0415 - only this test needs it

    with pytest.raises(UsageError) as info:
        profile_synth_config(SynthConfig(), {}, "city", spec="synth:8@city", setting="evaluate.data")
    text = str(info.value)
    assert text.startswith("evaluate.data: synth:8@city: evaluate.data takes no synth profiles")
    assert "use synth:N" in text and "sitewatch synth" in text
