"""The verdict store's hash chain: every verdict row carries the SHA-256 of the one before it.

Each row of ``verdicts`` in ``review.sqlite`` holds ``prev_hash`` (the ``row_hash`` of the row
before it, or 64 zeros for the first) and ``row_hash``, the SHA-256 of the row's canonical content:
the UTF-8 bytes of the JSON object ::

    {"created_at": ..., "id": ..., "kind": ..., "note": ..., "prev_hash": ...,
     "reviewer": ..., "site_id": ..., "verdict": ...}

with keys sorted, no spaces (``separators=(",", ":")``) and non-ASCII text as is
(``ensure_ascii=False``). A verdict that marks damaged parts of a facility (schema 3) adds the key
``"damaged_parts"`` (the part ids, comma-separated, e.g. ``"p02,p05"``); a verdict without part
marks hashes exactly as before, so chains written before part marks existed still check, and a
mark added to, changed in or removed from a stored row breaks the chain. So a verdict edited, removed or slipped in with ``sqlite3`` (after
dropping the append-only triggers) no longer fits the chain, and the last ``row_hash`` (the
*chain head*) recorded outside the folder (``review export`` writes it to ``export.json``;
``sitewatch verify`` prints it) pins every verdict before it: changing any of them changes the head.

:func:`verify_verdict_chain` re-computes the chain from the file, read-only, and names each break.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: ``prev_hash`` of the first verdict.
GENESIS_HASH = "0" * 64
#: audit actions whose ``detail.verdict_id`` names a verdict row.
VERDICT_ACTIONS = ("review", "adjudication", "import")


def verdict_hash(
    row_id: int,
    site_id: str,
    reviewer: str,
    verdict: str,
    note: str,
    kind: str,
    created_at: str,
    prev_hash: str,
    *,
    damaged_parts: str = "",
) -> str:
    """SHA-256 (hex) of one verdict's canonical content (see the module doc).

    Args:
        damaged_parts: the part ids the reviewer marked damaged, comma-separated ("" for none:
            then the key is left out of the hashed content).
    """
    content: dict[str, object] = {
        "id": int(row_id),
        "site_id": site_id,
        "reviewer": reviewer,
        "verdict": verdict,
        "note": note,
        "kind": kind,
        "created_at": created_at,
        "prev_hash": prev_hash,
    }
    if damaged_parts:
        content["damaged_parts"] = damaged_parts
    text = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    """What :func:`verify_verdict_chain` found.

    Attributes:
        path: the store checked.
        verdicts: number of verdict rows.
        head: the chain head: ``row_hash`` of the last verdict as re-computed from its content
            (:data:`GENESIS_HASH` when there is none). Equal to the stored one when intact.
        problems: one line per break, naming the verdict (id, site, reviewer) and what is wrong;
            empty when the chain is intact.
        first_broken: id of the first verdict that does not check, or None.
        chained: False for a store written before the chain existed and never opened since
            (``sitewatch review`` builds the chain on first open).
        last_id: id of the last verdict checked (0 when none): the head covers verdicts up to it.
    """

    path: Path
    verdicts: int
    head: str
    problems: tuple[str, ...] = ()
    first_broken: int | None = None
    chained: bool = True
    last_id: int = 0

    @property
    def ok(self) -> bool:
        """True when every verdict is in an unbroken chain."""
        return self.chained and not self.problems


def _who(row: tuple[Any, ...]) -> str:
    return f"verdict {row[0]} (site {row[1]!r}, by {row[2]!r}, {row[5]} at {row[6]})"


def chain_problems(rows: list[tuple[Any, ...]]) -> tuple[list[str], int | None, str]:
    """Check rows ``(id, site_id, reviewer, verdict, note, kind, created_at, prev_hash, row_hash)``,
    optionally followed by ``damaged_parts`` (schema 3), in id order.

    Each link is checked against the stored hash of the row before it, so one edited row is
    named once (not every row after it).

    Returns:
        ``(problems, first broken id or None, re-computed head)``.
    """
    problems: list[str] = []
    first: int | None = None
    expected_prev = GENESIS_HASH
    head = GENESIS_HASH
    for row in rows:
        row_id, prev_hash, row_hash = row[0], row[7], row[8]
        parts = (row[9] or "") if len(row) > 9 else ""
        found: list[str] = []
        if row_hash is None or prev_hash is None:
            found.append(f"{_who(row)} has no hash: it was added outside the app (e.g. with sqlite3)")
            head = verdict_hash(*row[:7], prev_hash or expected_prev, damaged_parts=parts)
        else:
            if prev_hash != expected_prev:
                found.append(
                    f"{_who(row)} does not follow the verdict before it: a verdict before it was removed, "
                    "inserted or rewritten with its hash"
                )
            head = verdict_hash(*row[:7], prev_hash, damaged_parts=parts)
            if head != row_hash:
                found.append(f"{_who(row)} differs from what was recorded: it was edited outside the app")
        if found and first is None:
            first = int(row_id)
        problems.extend(found)
        # the next link is checked against what is stored (as the app chains new verdicts)
        expected_prev = row_hash or GENESIS_HASH
    return problems, first, head


def verify_verdict_chain(path: str | Path) -> ChainReport:
    """Re-compute the verdict hash chain of ``review.sqlite``, read-only.

    Besides every link, it checks that no verdict named in the audit log is missing and that the
    table's id counter is not ahead of its last row (verdicts removed from the end).

    Args:
        path: the store (``RUN/review.sqlite``).

    Returns:
        The verdict count, the chain head and the breaks found (see :class:`ChainReport`).

    Raises:
        FileNotFoundError: no such file.
        sqlite3.DatabaseError: not a SQLite database, or one without a ``verdicts`` table.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no verdict store")
    con = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
    try:
        columns = {r[1] for r in con.execute("PRAGMA table_info(verdicts)")}
        if not columns:
            raise sqlite3.DatabaseError(f"{path}: no verdicts table")
        if "row_hash" not in columns:
            n = int(con.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])
            return ChainReport(path, n, "", (
                f"{path}: written before verdicts were hash-chained; open it once with `sitewatch review` to build the chain",
            ), None, chained=False)
        parts = ", damaged_parts" if "damaged_parts" in columns else ""
        rows = con.execute(
            f"SELECT id, site_id, reviewer, verdict, note, kind, created_at, prev_hash, row_hash{parts} FROM verdicts ORDER BY id"
        ).fetchall()
        audit = con.execute(
            "SELECT detail FROM audit WHERE action IN (%s)" % ",".join("?" * len(VERDICT_ACTIONS)), VERDICT_ACTIONS
        ).fetchall()
        seq = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'verdicts'").fetchone()
    finally:
        con.close()
    problems, first, head = chain_problems(rows)
    ids = {int(r[0]) for r in rows}
    audited: set[int] = set()
    for (detail,) in audit:
        try:
            vid = json.loads(detail).get("verdict_id")
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(vid, int):
            audited.add(vid)
    missing = sorted(audited - ids)
    if missing:
        shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        problems.append(f"verdict(s) {shown} are in the audit log but not in the verdicts table: removed outside the app")
    last = max(ids, default=0)
    if seq is not None and int(seq[0]) > last and int(seq[0]) not in missing:
        problems.append(
            f"the verdicts table's id counter is at {int(seq[0])} but its last verdict is {last}: "
            "verdicts were removed from the end"
        )
    if first is None and problems:
        first = missing[0] if missing else last + 1
    return ChainReport(path, len(rows), head, tuple(problems), first, last_id=last)
