"""Known-answer tests of the parts of detect that need no model or raster."""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pytest

from detect.agreement import precision_at_k, roc_auc
from detect.journal import BatchRecord, JournalWriter, RunKeyStore, check_fingerprint, read_journal, scan_journal
from detect.runfolder import read_scores_csv, score_columns, write_embeddings, write_scores_csv, write_scores_geojson
from detect.provenance import MANIFEST_FORMAT, hash_outputs, sha256_file, write_json_atomic
from detect.verify import verify_run
from detect.ranking import OperatingPoint, rank_rows, resolve_operating_point
from detect.report import render_report, summarise_rows
from sitewatch.errors import RunFolderError, UsageError


def _record(batch: int, ids: list[str], dim: int = 4) -> BatchRecord:
    rows = tuple({"site_id": s, "status": "ok", "score": f"{0.1 * (i + 1):.6f}", "reason": ""} for i, s in enumerate(ids))
    emb = np.arange(len(ids) * dim, dtype=np.float32).reshape(len(ids), dim).astype(np.float16)
    return BatchRecord(batch=batch, rows=rows, embedding_ids=tuple(ids), embeddings=emb)


def test_journal_roundtrip_and_torn_tail(tmp_path):
    path = tmp_path / "journal.jsonl"
    keys = RunKeyStore(tmp_path / "keys")
    with JournalWriter(path, {"fingerprint": "abc", "components": {"sites": "1"}}, keys=keys) as w:
        w.append(_record(0, ["a", "b"]))
        w.append(_record(1, ["c"]))
    header, records, end = read_journal(path, keys)
    assert header["fingerprint"] == "abc"
    assert sorted(records) == [0, 1]
    assert records[0].rows[1]["site_id"] == "b"
    np.testing.assert_array_equal(records[0].embeddings, _record(0, ["a", "b"]).embeddings)
    assert end == path.stat().st_size
    # a torn half line after a kill is ignored, then cut off when appending resumes
    key = keys.get(header["key_id"])
    with open(path, "ab") as fh:
        fh.write(_record(2, ["d"]).to_json(key).encode()[:40])
    header, records, end2 = read_journal(path, keys)
    assert sorted(records) == [0, 1] and end2 == end
    with JournalWriter(path, header, truncate_at=end2, keys=keys) as w:
        w.append(_record(2, ["d"]))
    _, records, _ = read_journal(path, keys)
    assert sorted(records) == [0, 1, 2]


def test_journal_checksum_rejects_edited_line(tmp_path):
    path = tmp_path / "journal.jsonl"
    keys = RunKeyStore(tmp_path / "keys")
    with JournalWriter(path, {"fingerprint": "x", "components": {}}, keys=keys) as w:
        w.append(_record(0, ["a"]))
    text = path.read_text().replace('"a"', '"z"')
    path.write_text(text)
    _, records, _ = read_journal(path, keys)
    assert records == {}


def _old_checksum_line(payload: dict) -> str:
    """A journal line whose checksum an editor re-computed (the unkeyed SHA-256 the journal used before)."""
    import hashlib

    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    sha = hashlib.sha256(body.encode("utf-8")).hexdigest()
    return json.dumps({"sha": sha[:16], "mac": sha, "record": payload}, ensure_ascii=False, separators=(",", ":"))


def test_journal_edited_with_recomputed_checksum_is_refused(tmp_path, caplog):
    path = tmp_path / "journal.jsonl"
    keys = RunKeyStore(tmp_path / "keys")
    with JournalWriter(path, {"fingerprint": "x", "components": {}}, keys=keys) as w:
        w.append(_record(0, ["a"]))
        w.append(_record(1, ["b"]))
    lines = path.read_text().splitlines()
    outer = json.loads(lines[2])
    outer["record"]["rows"][0]["score"] = "0.000001"
    lines[2] = _old_checksum_line(outer["record"])
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level("WARNING"):
        index = scan_journal(path, keys)
    assert sorted(index.batches) == [0] and "edited outside sitewatch" in index.refused
    assert "scored again" in caplog.text
    # the header too: an edited fingerprint with the rest intact is refused as a whole
    header = json.loads(lines[0])
    header["fingerprint"] = "forged"
    path.write_text(json.dumps(header, sort_keys=True) + "\n" + lines[1] + "\n")
    index = scan_journal(path, keys)
    assert index.header is None and index.batches == {} and "header" in index.refused
    # a journal whose key is not in the store (copied from elsewhere) is not trusted either
    with JournalWriter(path, {"fingerprint": "x", "components": {}}, keys=keys) as w:
        w.append(_record(0, ["a"]))
    other = scan_journal(path, RunKeyStore(tmp_path / "other-keys"))
    assert other.header is None and "not in the key store" in other.refused
    assert (tmp_path / "keys").stat().st_mode & 0o077 == 0


