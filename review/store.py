"""The verdict store: ``review.sqlite`` in the run folder (SQLite, WAL mode, append-only).

Two tables hold everything reviewers do:

- ``verdicts``: one row per submitted verdict (``site_id, reviewer, verdict, note, kind,
  created_at, damaged_parts``). ``kind`` is ``review`` or ``adjudication``. ``damaged_parts`` holds
  the parts of a facility (``p00``, ``p01``, ... as ``scores.csv``'s ``part_scores`` names them) the
  reviewer marked damaged, comma-separated in plan order; "" when none were marked (marking parts
  is optional). A reviewer who changes their mind adds
  a new row; a reviewer's current verdict on a site is their latest row.
- ``audit``: one row per action (verdict, adjudication, re-rank, export, ...), with a JSON detail.

Both are append-only: SQLite triggers abort any UPDATE or DELETE, so nothing is overwritten or
lost. The verdicts are also hash-chained (``prev_hash``, ``row_hash``; see :mod:`review.verdict_chain`),
so a row edited outside the app, with the triggers dropped, is detected and named by
:func:`review.verdict_chain.verify_verdict_chain`. A store written before the chain existed
(schema 1) gets its chain built on first open, recorded in the audit log as ``chain_built``; a
store written before part marks existed (schema 1 or 2) gets the ``damaged_parts`` column (empty
for its verdicts, which hash exactly as before), recorded as ``schema_upgraded``.

Each call opens its own connection and writes in a ``BEGIN IMMEDIATE`` transaction with a
busy timeout, so concurrent submissions from many clients (threads or processes) serialise
instead of failing.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

from review.verdict_chain import GENESIS_HASH, ChainReport, verdict_hash, verify_verdict_chain
from sitewatch.errors import InputError, RunFolderError

log = logging.getLogger(__name__)

DB_NAME = "review.sqlite"
SCHEMA_VERSION = "3"  # 2: verdicts carry prev_hash/row_hash (hash chain); 3: damaged_parts

#: most part marks one verdict may carry (a facility has at most ``tiles.parts.max_parts`` parts).
MAX_PART_MARKS = 1000

#: verdict buttons: the xBD joint damage scale plus ``cannot_assess``.
VERDICTS = ("no-damage", "minor-damage", "major-damage", "destroyed", "un-classified", "cannot_assess")

VerdictKind = Literal["review", "adjudication"]

_NO_UPDATE_TRIGGER = """CREATE TRIGGER IF NOT EXISTS verdicts_no_update BEFORE UPDATE ON verdicts
BEGIN SELECT RAISE(ABORT, 'verdicts are append-only'); END;"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    verdict TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL CHECK (kind IN ('review', 'adjudication')),
    created_at TEXT NOT NULL,
    prev_hash TEXT,
    row_hash TEXT,
    damaged_parts TEXT NOT NULL DEFAULT ''
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
CREATE TRIGGER IF NOT EXISTS verdicts_no_delete BEFORE DELETE ON verdicts
BEGIN SELECT RAISE(ABORT, 'verdicts are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
_SCHEMA += _NO_UPDATE_TRIGGER

#: the columns of a :class:`Verdict`, in its field order.
_VERDICT_COLUMNS = "id, site_id, reviewer, verdict, note, kind, created_at, damaged_parts"
#: the content columns hashed by the chain before part marks existed (schema 2).
_CHAINED_COLUMNS = "id, site_id, reviewer, verdict, note, kind, created_at"


def _append_verdict(
    con: sqlite3.Connection, site_id: str, reviewer: str, verdict: str, note: str, kind: str, created_at: str,
    damaged_parts: str = "",
) -> int:
    """Insert one verdict row, chained to the one before it, inside the caller's (write)
    transaction; returns its id.

    The id is chosen here (it is part of the hashed content): one past both the last row and
    the table's id counter, so an id is never reused even if rows were removed outside the app.
    """
    last = con.execute("SELECT id, row_hash FROM verdicts ORDER BY id DESC LIMIT 1").fetchone()
    seq = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'verdicts'").fetchone()
    row_id = max(int(last[0]) if last else 0, int(seq[0]) if seq else 0) + 1
    prev = (last[1] if last else None) or GENESIS_HASH
    row_hash = verdict_hash(row_id, site_id, reviewer, verdict, note, kind, created_at, prev, damaged_parts=damaged_parts)
    con.execute(
        "INSERT INTO verdicts (id, site_id, reviewer, verdict, note, kind, created_at, prev_hash, row_hash, damaged_parts) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (row_id, site_id, reviewer, verdict, note, kind, created_at, prev, row_hash, damaged_parts),
    )
    return row_id


def _append_audit(con: sqlite3.Connection, at: str, actor: str, action: str, site_id: str, detail: dict[str, Any]) -> None:
    """Insert one audit entry (detail as JSON) inside the caller's transaction."""
    con.execute(
        "INSERT INTO audit (at, actor, action, site_id, detail) VALUES (?, ?, ?, ?, ?)",
        (at, actor, action, site_id, json.dumps(detail, ensure_ascii=False, default=str)),
    )


def _build_chain(con: sqlite3.Connection) -> None:
    """Bring a store up to the current schema: a schema-1 store (no hash chain) gets the chain
    columns, every existing verdict its hashes in id order, and an audit entry ``chain_built``; a
    store without part marks (schema 1 or 2) gets the ``damaged_parts`` column and an audit entry
    ``schema_upgraded``.

    Runs in one write transaction (the no-update trigger is dropped and re-created inside it),
    so concurrent openers wait and the second finds the work done.
    """
    def columns() -> set[str]:
        return {r[1] for r in con.execute("PRAGMA table_info(verdicts)")}

    def chained() -> bool:
        return "row_hash" in columns()

    version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if chained() and "damaged_parts" in columns() and version is not None and version[0] == SCHEMA_VERSION:
        return
    con.execute("BEGIN IMMEDIATE")
    try:
        if not chained():
            con.execute("ALTER TABLE verdicts ADD COLUMN prev_hash TEXT")
            con.execute("ALTER TABLE verdicts ADD COLUMN row_hash TEXT")
            con.execute("DROP TRIGGER IF EXISTS verdicts_no_update")
            prev = GENESIS_HASH
            rows = con.execute(f"SELECT {_CHAINED_COLUMNS} FROM verdicts ORDER BY id").fetchall()
            for row in rows:
                row_hash = verdict_hash(*row, prev)
                con.execute("UPDATE verdicts SET prev_hash = ?, row_hash = ? WHERE id = ?", (prev, row_hash, row[0]))
                prev = row_hash
            con.execute(_NO_UPDATE_TRIGGER)
            _append_audit(con, utc_now(), "sitewatch", "chain_built", "", {
                "verdicts": len(rows), "head": prev, "schema_from": version[0] if version else "1",
                "schema_to": SCHEMA_VERSION,
            })
            log.info("%d existing verdict(s) hash-chained (head %s)", len(rows), prev)
        if "damaged_parts" not in columns():
            # verdicts without part marks hash as before: the chain is unchanged
            con.execute("ALTER TABLE verdicts ADD COLUMN damaged_parts TEXT NOT NULL DEFAULT ''")
            n = int(con.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])
            _append_audit(con, utc_now(), "sitewatch", "schema_upgraded", "", {
                "added": "verdicts.damaged_parts", "verdicts": n,
                "schema_from": version[0] if version else "1", "schema_to": SCHEMA_VERSION,
            })
            log.info("review store upgraded to schema %s: verdicts can carry part marks", SCHEMA_VERSION)
        con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


