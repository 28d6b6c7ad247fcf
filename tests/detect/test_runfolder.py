"""The run folder contract (detect/runfolder.py) on a real run: typed rows and manifest, one
writer and one reader, the format version checked."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest

from detect.config import DetectConfig
from detect.run import run_detect
from detect.runfolder import (
    FORMAT_VERSION,
    PAIR_COLUMNS,
    Manifest,
    PerSite,
    PerSiteSpool,
    read_manifest,
    read_scores,
    read_scores_csv,
    write_json_atomic,
    write_manifest,
)
from sitewatch.errors import RunFolderError


@pytest.fixture(scope="module")
def run(tiny_scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("contract") / "run"
    return run_detect(tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], out, detect=DetectConfig(chips_top_n=3, batch_size=8), progress=False).run_dir


def test_typed_rows_match_the_text_exactly(run):
    rows = read_scores(run)
    text = read_scores_csv(run)
    assert [r.site_id for r in rows] == [t["site_id"] for t in text]
    for r, t in zip(rows, text):
        assert r.cells(6) == {k: v for k, v in t.items() if k in r.cells(6)}  # typed -> text gives the file back
        assert (r.score is None) == (t["score"] == "") and (r.rank or "") == (int(t["rank"]) if t["rank"] else "")
        assert r.flagged == (t["flagged"] == "true") and set(r.pair) == set(PAIR_COLUMNS)
    assert [r.rank for r in rows if r.ok] == list(range(1, sum(r.ok for r in rows) + 1))
    assert sum(1 for r in rows if r.chip_before) == 3 and rows[0].extra["note"].startswith("block <")


def test_manifest_round_trips_and_carries_its_version(run, tmp_path):
    manifest = read_manifest(run)
    raw = json.loads((run / "manifest.json").read_text())
    assert raw["format"] == "sitewatch-run" and raw["format_version"] == FORMAT_VERSION == manifest.format_version
    assert manifest.to_json() == raw  # every section named, nothing lost or added
    assert Manifest.from_json(manifest.to_json(), "x") == manifest
    assert manifest.counts.sites == len(read_scores(run)) and manifest.inputs.before[0].sha256 == raw["inputs"]["before"][0]["sha256"]
    copy = tmp_path / "copy"
    copy.mkdir()
    write_manifest(copy, manifest)
    assert (copy / "manifest.json").read_bytes() == (run / "manifest.json").read_bytes()  # the one writer


@pytest.mark.parametrize(
    "entries",
    [
        (),
        (PerSite("a", "ok", "before", "after", "2021-05-01T10:00:00Z", "2021-09-01T10:00:00Z"),),
        tuple(PerSite(f'id "{i}" \\ é \u2028 \x01', "cannot_assess", "", "s;t", "", "") for i in range(3)),
    ],
    ids=["none", "one", "odd text"],
)
def test_streamed_per_site_rows_are_the_bytes_json_dump_writes(run, tmp_path, entries):
    """write_manifest streams per_site (from a tuple or a PerSiteSpool) byte for byte as
    json.dump of the whole manifest object writes it."""
    manifest = replace(read_manifest(run), per_site=entries)
    write_json_atomic(tmp_path / "whole.json", manifest.to_json())
    expected = (tmp_path / "whole.json").read_bytes()
    spool = PerSiteSpool()
    for entry in entries:
        spool.add(entry)
    assert len(spool) == len(entries) and spool == entries and list(spool) == list(entries)
    assert list(zip(spool, spool)) == [(e, e) for e in entries]  # iterators do not share a position
    for name, per_site in (("tuple", entries), ("spool", spool)):
        (tmp_path / name).mkdir()
        write_manifest(tmp_path / name, replace(manifest, per_site=per_site))
        assert (tmp_path / name / "manifest.json").read_bytes() == expected
    assert read_manifest(tmp_path / "spool").per_site == entries
    spool.close()


def test_versions_and_sections_are_checked_naming_the_file(run, tmp_path):
    raw = json.loads((run / "manifest.json").read_text())
    cases = {
        "newer": ({**raw, "format_version": FORMAT_VERSION + 1}, "written by a newer sitewatch"),
        "missing": ({k: v for k, v in raw.items() if k != "counts"}, "section 'counts' is missing"),
        "mistyped": ({**raw, "operating_point": "screening"}, "section 'operating_point' must be an object"),
        "foreign": ({**raw, "format": "something-else"}, "not a sitewatch run manifest"),
    }
    for name, (data, message) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps(data))
        with pytest.raises(RunFolderError, match=message) as err:
            read_manifest(folder)
        assert str(folder / "manifest.json") in str(err.value), name
    legacy = {k: v for k, v in raw.items() if k != "format_version"} | {"format": "sitewatch-run/1"}
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "manifest.json").write_text(json.dumps(legacy))
    assert read_manifest(tmp_path / "v1").format_version == 1
    assert replace(read_manifest(tmp_path / "v1"), format_version=FORMAT_VERSION) == read_manifest(run)


def test_scores_reader_is_strict(run, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    with open(run / "scores.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    header = rows[0]
    drop = header.index("after_scene")
    with open(folder / "scores.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([r[:drop] + r[drop + 1 :] for r in rows])
    with pytest.raises(RunFolderError, match="missing column.*after_scene"):
        read_scores(folder)
    rows[1][header.index("score")] = "high"
    with open(folder / "scores.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(RunFolderError, match=r"line 2: column 'score' holds 'high'"):
        read_scores(folder)
