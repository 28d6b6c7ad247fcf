"""Reviewers' marks on a facility's parts: stored with the verdict, inside the hash chain,
migrated into old stores, summarised, exported, posted from the site page."""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from review.app import create_app
from review.config import ReviewConfig
from review.consensus import summarise
from review.export import export_dataset
from review.store import SCHEMA_VERSION, Verdict, VerdictStore, clean_parts
from review.verdict_chain import GENESIS_HASH, verdict_hash, verify_verdict_chain
from sitewatch.errors import InputError
from tiles.formula_injection import restore_formula
from tests.review.listed_outputs import record_outputs
from tests.review.make_run import write_run
from tests.review.test_verdict_chain import SCHEMA_1, _old_store, _tamper

PARTS = [f"p{i:02d}" for i in range(9)]
#: site 1 of the run is a hospital whose north-east block (p02) scored high, alone in its surroundings
FACILITY = ([0.02, 0.05, 0.91, 0.6, "cloud", 0.03, 0.01, 0.02, 0.04], [0.01] * 11 + [0.7])
#: site 2: the whole neighbourhood is damaged too
AREA = ([0.7, 0.8, 0.9, 0.6, 0.7, 0.65, 0.8, 0.75, 0.6], [0.8] * 10 + [0.1, 0.2])


@pytest.fixture()
def facility_run(tmp_path: Path) -> Path:
    return record_outputs(write_run(tmp_path / "run", 12, facilities={1: FACILITY, 2: AREA}, threshold=0.3))


def _documented_hash(row: tuple, prev: str) -> str:
    """The chain's canonical form (review.verdict_chain's module doc), computed here independently."""
    keys = ("id", "site_id", "reviewer", "verdict", "note", "kind", "created_at")
    content = dict(zip(keys, row[:7]), prev_hash=prev)
    if row[7]:
        content["damaged_parts"] = row[7]
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_part_marks_are_stored_in_plan_order_and_hashed(tmp_path: Path) -> None:
    path = tmp_path / "review.sqlite"
    store = VerdictStore(path)
    v = store.add_verdict("H", "ann", "destroyed", damaged_parts=["p05", "p02", "p05"], known_parts=PARTS)
    assert v.damaged_parts == ("p02", "p05")
    store.add_verdict("H", "ben", "major-damage")  # marks are optional
    assert [x.damaged_parts for x in store.verdicts("H")] == [("p02", "p05"), ()]
    audit = [e for e in store.audit() if e["action"] == "review"]
    assert audit[0]["detail"]["damaged_parts"] == ["p02", "p05"] and "damaged_parts" not in audit[1]["detail"]
    con = sqlite3.connect(path)
    rows = con.execute(
        "SELECT id, site_id, reviewer, verdict, note, kind, created_at, damaged_parts, prev_hash, row_hash FROM verdicts ORDER BY id"
    ).fetchall()
    con.close()
    assert rows[0][7] == "p02,p05" and rows[1][7] == ""
    prev = GENESIS_HASH
    for row in rows:
        assert row[8] == prev and row[9] == _documented_hash(row, prev)
        prev = row[9]
    # a verdict without marks hashes exactly as before part marks existed
    assert rows[1][9] == verdict_hash(*rows[1][:7], rows[1][8])
    report = verify_verdict_chain(path)
    assert report.ok and report.head == prev


def test_part_marks_are_checked_against_the_sites_parts(tmp_path: Path) -> None:
    store = VerdictStore(tmp_path / "review.sqlite")
    with pytest.raises(InputError, match=r"site H: p12 not among its parts \(p00, p01"):
        store.add_verdict("H", "ann", "destroyed", damaged_parts=["p12"], known_parts=PARTS)
    with pytest.raises(InputError, match="not among its parts \\(none\\)"):
        store.add_verdict("house", "ann", "destroyed", damaged_parts=["p00"], known_parts=())
    with pytest.raises(InputError, match="is not a part id"):
        store.add_verdict("H", "ann", "destroyed", damaged_parts=["p1;DROP TABLE"], known_parts=PARTS)
    with pytest.raises(InputError, match="site H: parts p02, p03 are marked damaged but the verdict is no-damage"):
        store.add_verdict("H", "ann", "no-damage", damaged_parts=["p03", "p02"], known_parts=PARTS)
    assert store.verdicts() == []  # nothing half-written
    assert clean_parts(["p10", "p02"]) == "p10,p02" and clean_parts(["p10", "p02"], PARTS + ["p10"]) == "p02,p10"


@pytest.mark.parametrize(
    "sql, needle",
    [
        ("UPDATE verdicts SET damaged_parts = 'p03' WHERE id = 1", "verdict 1 (site 'H', by 'ann'"),
        ("UPDATE verdicts SET damaged_parts = '' WHERE id = 1", "verdict 1 (site 'H', by 'ann'"),
        ("UPDATE verdicts SET damaged_parts = 'p00' WHERE id = 2", "verdict 2 (site 'H', by 'ben'"),
    ],
    ids=["changed", "removed", "added"],
)
def test_an_edited_part_mark_breaks_the_chain(tmp_path: Path, sql: str, needle: str) -> None:
    path = tmp_path / "review.sqlite"
    store = VerdictStore(path)
    store.add_verdict("H", "ann", "destroyed", damaged_parts=["p02"], known_parts=PARTS)
    store.add_verdict("H", "ben", "destroyed")
    assert store.verify_chain().ok
    _tamper(path, sql)
    report = verify_verdict_chain(path)
    assert not report.ok and any(needle in p and "edited outside the app" in p for p in report.problems), report.problems