def test_fingerprint_mismatch_names_the_part(tmp_path):
    check_fingerprint(None, {"sites": "1"}, tmp_path)
    check_fingerprint({"components": {"sites": "1", "model": "m"}}, {"sites": "1", "model": "m"}, tmp_path)
    with pytest.raises(RunFolderError, match="different model.*--overwrite"):
        check_fingerprint({"components": {"sites": "1", "model": "m"}}, {"sites": "1", "model": "n"}, tmp_path)


def test_operating_points():
    points = {"screening": 0.2, "evidence": 0.8}
    assert resolve_operating_point("evidence", points).threshold == 0.8
    assert resolve_operating_point("0.65", points) == OperatingPoint("custom", 0.65, "given as a probability")
    with pytest.raises(UsageError, match="evidence, screening"):
        resolve_operating_point("strict", points)
    with pytest.raises(UsageError, match="between 0 and 1"):
        resolve_operating_point("1.5", points)
    fallback = resolve_operating_point("screening", {})
    assert fallback.threshold == 0.5 and "fallback" in fallback.source


def test_rank_rows_orders_ties_by_site_id_and_puts_cannot_assess_last():
    rows = [
        {"site_id": "c", "status": "ok", "score": "0.500000"},
        {"site_id": "x", "status": "cannot_assess", "score": "", "reason": "outside_after_coverage"},
        {"site_id": "a", "status": "ok", "score": "0.500000"},
        {"site_id": "b", "status": "ok", "score": "0.900000"},
        {"site_id": "w", "status": "cannot_assess", "score": "", "reason": "invalid_site"},
        {"site_id": "d", "status": "ok", "score": "0.100000"},
    ]
    ranked = rank_rows(rows, OperatingPoint("t", 0.5, "test"))
    assert [r["site_id"] for r in ranked] == ["b", "a", "c", "d", "w", "x"]
    assert [r["rank"] for r in ranked] == ["1", "2", "3", "4", "", ""]
    assert [r["flagged"] for r in ranked] == ["true", "true", "true", "false", "false", "false"]
    # input order does not matter
    assert rank_rows(list(reversed(rows)), OperatingPoint("t", 0.5, "test")) == ranked


