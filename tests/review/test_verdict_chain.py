"""The tamper-evident verdict store: a hash chain over every verdict, checked, migrated, exported."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

from review.store import VerdictStore
from review.verdict_chain import GENESIS_HASH, verify_verdict_chain
from sitewatch.errors import RunFolderError
from tests.review.conftest import LiveServer

#: the schema today's code (schema 1, before the chain) writes, verbatim.
SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    verdict TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL CHECK (kind IN ('review', 'adjudication')),
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS verdicts_by_site ON verdicts (site_id, id);
CREATE INDEX IF NOT EXISTS verdicts_by_reviewer ON verdicts (reviewer, site_id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    site_id TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE TRIGGER IF NOT EXISTS verdicts_no_update BEFORE UPDATE ON verdicts
BEGIN SELECT RAISE(ABORT, 'verdicts are append-only'); END;
CREATE TRIGGER IF NOT EXISTS verdicts_no_delete BEFORE DELETE ON verdicts
BEGIN SELECT RAISE(ABORT, 'verdicts are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


def _expected_head(path: Path) -> str:
    """The chain head computed here from the documented canonical form, independently of the code."""
    con = sqlite3.connect(path)
    rows = con.execute("SELECT id, site_id, reviewer, verdict, note, kind, created_at FROM verdicts ORDER BY id").fetchall()
    con.close()
    prev = "0" * 64
    for r in rows:
        content = dict(zip(("id", "site_id", "reviewer", "verdict", "note", "kind", "created_at"), r), prev_hash=prev)
        text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        prev = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return prev


def _three(path: Path) -> VerdictStore:
    store = VerdictStore(path)
    store.add_verdict("a", "alice", "destroyed", note="toit effondré")
    store.add_verdict("b", "bob", "no-damage")
    store.add_verdict("b", "lead", "destroyed", kind="adjudication", note="seen on the after scene")
    return store


def _tamper(path: Path, *sql: str) -> None:
    """Edit the store as someone with sqlite3 would: triggers dropped first."""
    con = sqlite3.connect(path)
    con.execute("DROP TRIGGER verdicts_no_update")
    con.execute("DROP TRIGGER verdicts_no_delete")
    con.execute("DROP TRIGGER audit_no_update")
    for statement in sql:
        con.execute(statement)
    con.commit()
    con.close()


def test_every_verdict_carries_the_hash_of_the_one_before(tmp_path: Path) -> None:
    path = tmp_path / "review.sqlite"
    store = _three(path)
    report = verify_verdict_chain(path)
    assert report.ok and report.verdicts == 3 and report.last_id == 3 and report.problems == ()
    assert report.head == _expected_head(path) != GENESIS_HASH
    assert store.chain_head() == (3, report.head)
    con = sqlite3.connect(path)
    rows = con.execute("SELECT prev_hash, row_hash FROM verdicts ORDER BY id").fetchall()
    con.close()
    assert rows[0][0] == GENESIS_HASH and rows[1][0] == rows[0][1] and rows[2][0] == rows[1][1]
    empty = verify_verdict_chain(VerdictStore(tmp_path / "empty.sqlite").path)
    assert empty.ok and (empty.verdicts, empty.head) == (0, GENESIS_HASH)


@pytest.mark.parametrize(
    "sql, broken, needle",
    [
        (["UPDATE verdicts SET verdict = 'destroyed' WHERE id = 2"], 2,
         "verdict 2 (site 'b', by 'bob', review at "),
        (["UPDATE verdicts SET note = 'x' WHERE id = 3"], 3, "verdict 3 (site 'b', by 'lead', adjudication at"),
        (["UPDATE verdicts SET reviewer = 'mallory' WHERE id = 1"], 1, "verdict 1 (site 'a', by 'mallory'"),
        (["UPDATE verdicts SET created_at = '2020-01-01T00:00:00.000+00:00' WHERE id = 1"], 1, "edited outside the app"),
        (["UPDATE verdicts SET kind = 'review' WHERE id = 3"], 3, "edited outside the app"),
        (["DELETE FROM verdicts WHERE id = 2"], 3, "verdict 3 (site 'b', by 'lead', adjudication at"),
        (["DELETE FROM verdicts WHERE id = 3"], 3, "verdict(s) 3 are in the audit log but not in the verdicts table"),
        (["INSERT INTO verdicts (site_id, reviewer, verdict, note, kind, created_at) "
          "VALUES ('c', 'eve', 'destroyed', '', 'review', '2026-01-01')"], 4, "verdict 4 (site 'c', by 'eve', review at 2026-01-01) has no hash"),
    ],
    ids=["verdict", "note", "reviewer", "time", "adjudication", "delete-middle", "delete-last", "insert"],
)
def test_a_verdict_changed_with_sqlite3_is_detected_and_named(tmp_path: Path, sql: list[str], broken: int, needle: str) -> None:
    path = tmp_path / "review.sqlite"
    _three(path)
    _tamper(path, *sql)
    report = VerdictStore(path).verify_chain()
    assert not report.ok and report.first_broken == broken
    assert any(needle in p for p in report.problems), report.problems
    if "UPDATE" in sql[0]:
        assert report.problems == (report.problems[0],) and "differs from what was recorded: it was edited outside the app" in report.problems[0]


def test_a_row_rewritten_with_its_own_hash_breaks_the_next_link(tmp_path: Path) -> None:
    from review.verdict_chain import verdict_hash

    path = tmp_path / "review.sqlite"
    _three(path)
    con = sqlite3.connect(path)
    row = con.execute("SELECT id, site_id, reviewer, verdict, note, kind, created_at, prev_hash FROM verdicts WHERE id = 2").fetchone()
    con.close()
    forged = verdict_hash(row[0], row[1], row[2], "destroyed", row[4], row[5], row[6], row[7])
    _tamper(path, f"UPDATE verdicts SET verdict = 'destroyed', row_hash = '{forged}' WHERE id = 2")
    report = verify_verdict_chain(path)
    assert report.first_broken == 3 and len(report.problems) == 1
    assert report.problems[0].startswith("verdict 3 (site 'b', by 'lead', adjudication at ")
    assert "does not follow the verdict before it" in report.problems[0]


def test_export_records_the_head_and_refuses_a_broken_chain(run_dir: Path, tmp_path: Path) -> None:
    from review.export import export_dataset

    store = VerdictStore.for_run(run_dir)
    store.add_verdict("s00000", "alice", "destroyed")
    store.add_verdict("s00001", "alice", "no-damage")
    out = export_dataset(run_dir, tmp_path / "dataset")
    record = json.loads((out / "export.json").read_text())
    head = verify_verdict_chain(store.path).head
    assert record["verdict_chain"] == {"verdicts": 2, "head": head, "last_verdict_id": 2}
    assert [e["detail"].get("verdict_chain", {}).get("head") for e in store.audit() if e["action"] == "export"] == [head]
    _tamper(store.path, "UPDATE verdicts SET verdict = 'destroyed' WHERE id = 2")
    with pytest.raises(RunFolderError, match="hash chain is broken.*verdict 2 \\(site 's00001'"):
        export_dataset(run_dir, tmp_path / "dataset2")


def test_the_app_shows_the_head_and_a_broken_chain(run_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from review.app import create_app
    from review.config import ReviewConfig

    store = VerdictStore.for_run(run_dir)
    store.add_verdict("s00000", "alice", "destroyed")
    client = TestClient(create_app(run_dir, ReviewConfig(rerank_every=0)))
    client.get("/queue?reviewer=ann")
    chain = client.get("/api/progress").json()["verdict_chain"]
    assert chain["verdicts"] == 1 and chain["head"] == verify_verdict_chain(store.path).head and chain["intact_at_start"]
    assert chain["head"] in client.get("/progress").text
    _tamper(store.path, "UPDATE verdicts SET note = 'changed' WHERE id = 1")
    client = TestClient(create_app(run_dir, ReviewConfig(rerank_every=0)))
    client.get("/queue?reviewer=ann")
    page = client.get("/progress").text
    assert 'id="chain-broken"' in page and "verdict 1 (site &#39;s00000&#39;, by &#39;alice&#39;" in page
    assert client.get("/api/progress").json()["verdict_chain"]["intact_at_start"] is False


def _old_store(path: Path) -> None:
    """A store as today's code writes it: schema 1, three verdicts with their audit entries."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(SCHEMA_1)
    con.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1')")
    for site, who, verdict in (("a", "alice", "destroyed"), ("b", "bob", "no-damage"), ("a", "bob", "destroyed")):
        cur = con.execute(
            "INSERT INTO verdicts (site_id, reviewer, verdict, note, kind, created_at) VALUES (?, ?, ?, '', 'review', ?)",
            (site, who, verdict, "2026-01-01T00:00:00.000+00:00"),
        )
        con.execute("INSERT INTO audit (at, actor, action, site_id, detail) VALUES (?, ?, 'review', ?, ?)",
                    ("2026-01-01T00:00:00.000+00:00", who, site, json.dumps({"verdict_id": cur.lastrowid})))
    con.close()


