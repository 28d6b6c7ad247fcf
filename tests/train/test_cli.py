"""CLI smoke test: ``sitewatch train`` on a tiny synthetic dataset, then ``sitewatch evaluate``."""

from __future__ import annotations

import json

import pytest

from sitewatch.cli import main

TINY = [
    "--set", "tiles.chip_px=32", "--set", "tiles.chip_size_m=24",
    "--set", "model.arch=siam-mobilenetv2-lite", "--set", "model.pretrained=false",
]
SYNTH = ["--set", "synth.size_px=512", "--set", "synth.max_sites_per_region=30"]


@pytest.mark.slow
def test_train_then_evaluate_on_synthetic_scenes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SITEWATCH_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    rc = main([
        "-q", "train", "--data", "synth:60", "--out", str(model), "--epochs", "2",
        *TINY, *SYNTH, "--set", "train.batch_size=16", "--set", "train.threads=1",
        "--set", "train.block_size_m=96",
    ])
    assert rc == 0
    meta = json.loads((model / "meta.json").read_text())
    assert meta["arch"] == "siam-mobilenetv2-lite" and meta["input_px"] == 32
    assert set(meta["operating_points"]) == {"screening", "evidence"}
    assert meta["train_config"]["data"] == ["synth:60"]
    assert len(json.loads((model / "train_log.json").read_text())["epochs"]) == 2
    # the cached synthetic scene is reused (same config): no second generation
    assert len(list((tmp_path / "cache" / "synth").iterdir())) == 1

    out = tmp_path / "eval"
    rc = main(["evaluate", "--model", str(model), "--data", "synth:60", "--out", str(out), *TINY[:4]])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "model    AUC" in printed and "baseline AUC" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model_metrics"]["n"] == metrics["baseline_metrics"]["n"] > 0
    assert 0.0 <= metrics["model_metrics"]["roc_auc"] <= 1.0
    for png in ("pr_curve.png", "reliability.png"):
        assert (out / png).stat().st_size > 1000
    assert (out / "scores.csv").read_text().startswith("site_id,group,damage,label,score")


def test_bad_arguments_are_usage_errors(tmp_path, capsys):
    # library errors name the setting; the CLI shows the flag that set it
    assert main(["train", "--data", "synth:x", "--out", str(tmp_path / "m")]) == 2
    assert "--data (train.data): synth:x: synth:N needs a whole number" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "--data (train.data):" in err and "no such folder" in err
    # the same setting from --set keeps its dotted name
    assert main(["train", "--set", "train.data=[synth:2]", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "train.data: synth:2: synth:N needs at least 4 sites" in err and "--data" not in err
    assert main(["evaluate", "--data", "synth:x"]) == 2
    assert "--data (evaluate.data): synth:x" in capsys.readouterr().err
    assert main(["evaluate", "--model", "default", "--data", "synth:10", "--set", "evaluate.operating_point=nope", "--out", str(tmp_path / "e")]) == 2
    assert "evaluate.operating_point: 'nope': model default has operating points: screening, evidence" in capsys.readouterr().err
    assert main(["evaluate", "--model", "default"]) == 2
    assert "no dataset" in capsys.readouterr().err
    assert main(["train", "--data", "synth:10", "--out", str(tmp_path / "m"), "--from", str(tmp_path / "none")]) == 2
    assert "--from" in capsys.readouterr().err
    assert main(["train", "--from-review", str(tmp_path / "no-run"), "--out", str(tmp_path / "m")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    # a run nobody has reviewed yet: said so, not 'sites file <cache>/sites.csv has no site rows'
    from tests.review.make_run import write_run

    unreviewed = write_run(tmp_path / "unreviewed", 6)
    assert main(["train", "--from-review", str(unreviewed), "--out", str(tmp_path / "m"),
                 "--set", f"train.cache_dir={tmp_path / 'cache'}"]) == 2
    err = capsys.readouterr().err
    assert f"--from-review {unreviewed}: no site of the run has a decided verdict yet" in err
    assert f"sitewatch review {unreviewed}" in err and "no site rows" not in err
    assert main(["evaluate", "--model", str(tmp_path / "none"), "--data", "synth:10"]) == 1
    assert "does not exist" in capsys.readouterr().err