def test_scores_files(tmp_path):
    rows = [
        {"site_id": "a", "lon": "10.5", "lat": "-3.25", "score": "0.900000", "rank": "1", "status": "ok", "reason": "", "flagged": "true", "note": 'say "hi", <b>'},
        {"site_id": "b", "lon": "", "lat": "", "score": "", "rank": "", "status": "cannot_assess", "reason": "invalid_site", "flagged": "false"},
    ]
    columns = score_columns(rows)
    assert columns[:8] == ["site_id", "lon", "lat", "score", "rank", "status", "reason", "flagged"]
    assert columns[-3:] == ["chip_before", "chip_after", "chip_heatmap"] and "note" in columns
    write_scores_csv(tmp_path / "s.csv", rows, columns)
    back = read_scores_csv(tmp_path / "s.csv")
    assert back[0]["note"] == 'say "hi", <b>' and back[1]["chip_after"] == ""
    write_scores_geojson(tmp_path / "s.geojson", rows, columns)
    gj = json.loads((tmp_path / "s.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == 2
    assert gj["features"][0]["geometry"] == {"type": "Point", "coordinates": [10.5, -3.25]}
    assert gj["features"][0]["properties"]["score"] == 0.9 and gj["features"][0]["properties"]["rank"] == 1
    assert gj["features"][1]["geometry"] is None


def test_embeddings_npz_is_byte_identical_and_loadable(tmp_path):
    emb = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float16)
    write_embeddings(tmp_path / "a.npz", ["x", "y", "z"], emb)
    write_embeddings(tmp_path / "b.npz", ["x", "y", "z"], emb)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as data:
        assert list(data["site_id"]) == ["x", "y", "z"]
        assert data["embedding"].dtype == np.float16 and data["embedding"].shape == (3, 5)
    assert zipfile.is_zipfile(tmp_path / "a.npz")


def test_roc_auc_known_answers():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert roc_auc([0, 1, 0, 1], [0.1, 0.4, 0.5, 0.8]) == 0.75
    assert math.isnan(roc_auc([1, 1], [0.1, 0.2]))
    assert precision_at_k([1, 0, 1, 1], 2) == 0.5


def test_report_escapes_input_text():
    rows = [
        {"site_id": "<script>alert(1)</script>", "name": "A & B <i>", "kind": "school", "lon": "1.0", "lat": "2.0", "score": "0.9", "rank": "1", "status": "ok", "reason": "", "flagged": "true", "chip_before": "chips/x_before.png", "chip_after": "chips/x_after.png", "chip_heatmap": "chips/x_heatmap.png"},
        {"site_id": "z", "lon": "", "lat": "", "score": "", "rank": "", "status": "cannot_assess", "reason": "<bad>", "flagged": "false"},
    ]
    page = render_report(
        summarise_rows(rows),
        operating_point=OperatingPoint("screening", 0.3, "model calibration"),
        model_info={"arch": "a", "weights_sha256": "f" * 64, "path": "/m"},
        run_info={"sites_file": "s.csv", "before": 1, "after": 1},
    )
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "A &amp; B &lt;i&gt;" in page and "&lt;bad&gt;" in page
    assert 'src="chips/x_heatmap.png"' in page and "openstreetmap.org/?mlat=2.000000&amp;mlon=1.000000" in page
    assert "<svg" in page and "cannot assess</th><td>1" in page


def _fake_run(tmp_path):
    run = tmp_path / "run"
    (run / "chips").mkdir(parents=True)
    (run / "scores.csv").write_text("site_id\na\n")
    (run / "chips" / "a_before.png").write_bytes(b"png")
    raster = tmp_path / "in.tif"
    raster.write_bytes(b"raster bytes")
    manifest = {
        "format": MANIFEST_FORMAT,
        "inputs": {"sites": {"path": str(raster), "sha256": sha256_file(raster)}, "before": [], "after": []},
        "model": {"files": []},
        "outputs": hash_outputs(run),
    }
    write_json_atomic(run / "manifest.json", manifest)
    return run, raster


def test_verify_reports_changed_missing_and_added_files(tmp_path):
    run, raster = _fake_run(tmp_path)

    def files(report):
        return {(d.kind, d.path, d.problem) for d in report.differences if d.kind != "manifest"}

    # a manifest with only hashes is not a run manifest: its missing sections are findings
    first = verify_run(run)
    assert files(first) == set() and not first.ok
    missing = {d.path for d in first.differences if d.kind == "manifest"}
    assert {"manifest.json: inputs.before", "manifest.json: model.weights_sha256", "manifest.json: counts.sites"} <= missing
    (run / "review.sqlite").write_bytes(b"verdicts")  # written later by the review app: not a difference
    assert files(verify_run(run)) == set()
    (run / "scores.csv").write_text("site_id\nb\n")
    (run / "chips" / "a_before.png").unlink()
    (run / "chips" / "extra.png").write_bytes(b"x")
    raster.write_bytes(b"other bytes")
    assert files(verify_run(run)) == {
        ("output", "scores.csv", "changed"),
        ("output", "chips/a_before.png", "missing"),
        ("output", "chips/extra.png", "added"),
        ("input", str(raster), "changed"),
    }
    assert {d.kind for d in verify_run(run, check_inputs=False).differences} == {"output", "manifest"}


def test_verify_needs_a_manifest(tmp_path):
    with pytest.raises(RunFolderError, match="manifest.json"):
        verify_run(tmp_path)


def test_top_chip_cache_keeps_the_best_in_scores_csv_order():
    from detect.site_chips import ChipImages, TopChipCache

    img = ChipImages(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.float32))
    cache = TopChipCache(3)
    for score, sid in [(0.1, "a"), (0.9, "b"), (0.5, "d"), (0.5, "c"), (0.2, "e"), (0.5, "e2")]:
        cache.offer(score, sid, img)
    # top 3 by (score desc, site_id asc): b, c, d  (e2 ties at 0.5 but sorts after c and d)
    assert sorted(cache.images()) == ["b", "c", "d"]
    assert not cache.wants(0.5, "z") and cache.wants(0.5, "a0")
    assert TopChipCache(0).images() == {} and not TopChipCache(0).wants(1.0, "x")
    everything = TopChipCache(-1)
    for i in range(5):
        everything.offer(0.1, str(i), img)
    assert len(everything.images()) == 5