def test_a_store_from_before_the_chain_gets_it_on_first_open(tmp_path: Path) -> None:
    path = tmp_path / "review.sqlite"
    _old_store(path)
    before = verify_verdict_chain(path)
    assert not before.ok and not before.chained and before.verdicts == 3 and "open it once" in before.problems[0]
    store = VerdictStore(path)
    report = store.verify_chain()
    assert report.ok and report.verdicts == 3 and report.head == _expected_head(path)
    built = [e for e in store.audit() if e["action"] == "chain_built"]
    assert len(built) == 1 and built[0]["detail"] == {"verdicts": 3, "head": report.head, "schema_from": "1", "schema_to": "3"}
    VerdictStore(path)  # opening again builds nothing more
    assert [e["action"] for e in store.audit()].count("chain_built") == 1
    store.add_verdict("b", "carol", "destroyed")
    assert store.verify_chain().ok and store.verify_chain().verdicts == 4
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "3"
    for sql in ("UPDATE verdicts SET verdict = 'x'", "DELETE FROM verdicts", "UPDATE audit SET actor = 'x'"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute(sql)
    con.close()


def test_fifty_concurrent_reviewers_lose_nothing_and_keep_the_chain(live_server: LiveServer, run_dir: Path) -> None:
    n_clients, per_client = 50, 2
    barrier = threading.Barrier(n_clients)
    errors: list[str] = []

    def reviewer(k: int) -> None:
        with httpx.Client(base_url=live_server.url, timeout=60) as c:
            c.get(f"/queue?reviewer=r{k}")
            csrf = c.cookies.get("sw_csrf")
            barrier.wait()
            for j in range(per_client):
                r = c.post(f"/site/{(k + j) % 11}/verdict", data={"verdict": "destroyed", "note": f"r{k}-{j}", "csrf": csrf},
                           headers={"accept": "application/json"})
                if r.status_code != 200 or not r.json().get("ok"):
                    errors.append(f"{r.status_code} {r.text}")

    threads = [threading.Thread(target=reviewer, args=(k,)) for k in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = VerdictStore.for_run(run_dir)
    assert {v.note for v in store.verdicts()} == {f"r{k}-{j}" for k in range(n_clients) for j in range(per_client)}
    report = store.verify_chain()
    assert report.ok and report.verdicts == n_clients * per_client == report.last_id