SCHEMA_2_COLUMNS = "ALTER TABLE verdicts ADD COLUMN prev_hash TEXT; ALTER TABLE verdicts ADD COLUMN row_hash TEXT;"


def _schema_2_store(path: Path) -> str:
    """A store as the code before part marks wrote it (schema 2: chained, no damaged_parts); returns its head."""
    con = sqlite3.connect(path, isolation_level=None)
    con.executescript(SCHEMA_1.replace("CREATE TRIGGER IF NOT EXISTS verdicts_no_update", "CREATE TRIGGER IF NOT EXISTS x_unused"))
    con.executescript(SCHEMA_2_COLUMNS)
    con.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '2')")
    prev = GENESIS_HASH
    for i, (site, who, verdict) in enumerate((("a", "alice", "destroyed"), ("b", "bob", "no-damage")), start=1):
        row = (i, site, who, verdict, "", "review", "2026-01-01T00:00:00.000+00:00")
        row_hash = verdict_hash(*row, prev)
        con.execute("INSERT INTO verdicts (id, site_id, reviewer, verdict, note, kind, created_at, prev_hash, row_hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (*row, prev, row_hash))
        con.execute("INSERT INTO audit (at, actor, action, site_id, detail) VALUES (?, ?, 'review', ?, ?)",
                    (row[6], who, site, json.dumps({"verdict_id": i})))
        prev = row_hash
    con.close()
    return prev


def test_a_store_from_before_part_marks_opens_and_keeps_its_chain(tmp_path: Path) -> None:
    path = tmp_path / "review.sqlite"
    head = _schema_2_store(path)
    before = verify_verdict_chain(path)  # the checker reads the old file as it is
    assert before.ok and before.head == head
    store = VerdictStore(path)
    con = sqlite3.connect(path)
    assert "damaged_parts" in {r[1] for r in con.execute("PRAGMA table_info(verdicts)")}
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == SCHEMA_VERSION == "3"
    con.close()
    after = store.verify_chain()
    assert after.ok and after.head == head and after.verdicts == 2  # old verdicts hash as before
    assert [v.damaged_parts for v in store.verdicts()] == [(), ()]
    upgraded = [e for e in store.audit() if e["action"] == "schema_upgraded"]
    assert len(upgraded) == 1 and upgraded[0]["detail"] == {
        "added": "verdicts.damaged_parts", "verdicts": 2, "schema_from": "2", "schema_to": "3"}
    VerdictStore(path)  # opening again changes nothing
    assert [e["action"] for e in store.audit()].count("schema_upgraded") == 1
    store.add_verdict("a", "carol", "destroyed", damaged_parts=["p01"], known_parts=PARTS)
    assert store.verify_chain().ok and store.verify_chain().verdicts == 3


def test_a_store_from_before_the_chain_gets_chain_and_part_marks(tmp_path: Path) -> None:
    path = tmp_path / "review.sqlite"
    _old_store(path)
    store = VerdictStore(path)
    actions = [e["action"] for e in store.audit()]
    assert actions.count("chain_built") == 1 and actions.count("schema_upgraded") == 1
    store.add_verdict("a", "dan", "destroyed", damaged_parts=["p00"], known_parts=PARTS)
    assert store.verify_chain().ok and store.verdicts()[-1].damaged_parts == ("p00",)


def test_import_from_another_run_keeps_the_marks(tmp_path: Path) -> None:
    old = VerdictStore(tmp_path / "old.sqlite")
    old.add_verdict("H", "ann", "destroyed", damaged_parts=["p02", "p03"], known_parts=PARTS)
    new = VerdictStore(tmp_path / "new.sqlite")
    assert new.import_from(old, {"H"}) == 1
    assert new.verdicts()[0].damaged_parts == ("p02", "p03") and new.verify_chain().ok


def _v(i: int, who: str, verdict: str, parts: tuple[str, ...] = (), kind: str = "review") -> Verdict:
    return Verdict(i, "H", who, verdict, "", kind, f"2026-01-01T00:00:{i:02d}", parts)


def test_decided_damaged_parts() -> None:
    # more than half of the reviewers who marked parts; a reviewer without marks does not count
    c = summarise([_v(1, "ann", "destroyed", ("p02", "p03")), _v(2, "ben", "destroyed", ("p02",)),
                   _v(3, "cat", "destroyed", ("p02", "p05")), _v(4, "dan", "destroyed")])["H"]
    assert c.damaged_parts == ("p02",)
    assert c.part_marks == (("ann", ("p02", "p03")), ("ben", ("p02",)), ("cat", ("p02", "p05")))
    # a reviewer's latest review counts; an adjudication's marks win
    c = summarise([_v(1, "ann", "destroyed", ("p02",)), _v(2, "ann", "destroyed", ("p10", "p03"))])["H"]
    assert c.damaged_parts == ("p03", "p10")
    c = summarise([_v(1, "ann", "destroyed", ("p02",)), _v(2, "ben", "no-damage"),
                   _v(3, "lead", "major-damage", ("p04",), kind="adjudication")])["H"]
    assert c.damaged_parts == ("p04",) and c.adjudicated_parts == ("p04",)
    assert summarise([_v(1, "ann", "destroyed")])["H"].damaged_parts == ()


def test_export_carries_the_part_marks_and_stays_trainable(facility_run: Path, tmp_path: Path) -> None:
    from tiles.sites import read_sites

    store = VerdictStore.for_run(facility_run)
    store.add_verdict("s00001", "ann", "destroyed", damaged_parts=["p02", "p03"], known_parts=PARTS)
    store.add_verdict("s00001", "ben", "destroyed", damaged_parts=["p02"], known_parts=PARTS)
    store.add_verdict("s00000", "ann", "no-damage")
    out = export_dataset(facility_run, tmp_path / "dataset")
    with (out / "sites.csv").open(newline="", encoding="utf-8") as fh:
        rows = {r["site_id"]: r for r in csv.DictReader(fh)}
    assert rows["s00001"]["damaged_parts"] == "p02" and rows["s00001"]["part_marks"] == "ann=p02,p03;ben=p02"
    assert rows["s00000"]["damaged_parts"] == "" and rows["s00000"]["part_marks"] == ""
    # the parts' geometry travels with the marks (a leading "-" is kept from running as a formula)
    assert restore_formula(rows["s00001"]["part_centres_m"]).startswith("-48.0,48.0;0.0,48.0;48.0,48.0")
    sites = {s.site_id: s for s in read_sites(out / "sites.csv")}
    assert sites["s00001"].damage == "destroyed" and sites["s00000"].damage == "no-damage"
    # the training stage cuts the exported facility like any labelled site
    from sitewatch.config import build_config
    from tiles.config import TilesConfig
    from train.datasets import cut_labelled_folder

    tiles = build_config(TilesConfig, {"chip_px": 16, "chip_size_m": 16.0, "coregister": False})
    pairs = cut_labelled_folder(out, tiles, name="review", data_hash="x", progress=False)
    assert dict(zip(pairs.site_ids, pairs.labels.tolist())) == {"s00000": 0, "s00001": 1}


def _client(run_dir: Path, reviewer: str = "ann") -> TestClient:
    client = TestClient(create_app(run_dir, ReviewConfig(rerank_every=0)))
    assert client.get(f"/queue?reviewer={reviewer}").status_code == 200
    return client


def test_site_page_shows_parts_and_posts_marks(facility_run: Path) -> None:
    client = _client(facility_run)
    page = client.get("/site/1").text
    assert page.count('class="parts"') == 3  # before, after, swipe
    assert page.count('data-part="p02"') == 4 and 'class="part top"' in page  # 3 boxes + its tick box
    assert '<title>p04: cloud (not assessed)</title>' in page and "p02 ▲" in page
    assert 'id="part-p02"' in page and 'name="part:p02"' in page
    assert "2 of 12 surrounding chips flagged (17%)" not in page  # 0.7 only: 1 of 12
    assert "1 of 12 surrounding chips flagged (8%)" in page
    assert "hit alone (targeted): damaged while its surroundings are not" in page
    area = client.get("/site/2").text
    assert "10 of 12 surrounding chips flagged (83%)" in area
    assert "not targeted: damaged along with its surroundings (area damage)" in area
    # a house looks as before: no parts, no facility section, no parts column
    house = client.get("/site/0").text
    assert 'class="parts"' not in house and 'id="facility"' not in house and "parts marked damaged" not in house
    data = {"verdict": "destroyed", "csrf": client.cookies.get("sw_csrf"), "part:p02": "on", "part:p03": "on"}
    r = client.post("/site/1/verdict", data=data, headers={"accept": "application/json"})
    assert r.status_code == 200 and r.json()["ok"], r.text
    assert VerdictStore.for_run(facility_run).verdicts("s00001")[-1].damaged_parts == ("p02", "p03")
    again = client.get("/site/1").text  # the reviewer's marks are ticked, and in the history
    assert 'id="part-p02" value="on" checked' in again and 'id="part-p00" value="on">' in again
    assert '<td class="marked-parts">p02, p03</td>' in again
    bad = client.post("/site/0/verdict", data={**data, "verdict": "destroyed"}, headers={"accept": "application/json"})
    assert bad.status_code == 400 and "not among its parts (none)" in bad.json()["error"]
    bad = client.post("/site/1/verdict", data={"verdict": "destroyed", "csrf": data["csrf"], "damaged_parts": "p09"},
                      headers={"accept": "application/json"})
    assert bad.status_code == 400 and "p09 not among its parts" in bad.json()["error"]

