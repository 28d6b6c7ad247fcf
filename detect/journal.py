"""The resume journal: an append-only record of scored batches in the run folder.

``journal.jsonl`` starts with a header line that holds the run's fingerprint; every further line
is one scored batch (its rows for ``scores.csv`` and its embeddings). Lines are flushed at once
and fsync'd every few batches, so a killed run (Ctrl-C, ``kill -9``, power loss) loses at most
the batches after the last fsync. A torn last line is detected (bad JSON or checksum) and cut
off before new batches are appended.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from sitewatch.errors import RunFolderError

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.jsonl"
JOURNAL_FORMAT = "sitewatch-journal/1"


@dataclass(frozen=True)
class BatchRecord:
    """One scored batch.

    Attributes:
        batch: the batch's index in the run's batch plan.
        rows: one mapping per site of the batch: ``scores.csv`` columns (strings) before ranking.
        embedding_ids: site ids of the batch's assessable sites, in the order of ``embeddings``.
        embeddings: float16 array of shape ``(K, D)`` (``K = len(embedding_ids)``; ``D`` may be 0
            when the batch had no assessable site).
    """

    batch: int
    rows: tuple[Mapping[str, str], ...]
    embedding_ids: tuple[str, ...]
    embeddings: np.ndarray

    def to_json(self) -> str:
        """One journal line (without the newline), with a checksum of its payload."""
        emb = np.ascontiguousarray(self.embeddings, dtype="<f2")
        payload = {
            "batch": self.batch,
            "rows": [dict(r) for r in self.rows],
            "embedding_ids": list(self.embedding_ids),
            "embedding_shape": list(emb.shape),
            "embedding": base64.b64encode(emb.tobytes()).decode("ascii"),
        }
        # key order is kept (not sorted): it is the column order of scores.csv
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        digest = hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]
        return json.dumps({"sha": digest, "record": payload}, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> "BatchRecord":
        """Parse a journal line.

        Raises:
            ValueError: the line is torn or its checksum does not match.
        """
        outer = json.loads(line)
        payload = outer["record"]
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        if hashlib.sha256(body.encode("utf-8")).hexdigest()[:16] != outer["sha"]:
            raise ValueError("checksum mismatch")
        shape = tuple(int(n) for n in payload["embedding_shape"])
        raw = base64.b64decode(payload["embedding"])
        emb = np.frombuffer(raw, dtype="<f2").reshape(shape).astype(np.float16)
        return cls(
            batch=int(payload["batch"]),
            rows=tuple({str(k): str(v) for k, v in r.items()} for r in payload["rows"]),
            embedding_ids=tuple(str(s) for s in payload["embedding_ids"]),
            embeddings=emb,
        )


@dataclass(frozen=True)
class JournalIndex:
    """Where each scored batch lies in a journal (the batches themselves stay on disk).

    Attributes:
        header: the header line, or None when the journal is missing or has no valid header.
        batches: ``{batch index: (byte offset, byte length, site ids)}`` of every good line
            (the first line of a batch wins if it was written twice).
        good_end: byte offset just after the last good line.
    """

    header: dict[str, Any] | None
    batches: dict[int, tuple[int, int, tuple[str, ...]]]
    good_end: int


def scan_journal(path: Path) -> JournalIndex:
    """Index a journal line by line (bounded memory), stopping at a torn or damaged line."""
    if not path.is_file():
        return JournalIndex(None, {}, 0)
    batches: dict[int, tuple[int, int, tuple[str, ...]]] = {}
    header: dict[str, Any] | None = None
    offset = 0
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                log.warning("%s: ignoring a torn last line (the previous run was interrupted)", path)
                break
            try:
                text = raw.decode("utf-8")
                if header is None:
                    parsed = json.loads(text)
                    if not isinstance(parsed, dict) or parsed.get("journal") != JOURNAL_FORMAT:
                        raise ValueError("not a journal header")
                    header = parsed
                else:
                    record = BatchRecord.from_json(text)
                    if record.batch not in batches:
                        ids = tuple(r["site_id"] for r in record.rows)
                        batches[record.batch] = (offset, len(raw), ids)
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                log.warning("%s: ignoring a damaged line at byte %d (%s)", path, offset, exc)
                break
            offset += len(raw)
    if header is None:
        return JournalIndex(None, {}, 0)
    return JournalIndex(header, batches, offset)


def read_batch(path: Path, offset: int, length: int) -> BatchRecord:
    """Load one batch from a journal at a position found by :func:`scan_journal`."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        return BatchRecord.from_json(fh.read(length).decode("utf-8"))


def read_journal(path: Path) -> tuple[dict[str, Any] | None, dict[int, BatchRecord], int]:
    """Read a whole journal into memory (small journals, tests), tolerating a torn tail.

    Returns:
        ``(header, records by batch index, byte offset of the end of the last good line)``;
        ``(None, {}, 0)`` when the file does not exist or has no valid header.
    """
    index = scan_journal(path)
    records = {b: read_batch(path, off, n) for b, (off, n, _) in index.batches.items()}
    return index.header, records, index.good_end


class JournalWriter:
    """Appends batch records to ``journal.jsonl``; fsyncs every ``fsync_every`` batches.

    Args:
        path: the journal file.
        header: the header to write when the journal is new (must hold ``fingerprint``).
        truncate_at: byte offset of the end of the last good line of an existing journal (from
            :func:`read_journal`); anything after it is cut off. ``None`` starts a new journal.
        fsync_every: batches between fsyncs.
    """

    def __init__(
        self,
        path: Path,
        header: Mapping[str, Any],
        *,
        truncate_at: int | None = None,
        fsync_every: int = 1,
    ) -> None:
        self.path = path
        self.fsync_every = max(1, fsync_every)
        self._pending = 0
        if truncate_at is None or truncate_at == 0:
            self._fh = open(path, "wb")
            line = json.dumps({"journal": JOURNAL_FORMAT, **header}, sort_keys=True) + "\n"
            self._fh.write(line.encode("utf-8"))
            self._sync()
        else:
            self._fh = open(path, "r+b")
            self._fh.truncate(truncate_at)
            self._fh.seek(truncate_at)

    def append(self, record: BatchRecord) -> None:
        """Append one batch; flushed at once, fsync'd every ``fsync_every`` batches."""
        self._fh.write((record.to_json() + "\n").encode("utf-8"))
        self._fh.flush()
        self._pending += 1
        if self._pending >= self.fsync_every:
            self._sync()

    def _sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._pending = 0

    def close(self) -> None:
        """Flush, fsync and close."""
        if not self._fh.closed:
            self._sync()
            self._fh.close()

    def __enter__(self) -> "JournalWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_fingerprint(
    header: Mapping[str, Any] | None, components: Mapping[str, str], run_dir: Path
) -> None:
    """Refuse to continue a journal that belongs to a different run.

    Args:
        header: the existing journal's header (None: no journal, nothing to check).
        components: this run's fingerprint parts, e.g. ``{"sites": sha, "model": sha, ...}``.
        run_dir: the run folder, for the message.

    Raises:
        RunFolderError: a part differs; the message names which parts.
    """
    if header is None:
        return
    old = header.get("components", {})
    differing = sorted(k for k in set(old) | set(components) if old.get(k) != components.get(k))
    if not differing:
        return
    raise RunFolderError(
        f"{run_dir}: this run folder holds a run with different {', '.join(differing)}; pick a "
        "new --out folder, or pass --overwrite to discard the old run"
    )
