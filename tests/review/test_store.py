"""The verdict store: append-only rows, audit log, and no lost writes under concurrency."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest

from review.store import VerdictStore
from sitewatch.errors import InputError


def test_verdicts_are_appended_never_overwritten(tmp_path: Path) -> None:
    store = VerdictStore(tmp_path / "review.sqlite")
    store.add_verdict("a", "alice", "no-damage")
    store.add_verdict("a", "alice", "destroyed", note="roof gone")
    rows = store.verdicts("a")
    assert [r.verdict for r in rows] == ["no-damage", "destroyed"]
    audit = store.audit()
    assert [e["action"] for e in audit] == ["review", "review"]
    assert audit[1]["detail"]["previous"] == "no-damage"
    assert audit[1]["detail"]["note"] == "roof gone"
    con = sqlite3.connect(tmp_path / "review.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for sql in ("UPDATE verdicts SET verdict='x'", "DELETE FROM verdicts", "UPDATE audit SET actor='x'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            con.execute(sql)
    con.close()
    assert len(store.verdicts()) == 2


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"verdict": "flattened"}, "not one of"),
        ({"reviewer": "  "}, "reviewer name is empty"),
        ({"reviewer": "a\x00b"}, "control characters"),
        ({"note": "x" * 2001}, "2,000"),
    ],
)
def test_bad_verdicts_are_refused_with_a_reason(tmp_path: Path, kwargs: dict, needle: str) -> None:
    store = VerdictStore(tmp_path / "review.sqlite")
    args = {"site_id": "a", "reviewer": "alice", "verdict": "destroyed", **kwargs}
    note = args.pop("note", "")
    with pytest.raises(InputError, match=needle):
        store.add_verdict(args["site_id"], args["reviewer"], args["verdict"], note=note)
    assert store.verdicts() == [] and store.audit() == []


def test_a_damaged_database_is_a_run_folder_error(tmp_path: Path) -> None:
    from sitewatch.errors import RunFolderError

    bad = tmp_path / "review.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RunFolderError, match="move a damaged file aside"):
        VerdictStore(bad)


def _submit_many(path: str, reviewer: str, n: int) -> None:
    store = VerdictStore(path)
    for i in range(n):
        store.add_verdict(f"site{i % 7}", reviewer, "destroyed" if i % 2 else "no-damage", note=f"{reviewer}-{i}")


def test_concurrent_writers_threads_and_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "review.sqlite"
    VerdictStore(path)
    n = 25
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_submit_many, args=(str(path), f"proc{i}", n)) for i in range(3)]
    threads = [threading.Thread(target=_submit_many, args=(str(path), f"thread{i}", n)) for i in range(4)]
    for p in procs:
        p.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = VerdictStore(path)
    rows = store.verdicts()
    assert len(rows) == 7 * n
    notes = {r.note for r in rows}
    assert len(notes) == 7 * n  # every single submission is there, none duplicated
    audit = store.audit()
    assert len(audit) == 7 * n
    assert sorted(e["detail"]["verdict_id"] for e in audit) == sorted(r.id for r in rows)
    chain = store.verify_chain()  # concurrent writers from threads and processes keep one unbroken chain
    assert chain.ok and chain.verdicts == 7 * n, chain.problems


def test_verdicts_carry_over_to_a_rerun_once(tmp_path: Path) -> None:
    old = VerdictStore(tmp_path / "old.sqlite")
    old.add_verdict("a", "alice", "destroyed", note="n1")
    old.add_verdict("gone", "alice", "destroyed")
    new = VerdictStore(tmp_path / "new.sqlite")
    assert new.import_from(old, {"a", "b"}) == 1
    assert new.import_from(old, {"a", "b"}) == 0  # idempotent
    old.add_verdict("b", "bob", "no-damage")
    assert new.import_from(old, {"a", "b"}) == 1
    rows = new.verdicts()
    assert [(r.site_id, r.reviewer, r.verdict, r.note) for r in rows] == [("a", "alice", "destroyed", "n1"), ("b", "bob", "no-damage", "")]
    assert rows[0].created_at == old.verdicts("a")[0].created_at
    audit = new.audit()
    assert [e["action"] for e in audit] == ["import", "import"] and audit[0]["detail"]["source_id"] == 1