def test_score_batch_isolates_empty_chips_and_mixed_shapes():
    """Pairs of two sizes are scored in separate groups by the real default model; NaN chips
    become cannot_assess; other statuses pass through unscored."""
    from detect.pipeline import EMPTY_CHIP, score_batch
    from models.inference import Scorer
    from tiles.types import Pair, PairMeta, Site

    def pair(sid, size, value):
        image = np.full((2, 3, size, size), 0.4, np.float32)
        image[1] = value
        return Pair(Site(sid, 1.0, 2.0), PairMeta(sid, "ok"), image, np.ones((2, size, size), bool))

    bad = pair("nan", 32, 0.5)
    bad.image[1, 0, 0, 0] = np.nan
    pairs = [pair("a", 32, 0.8), pair("b", 48, 0.2), bad, Pair(Site("c", 1.0, 2.0), PairMeta("c", "cannot_assess", "cloud"))]
    scorer = Scorer("default", device="cpu")
    record = score_batch(3, pairs, scorer, decimals=6)
    rows = {r["site_id"]: r for r in record.rows}
    alone = scorer.score(pairs[1].image[None]).prob[0]
    assert 0.0 <= float(rows["a"]["score"]) <= 1.0
    assert rows["b"]["score"] == f"{alone:.6f}"  # scored on its own shape, same as alone
    assert (rows["nan"]["status"], rows["nan"]["reason"], rows["nan"]["score"]) == ("cannot_assess", EMPTY_CHIP, "")
    assert (rows["c"]["status"], rows["c"]["reason"], rows["c"]["score"]) == ("cannot_assess", "cloud", "")
    assert record.embedding_ids == ("a", "b") and record.embeddings.dtype == np.float16
    assert record.embeddings.shape[0] == 2


def test_journal_with_deferred_inputs_trusts_only_invocations_that_recorded_them(tmp_path):
    """Issue 12: the rasters are hashed while scoring; a batch counts on resume only when the
    invocation that scored it also recorded the inputs' full hashes."""
    from detect.journal import check_recorded_inputs

    path = tmp_path / "journal.jsonl"
    keys = RunKeyStore(tmp_path / "keys")
    header = {"fingerprint": "q", "components": {"before": "quick:1"}, "deferred": ["before"]}
    hashes = {"before": [["b", "/data/b.tif", "aa"]]}
    # first invocation: killed before its inputs were hashed -> its batches are not trusted
    with JournalWriter(path, header, keys=keys) as w:
        w.append(_record(0, ["a"]))
        w.append(_record(1, ["b"]))
    index = scan_journal(path, keys)
    assert index.batches == {} and index.untrusted == 2 and index.inputs == ()
    # second invocation (resumed): scores batch 0 again, records the hashes, then batch 2
    with JournalWriter(path, index.header, truncate_at=index.good_end, keys=keys, resumed={"started": "t"}) as w:
        w.append(_record(0, ["a"]))
        w.append_note("inputs", hashes)
        w.append(_record(2, ["c"]))
    index = scan_journal(path, keys)
    assert sorted(index.batches) == [0, 2] and index.inputs == (hashes,) and index.untrusted == 1
    lines = path.read_text().splitlines()
    assert [next(k for k in ("record", "inputs", "resumed", "journal") if k in json.loads(line)) for line in lines] == [
        "journal", "record", "record", "resumed", "record", "inputs", "record",
    ]
    # the same hashes pass; another SHA-256 of the same file stops the run, naming the file
    check_recorded_inputs(index.inputs, hashes, tmp_path)
    with pytest.raises(RunFolderError, match=r"before input /data/b\.tif has other bytes"):
        check_recorded_inputs(index.inputs, {"before": [["b", "/data/b.tif", "bb"]]}, tmp_path)
    # an edited inputs line is refused like an edited batch (and what follows it is not trusted)
    lines[5] = lines[5].replace('"aa"', '"bb"')
    path.write_text("\n".join(lines) + "\n")
    index = scan_journal(path, keys)
    assert "edited outside sitewatch" in index.refused and index.batches == {} and index.inputs == ()
