from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from sitewatch.config import build_config, config_to_dict, load_config, parse_set_overrides, write_config
from sitewatch.errors import ConfigError
from sitewatch.jobs import DetectJob, TilesJob


@dataclass(frozen=True)
class Inner:
    size: int = 3
    mode: Literal["a", "b"] = "a"
    bands: tuple[int, ...] = (1, 2, 3)
    name: str | None = None


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    rate: float = 0.5
    flag: bool = False


def test_defaults_then_file_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("inner:\n  size: 7\nrate: 0.25\n")
    cfg = load_config(Outer, f, {"inner.size": 9, "flag": "true", "rate": None})
    assert cfg.inner.size == 9  # flag beats file
    assert cfg.rate == 0.25  # a flag that was not given (None) does not override the file
    assert cfg.flag is True
    assert cfg.inner.mode == "a"  # default kept


def test_unknown_key_lists_valid_keys(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("inner:\n  sise: 7\n")
    with pytest.raises(ConfigError) as exc:
        load_config(Outer, f)
    msg = str(exc.value)
    assert "sise" in msg and "size" in msg and "mode" in msg and str(f) in msg


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"rate": "fast"}, "expected a number"),
        ({"inner": {"size": 1.5}}, "expected an integer"),
        ({"inner": {"mode": "c"}}, "not one of"),
        ({"flag": "maybe"}, "true or false"),
        ({"inner": 3}, "mapping"),
        ({"inner": {"bands": 4}}, "expected a list"),
    ],
)
def test_wrong_types_are_named(data, needle):
    with pytest.raises(ConfigError, match=needle):
        build_config(Outer, data)


def test_roundtrip_through_yaml(tmp_path):
    cfg = build_config(Outer, {"inner": {"bands": [4, 3, 2], "name": "x"}})
    assert cfg.inner.bands == (4, 3, 2)
    path = write_config(cfg, tmp_path)
    again = load_config(Outer, path)
    assert again == cfg
    assert yaml.safe_load(path.read_text())["inner"]["bands"] == [4, 3, 2]


def test_set_overrides_parse_yaml_scalars():
    assert parse_set_overrides(["tiles.chip_px=256", "tiles.bands=[3,2,1]", "a.b=x"]) == {
        "tiles.chip_px": 256,
        "tiles.bands": [3, 2, 1],
        "a.b": "x",
    }
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set_overrides(["tiles.chip_px"])


def test_stage_validation_becomes_config_error():
    with pytest.raises(ConfigError, match="chip_size_m"):
        load_config(TilesJob, None, {"tiles.chip_size_m": -1})


def test_job_configs_have_sections():
    d = config_to_dict(DetectJob())
    assert set(d) == {"tiles", "detect"}
    assert d["tiles"]["chip_px"] == 128


def test_shipped_configs_load(tmp_path):
    from pathlib import Path

    import sitewatch.jobs as jobs

    root = Path(__file__).resolve().parents[2] / "configs"
    by_prefix = {
        "tiles": jobs.TilesJob,
        "detect": jobs.DetectJob,
        "train": jobs.TrainJob,
        "synth": jobs.SynthJob,
        "evaluate": jobs.EvaluateJob,
        "review": jobs.ReviewJob,
        "dossier": jobs.DossierJob,
        "calibrate": jobs.CalibrateJob,
    }
    files = sorted(root.glob("*.yaml"))
    assert files, "configs/ holds at least one example"
    for f in files:
        cls = by_prefix[f.stem.split("-")[0]]
        load_config(cls, f)


def test_set_null_resets_a_setting_while_absent_flags_change_nothing():
    import argparse

    from sitewatch.commands._common import load_job_config
    from sitewatch.jobs import TrainJob

    args = argparse.Namespace(set=["train.threads=null"], config=None)
    job = load_job_config(TrainJob, args, {"train.epochs": None})
    assert job.train.threads is None
    assert job.train.epochs == TrainJob().train.epochs
    args = argparse.Namespace(set=["train.threads=3"], config=None)
    assert load_job_config(TrainJob, args, {}).train.threads == 3


def test_a_set_typo_names_the_flag_and_the_close_key_not_the_config_file(tmp_path):
    import argparse

    from sitewatch.commands._common import load_job_config
    from sitewatch.jobs import TrainJob

    f = tmp_path / "c.yaml"
    f.write_text("tiles:\n  chip_px: 64\n", encoding="utf-8")
    cases = {
        "tile.chip_px=64": ("--set tile.chip_px", "'tile' in the config", "tiles?"),
        "tiles.chip_pxx=64": ("--set tiles.chip_pxx", "'chip_pxx' in tiles", "tiles.chip_px?"),
        "detect.operating_pont=evidence": ("--set detect.operating_pont", "in detect", "detect.operating_point?"),
        "tiles.parts.max_part=3": ("--set tiles.parts.max_part", "in tiles.parts", "tiles.parts.max_parts?"),
    }
    for item, parts in cases.items():
        with pytest.raises(ConfigError) as exc:
            load_job_config(DetectJob, argparse.Namespace(set=[item], config=str(f)), {})
        msg = str(exc.value)
        assert all(p in msg for p in parts), msg
        assert "c.yaml" not in msg, msg  # the file is not to blame
    # the same typo in the file is still the file's
    f.write_text("tiles:\n  chip_pxx: 64\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c\.yaml.*chip_pxx"):
        load_job_config(DetectJob, argparse.Namespace(set=[], config=str(f)), {})
    # keys below a mapping-valued setting (named synthetic worlds) are not sections to check here
    args = argparse.Namespace(set=["train.synth_profiles.foo.haze=0.1", "train.data=['synth:10@foo']"], config=None)
    assert load_job_config(TrainJob, args, {}).train.synth_profiles["foo"]["haze"] == 0.1


def test_a_misspelt_key_in_a_config_file_gets_the_nearest_valid_key():
    from tiles.config import TilesConfig

    with pytest.raises(ConfigError, match=r"x\.yaml\.tiles: unknown key\(s\) chip_pix \(did you mean chip_px for chip_pix\?\); valid keys are: .*chip_px"):
        build_config(TilesConfig, {"chip_pix": 64}, where="x.yaml.tiles")