@dataclass(frozen=True)
class Verdict:
    """One stored verdict row.

    Attributes:
        id: row id (increasing with submission order).
        site_id: the site's id from ``scores.csv``.
        reviewer: who gave it.
        verdict: one of :data:`VERDICTS`.
        note: free text from the reviewer (shown escaped).
        kind: ``review`` or ``adjudication``.
        created_at: UTC ISO-8601 time of submission.
        damaged_parts: the facility's parts the reviewer marked damaged (``p00``, ...), in plan
            order; empty when none were marked.
    """

    id: int
    site_id: str
    reviewer: str
    verdict: str
    note: str
    kind: str
    created_at: str
    damaged_parts: tuple[str, ...] = ()

    @classmethod
    def of_row(cls, row: tuple[Any, ...]) -> "Verdict":
        """A verdict from a row of :data:`_VERDICT_COLUMNS`."""
        return cls(*row[:7], damaged_parts=split_parts(row[7] if len(row) > 7 else ""))


_PART_ID = re.compile(r"^p\d{2,}$")


def split_parts(text: str | None) -> tuple[str, ...]:
    """``"p01,p03"`` as ``("p01", "p03")`` (empty text: none)."""
    return tuple(p for p in (text or "").split(",") if p)


def clean_parts(parts: Iterable[str], known: Sequence[str] | None = None, *, site_id: str = "") -> str:
    """The part marks of a verdict as stored: part ids, comma-separated, without repeats, in the
    order of ``known`` (the site's parts in plan order) when given, else as given.

    Raises:
        InputError: an id that is not a part id (``p`` and two or more digits), one that is not in
            ``known``, or more than :data:`MAX_PART_MARKS`.
    """
    chosen: list[str] = []
    for raw in parts:
        part = str(raw).strip()
        if not part:
            continue
        if not _PART_ID.match(part):
            raise InputError(f"damaged part {part[:40]!r} is not a part id (p00, p01, ...)")
        if part not in chosen:
            chosen.append(part)
    if len(chosen) > MAX_PART_MARKS:
        raise InputError(f"{len(chosen)} damaged parts marked: at most {MAX_PART_MARKS}")
    if known is not None:
        unknown = [p for p in chosen if p not in known]
        if unknown:
            listed = ", ".join(known) if known else "none"
            raise InputError(f"site {site_id}: {', '.join(unknown)} not among its parts ({listed})")
        order = {p: i for i, p in enumerate(known)}
        chosen.sort(key=order.__getitem__)
    return ",".join(chosen)


def utc_now() -> str:
    """The current UTC time as ISO-8601 with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def clean_reviewer(name: str) -> str:
    """A reviewer name stripped of surrounding space; InputError when unusable.

    Raises:
        InputError: empty, longer than 64 characters, or holding control characters.
    """
    name = (name or "").strip()
    if not name:
        raise InputError("reviewer name is empty: type your name (or initials) to start reviewing")
    if len(name) > 64:
        raise InputError("reviewer name is longer than 64 characters: use a shorter name")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InputError("reviewer name holds control characters: use plain text")
    return name


class VerdictStore:
    """Append-only verdicts and audit log in ``review.sqlite``.

    Args:
        path: the database file (created with its schema when missing).
        timeout_s: how long a writer waits for the lock before failing.
    """

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        try:
            con = self._connect()
            try:
                con.execute("PRAGMA journal_mode=WAL")
                con.executescript(_SCHEMA)
                _build_chain(con)
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            raise RunFolderError(
                f"{self.path}: cannot use the review database ({exc}); check that the run folder is "
                "writable, or move a damaged file aside to start a new one"
            ) from None

    @classmethod
    def for_run(cls, run_dir: str | Path) -> "VerdictStore":
        """The store of a run folder (``RUN/review.sqlite``)."""
        return cls(Path(run_dir) / DB_NAME)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        con.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
        con.execute("PRAGMA synchronous=FULL")
        return con

    def _write(self) -> "_Transaction":
        return _Transaction(self._connect())

    # -- the hash chain --------------------------------------------------------------------

    def verify_chain(self) -> ChainReport:
        """Re-compute the whole verdict chain (see :func:`review.verdict_chain.verify_verdict_chain`)."""
        return verify_verdict_chain(self.path)

    def chain_head(self) -> tuple[int, str]:
        """``(verdict count, stored row_hash of the last verdict)``, cheaply (nothing re-computed)."""
        rows = self._read(
            "SELECT (SELECT COUNT(*) FROM verdicts), (SELECT row_hash FROM verdicts ORDER BY id DESC LIMIT 1)"
        )
        return int(rows[0][0]), rows[0][1] or GENESIS_HASH

    # -- writing ---------------------------------------------------------------------------

    def add_verdict(
        self,
        site_id: str,
        reviewer: str,
        verdict: str,
        *,
        note: str = "",
        kind: VerdictKind = "review",
        client: str = "",
        judged_dates: str = "",
        damaged_parts: Iterable[str] = (),
        known_parts: Sequence[str] | None = None,
    ) -> Verdict:
        """Append a verdict and its audit entry in one transaction.

        Args:
            site_id: the site's id.
            reviewer: who gives it (see :func:`clean_reviewer`).
            verdict: one of :data:`VERDICTS`.
            note: free text, at most 2,000 characters.
            kind: ``review`` or ``adjudication`` (settles a dispute).
            client: where the submission came from (recorded in the audit log).
            judged_dates: for an image-series run, the acquisition dates of the pair the
                reviewer was shown (``BEFORE/AFTER``, ISO dates), recorded in the audit log.
            damaged_parts: ids of the facility's parts the reviewer marked damaged (optional).
            known_parts: the site's part ids in plan order; the marks must be among them (None:
                only their form is checked).

        Raises:
            InputError: unknown verdict or kind, bad reviewer name, note too long, a part mark
                that is not one of the site's parts, part marks with a ``no-damage`` or
                ``cannot_assess`` verdict.
        """
        reviewer = clean_reviewer(reviewer)
        if verdict not in VERDICTS:
            raise InputError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
        if kind not in ("review", "adjudication"):
            raise InputError(f"verdict kind {kind!r} is not 'review' or 'adjudication'")
        note = note or ""
        if len(note) > 2000:
            raise InputError("note is longer than 2,000 characters: shorten it")
        parts = clean_parts(damaged_parts, known_parts, site_id=site_id)
        if parts and verdict in ("no-damage", "cannot_assess"):
            raise InputError(
                f"site {site_id}: parts {parts.replace(',', ', ')} are marked damaged but the verdict is {verdict}; "
                "untick them or give a damage verdict"
            )
        now = utc_now()
        with self._write() as con:
            previous = con.execute(
                "SELECT verdict FROM verdicts WHERE site_id = ? AND reviewer = ? AND kind = ? ORDER BY id DESC LIMIT 1",
                (site_id, reviewer, kind),
            ).fetchone()
            row_id = _append_verdict(con, site_id, reviewer, verdict, note, kind, now, parts)
            detail: dict[str, Any] = {"verdict_id": row_id, "verdict": verdict, "note": note, "client": client}
            if parts:
                detail["damaged_parts"] = split_parts(parts)
            if previous is not None:
                detail["previous"] = previous[0]
            if judged_dates:
                detail["judged_dates"] = judged_dates
            _append_audit(con, now, reviewer, kind, site_id, detail)
        return Verdict(row_id, site_id, reviewer, verdict, note, kind, now, split_parts(parts))

    def log_event(self, actor: str, action: str, detail: dict[str, Any] | None = None, *, site_id: str = "") -> None:
        """Append an audit entry for an action that is not a verdict (re-rank, export, ...)."""
        with self._write() as con:
            _append_audit(con, utc_now(), actor, action, site_id, detail or {})

    def import_from(self, source: "VerdictStore", site_ids: set[str], *, actor: str = "import") -> int:
        """Append another run's verdicts on the given sites (e.g. after re-running detect).

        Each row keeps its reviewer, verdict, note, kind and original time; the audit log records
        the source store and row id. Importing again only adds rows that are new in the source.

        Args:
            source: the other run's store.
            site_ids: sites of this run (verdicts on other sites are not imported).
            actor: recorded as the audit entry's actor.

        Returns:
            The number of verdicts imported.
        """
        key = f"import:{source.path.resolve()}"
        with self._write() as con:
            row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            done = int(row[0]) if row else 0
            new = source.verdicts_after(done)  # read once: a verdict added meanwhile is imported next time
            rows = [v for v in new if v.site_id in site_ids]
            last = max([done] + [v.id for v in new])
            now = utc_now()
            for v in rows:
                row_id = _append_verdict(con, v.site_id, v.reviewer, v.verdict, v.note, v.kind, v.created_at,
                                         ",".join(v.damaged_parts))
                detail = {"verdict_id": row_id, "verdict": v.verdict, "source": str(source.path.resolve()),
                          "source_id": v.id, "imported_at": now}
                _append_audit(con, now, actor, "import", v.site_id, detail)
            con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(last)))
        return len(rows)

    # -- reading ---------------------------------------------------------------------------

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        con = self._connect()
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def verdicts(self, site_id: str | None = None) -> list[Verdict]:
        """All verdict rows in submission order (of one site when ``site_id`` is given)."""
        if site_id is None:
            rows = self._read(f"SELECT {_VERDICT_COLUMNS} FROM verdicts ORDER BY id")
        else:
            rows = self._read(f"SELECT {_VERDICT_COLUMNS} FROM verdicts WHERE site_id = ? ORDER BY id", (site_id,))
        return [Verdict.of_row(r) for r in rows]

    def verdicts_after(self, last_id: int) -> list[Verdict]:
        """Verdict rows with an id above ``last_id``, in submission order.

        Writers serialise on ``BEGIN IMMEDIATE`` and ids are assigned inside the transaction, so
        rows become visible in id order: reading "everything after the last id I saw" never
        skips a row.
        """
        rows = self._read(f"SELECT {_VERDICT_COLUMNS} FROM verdicts WHERE id > ? ORDER BY id", (last_id,))
        return [Verdict.of_row(r) for r in rows]

    def last_id(self) -> int:
        """The id of the newest verdict (0 when none): a cheap version number for caches."""
        row = self._read("SELECT COALESCE(MAX(id), 0) FROM verdicts")
        return int(row[0][0])

    def reviewed_by(self, reviewer: str) -> set[str]:
        """Ids of the sites ``reviewer`` has given a verdict on."""
        return {r[0] for r in self._read("SELECT DISTINCT site_id FROM verdicts WHERE reviewer = ?", (reviewer,))}

    def reviewers(self) -> list[str]:
        """Everyone who has given a verdict, by name."""
        return [r[0] for r in self._read("SELECT DISTINCT reviewer FROM verdicts ORDER BY reviewer")]

    def audit(self) -> list[dict[str, Any]]:
        """The audit log, oldest first, details decoded."""
        rows = self._read("SELECT id, at, actor, action, site_id, detail FROM audit ORDER BY id")
        return [
            {"id": r[0], "at": r[1], "actor": r[2], "action": r[3], "site_id": r[4], "detail": json.loads(r[5])}
            for r in rows
        ]


class _Transaction:
    """``with`` block: BEGIN IMMEDIATE, COMMIT on success, ROLLBACK on error, then close."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    def __enter__(self) -> sqlite3.Connection:
        self.con.execute("BEGIN IMMEDIATE")
        return self.con

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.con.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self.con.close()

