"""The resume journal: an append-only record of scored batches in the run folder.

``journal.jsonl`` starts with a header line that holds the run's fingerprint; every further line
is one scored batch (its rows for ``scores.csv`` and its embeddings). Lines are flushed at once
and fsync'd every few batches, so a killed run (Ctrl-C, ``kill -9``, power loss) loses at most
the batches after the last fsync. A torn last line is detected (bad JSON or checksum) and cut
off before new batches are appended.

Input hashes may come after the header (``sitewatch detect`` hashes the rasters while it scores):
a header that lists ``deferred`` components binds the journal to a quick fingerprint of those
inputs (path, size, modification time, first and last MiB), and every *invocation* (the first,
and each resume, which starts with a ``resumed`` line) appends an ``inputs`` line with the full
SHA-256 of every deferred input once it is known. Batches of an invocation that stopped before
its ``inputs`` line are not trusted (they are scored again), and a run whose inputs hash
differently from a recorded ``inputs`` line stops (:func:`check_recorded_inputs`): scores of
two versions of an input are never mixed.

The journal is bound to its run: every line (the header too) carries an HMAC-SHA256 under a
secret random *run key* that is kept outside the run folder, in the key store
(``detect.run_keys_dir``; by default ``$SITEWATCH_CACHE/run-keys`` or
``~/.cache/sitewatch/run-keys``); the header names the key by a random id. A journal edited by
hand, even with a re-computed checksum, fails its code and is refused with a warning: the batches
from the edited line on are scored again instead of trusted. A journal whose key is not in the
store (the folder was copied to another machine, or the store was cleared) is not trusted either:
the run starts it afresh and scores everything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sitewatch.errors import RunFolderError

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.jsonl"
#: format 4: the resume binding leaves out modification times (a touched or copied raster with the
#: same bytes resumes; its full SHA-256 is verified) and a ``changed`` line untrusts an invocation
#: whose inputs changed while it read them. Format 3 journals bound the times and are not continued.
JOURNAL_FORMAT = "sitewatch-journal/4"
#: bytes of a run key.
RUN_KEY_BYTES = 32


def _mac(key: bytes, body: str) -> str:
    return hmac.new(key, body.encode("utf-8"), hashlib.sha256).hexdigest()


class RunKeyStore:
    """Secret random run keys, one file per journal, in a folder outside every run folder.

    Args:
        folder: where the keys live (created with mode 0700 on first use).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()

    @classmethod
    def from_setting(cls, run_keys_dir: str | None) -> "RunKeyStore":
        """The store of ``detect.run_keys_dir``: the folder given, or (None) ``$SITEWATCH_CACHE/run-keys``,
        else ``~/.cache/sitewatch/run-keys``."""
        if run_keys_dir is not None:
            return cls(run_keys_dir)
        cache = os.environ.get("SITEWATCH_CACHE")
        base = Path(cache).expanduser() if cache else Path.home() / ".cache" / "sitewatch"
        return cls(base / "run-keys")

    def _path(self, key_id: str) -> Path | None:
        if not (len(key_id) == 32 and all(c in "0123456789abcdef" for c in key_id)):
            return None
        return self.folder / f"{key_id}.key"

    def new(self) -> tuple[str, bytes]:
        """Make and store a new run key; returns ``(key id, key)``.

        Raises:
            RunFolderError: the store cannot be written.
        """
        key_id, key = os.urandom(16).hex(), os.urandom(RUN_KEY_BYTES)
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.folder / f"{key_id}.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(key)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise RunFolderError(
                f"detect.run_keys_dir: cannot write the run key store {self.folder} ({exc.strerror or exc}); "
                "set detect.run_keys_dir to a writable folder outside the run folder",
                setting="detect.run_keys_dir",
            ) from None
        return key_id, key

    def get(self, key_id: object) -> bytes | None:
        """The key of ``key_id``, or None when the store does not hold it."""
        path = self._path(key_id) if isinstance(key_id, str) else None
        try:
            key = path.read_bytes() if path is not None else b""
        except OSError:
            return None
        return key if len(key) == RUN_KEY_BYTES else None


def _header_body(header: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in header.items() if k != "mac"}, sort_keys=True)


class JournalTampered(ValueError):
    """A journal line whose authentication code does not match its content."""


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

    def to_json(self, key: bytes) -> str:
        """One journal line (without the newline), with the HMAC of its payload under ``key``."""
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
        return json.dumps({"mac": _mac(key, body), "record": payload}, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str, key: bytes) -> "BatchRecord":
        """Parse a journal line and check its HMAC under ``key``.

        Raises:
            JournalTampered: the line's code does not match (edited outside sitewatch).
            ValueError: the line is torn or not a journal line.
        """
        outer = json.loads(line)
        payload = outer["record"]
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        if not isinstance(outer.get("mac"), str) or not hmac.compare_digest(_mac(key, body), outer["mac"]):
            raise JournalTampered("its authentication code does not match: the line was edited outside sitewatch")
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
        key: the run key the journal is authenticated with (None when there is no usable journal).
        refused: why an existing journal (or its tail) is not trusted, in words; "" when it is.
        inputs: the distinct ``inputs`` records of the trusted invocations (full hashes of the
            header's ``deferred`` components).
        untrusted: batches left out (to be scored again) because the invocations that scored
            them stopped before hashing their inputs.
    """

    header: dict[str, Any] | None
    batches: dict[int, tuple[int, int, tuple[str, ...]]]
    good_end: int
    key: bytes | None = None
    refused: str = ""
    inputs: tuple[Mapping[str, Any], ...] = ()
    untrusted: int = 0


def _authenticated_header(text: str, keys: RunKeyStore) -> tuple[dict[str, Any], bytes]:
    """The header line's content and its run key.

    Raises:
        JournalTampered: no key for it in the store, or its code does not match.
        ValueError: not a journal header of this format.
    """
    parsed = json.loads(text)
    if not isinstance(parsed, dict) or not str(parsed.get("journal", "")).startswith("sitewatch-journal/"):
        raise ValueError("not a journal header")
    if parsed.get("journal") != JOURNAL_FORMAT:
        why = (
            "without authentication codes"
            if parsed.get("journal") == "sitewatch-journal/1"
            else "which this version does not continue (it bound resumes to the rasters' modification times)"
        )
        raise JournalTampered(f"written in the older format {parsed.get('journal')!r}, {why}")
    key = keys.get(parsed.get("key_id"))
    if key is None:
        raise JournalTampered(
            f"its run key {str(parsed.get('key_id'))[:32]!r} is not in the key store {keys.folder} (the folder "
            "was copied from elsewhere, or the store was cleared), so its batches cannot be authenticated"
        )
    if not isinstance(parsed.get("mac"), str) or not hmac.compare_digest(_mac(key, _header_body(parsed)), parsed["mac"]):
        raise JournalTampered("its header's authentication code does not match: it was edited outside sitewatch")
    return parsed, key


def _note_body(kind: str, payload: Mapping[str, Any]) -> str:
    return kind + ":" + json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def note_line(kind: str, payload: Mapping[str, Any], key: bytes) -> str:
    """A journal line that is not a batch (``inputs``, ``resumed``, ``changed``), with its HMAC under ``key``."""
    return json.dumps({"mac": _mac(key, _note_body(kind, payload)), kind: payload}, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _parse_line(text: str, key: bytes) -> tuple[str, Any]:
    """``("batch", BatchRecord)`` or ``(kind, payload)`` of an ``inputs``/``resumed`` line.

    Raises:
        JournalTampered: the line's code does not match.
        ValueError: the line is torn or not a journal line.
    """
    outer = json.loads(text)
    if not isinstance(outer, dict):
        raise ValueError("not a journal line")
    for kind in NOTE_KINDS:
        if kind in outer:
            payload = outer[kind]
            if not isinstance(payload, dict) or not isinstance(outer.get("mac"), str):
                raise ValueError(f"a malformed {kind} line")
            if not hmac.compare_digest(_mac(key, _note_body(kind, payload)), outer["mac"]):
                raise JournalTampered("its authentication code does not match: the line was edited outside sitewatch")
            return kind, payload
    return "batch", BatchRecord.from_json(text, key)


#: journal lines besides the header and the batches.
NOTE_KINDS = ("inputs", "resumed", "changed")


class _Invocations:
    """Batches grouped by the invocation that scored them; an invocation's batches count only
    once its ``inputs`` line is seen (when the header defers components)."""

    def __init__(self, deferred: bool) -> None:
        self.deferred = deferred
        self.trusted: dict[int, tuple[int, int, tuple[str, ...]]] = {}
        self.inputs: list[Mapping[str, Any]] = []
        self._untrusted: set[int] = set()
        self._batches: dict[int, tuple[int, int, tuple[str, ...]]] = {}
        self._inputs: Mapping[str, Any] | None = None

    def batch(self, index: int, entry: tuple[int, int, tuple[str, ...]]) -> None:
        self._batches.setdefault(index, entry)

    def recorded(self, payload: Mapping[str, Any]) -> None:
        self._inputs = payload

    def changed(self) -> None:
        """The invocation's inputs changed while it read them: none of its batches is trusted."""
        self._untrusted.update(self._batches)
        self._batches, self._inputs = {}, None

    def close(self) -> None:
        """End the current invocation (a ``resumed`` line, or the end of the journal)."""
        if self._inputs is not None or not self.deferred:
            for index, entry in self._batches.items():
                self.trusted.setdefault(index, entry)
            if self._inputs is not None and self._inputs not in self.inputs:
                self.inputs.append(self._inputs)
        else:
            self._untrusted.update(self._batches)
        self._batches, self._inputs = {}, None

    @property
    def untrusted(self) -> int:
        """Batches found only in invocations that never recorded their inputs."""
        return len(self._untrusted - set(self.trusted))


def scan_journal(path: Path, keys: RunKeyStore | None = None) -> JournalIndex:
    """Index a journal line by line (bounded memory), stopping at a torn, damaged or edited line.

    Args:
        path: the journal.
        keys: the run key store (default: :meth:`RunKeyStore.from_setting` of None).
    """
    keys = keys or RunKeyStore.from_setting(None)
    if not path.is_file():
        return JournalIndex(None, {}, 0)
    header: dict[str, Any] | None = None
    key: bytes | None = None
    refused = ""
    offset = 0
    runs: _Invocations | None = None
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                log.warning("%s: ignoring a torn last line (the previous run was interrupted)", path)
                break
            try:
                text = raw.decode("utf-8")
                if header is None:
                    header, key = _authenticated_header(text, keys)
                    runs = _Invocations(bool(header.get("deferred")))
                elif runs is not None:
                    kind, item = _parse_line(text, key or b"")
                    if kind == "batch":
                        runs.batch(item.batch, (offset, len(raw), tuple(r["site_id"] for r in item.rows)))
                    elif kind == "inputs":
                        runs.recorded(item)
                    elif kind == "changed":
                        runs.changed()
                    else:  # resumed: a new invocation starts
                        runs.close()
            except JournalTampered as exc:
                where = "header" if header is None else f"line at byte {offset}"
                refused = f"{path}: the journal's {where} is refused: {exc}; " + (
                    "the whole run is scored again" if header is None else "the batches from there on are scored again"
                )
                log.warning("%s", refused)
                break
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                log.warning("%s: ignoring a damaged line at byte %d (%s)", path, offset, exc)
                break
            offset += len(raw)
    if header is None or runs is None:
        return JournalIndex(None, {}, 0, refused=refused)
    runs.close()
    if runs.untrusted:
        log.warning(
            "%s: %d batch(es) of an earlier invocation that stopped before its inputs were hashed, or whose inputs "
            "changed while it read them, are scored again",
            path,
            runs.untrusted,
        )
    return JournalIndex(header, runs.trusted, offset, key=key, refused=refused, inputs=tuple(runs.inputs), untrusted=runs.untrusted)


def read_batch(path: Path, offset: int, length: int, key: bytes) -> BatchRecord:
    """Load one batch from a journal at a position found by :func:`scan_journal` (``key``:
    :attr:`JournalIndex.key`)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        return BatchRecord.from_json(fh.read(length).decode("utf-8"), key)


def read_journal(
    path: Path, keys: RunKeyStore | None = None
) -> tuple[dict[str, Any] | None, dict[int, BatchRecord], int]:
    """Read a whole journal into memory (small journals, tests), tolerating a torn tail.

    Returns:
        ``(header, records by batch index, byte offset of the end of the last good line)``;
        ``(None, {}, 0)`` when the file does not exist or has no valid (authenticated) header.
    """
    index = scan_journal(path, keys)
    records = {b: read_batch(path, off, n, index.key) for b, (off, n, _) in index.batches.items() if index.key}
    return index.header, records, index.good_end


class JournalWriter:
    """Appends batch records to ``journal.jsonl``; fsyncs every ``fsync_every`` batches.

    Args:
        path: the journal file.
        header: the header to write when the journal is new (must hold ``fingerprint``).
        truncate_at: byte offset of the end of the last good line of an existing journal (from
            :func:`read_journal`); anything after it is cut off. ``None`` starts a new journal
            with a new run key.
        fsync_every: batches between fsyncs.
        keys: the run key store (default: :meth:`RunKeyStore.from_setting` of None).
        resumed: when continuing a journal, the ``resumed`` line that starts this invocation
            (e.g. ``{"started": ...}``); None appends none (journals without deferred inputs).

    Raises:
        RunFolderError: continuing a journal whose header cannot be authenticated (scan it with
            :func:`scan_journal` first; a refused journal is started afresh).
    """

    def __init__(
        self,
        path: Path,
        header: Mapping[str, Any],
        *,
        truncate_at: int | None = None,
        fsync_every: int = 1,
        keys: RunKeyStore | None = None,
        resumed: Mapping[str, Any] | None = None,
    ) -> None:
        keys = keys or RunKeyStore.from_setting(None)
        self.path = path
        self.fsync_every = max(1, fsync_every)
        self._pending = 0
        if truncate_at is None or truncate_at == 0:
            key_id, self._key = keys.new()
            full = {**header, "journal": JOURNAL_FORMAT, "key_id": key_id}
            full["mac"] = _mac(self._key, _header_body(full))
            self._fh = open(path, "wb")
            self._fh.write((json.dumps(full, sort_keys=True) + "\n").encode("utf-8"))
            self._sync()
        else:
            with open(path, "rb") as fh:
                first = fh.readline().decode("utf-8", errors="replace")
            try:
                _, self._key = _authenticated_header(first, keys)
            except ValueError as exc:
                raise RunFolderError(f"{path}: cannot continue this journal ({exc})") from None
            self._fh = open(path, "r+b")
            self._fh.truncate(truncate_at)
            self._fh.seek(truncate_at)
            if resumed is not None:
                self.append_note("resumed", resumed)

    def append(self, record: BatchRecord) -> None:
        """Append one batch; flushed at once, fsync'd every ``fsync_every`` batches."""
        self._fh.write((record.to_json(self._key) + "\n").encode("utf-8"))
        self._fh.flush()
        self._pending += 1
        if self._pending >= self.fsync_every:
            self._sync()

    def append_note(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Append an ``inputs`` or ``resumed`` line (see the module doc), flushed and fsync'd."""
        if kind not in NOTE_KINDS:
            raise ValueError(f"not a journal note: {kind!r}")
        self._fh.write((note_line(kind, payload, self._key) + "\n").encode("utf-8"))
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


def check_recorded_inputs(recorded: Sequence[Mapping[str, Any]], current: Mapping[str, Any], run_dir: Path) -> None:
    """Stop a run whose inputs hash differently from when earlier batches of it were scored.

    Args:
        recorded: the journal's ``inputs`` records (:attr:`JournalIndex.inputs`).
        current: this invocation's record: ``{component: [[name, path, sha256], ...]}``.
        run_dir: the run folder, for the message.

    Raises:
        RunFolderError: a recorded file's SHA-256 differs; the message names it.
    """
    for old in recorded:
        for component in sorted(set(old) | set(current)):
            then = {str(e[1]): e[2] for e in old.get(component, [])}
            now = {str(e[1]): e[2] for e in current.get(component, [])}
            if then == now:
                continue
            changed = sorted(path for path in set(then) | set(now) if then.get(path) != now.get(path))
            raise RunFolderError(
                f"{run_dir}: the {component} input {', '.join(changed) or '(the file list)'} has other bytes (SHA-256) "
                "than when earlier batches of this run were scored, although its size and modification time "
                "match; the run folder would mix scores of two versions of it: pass --overwrite to score "
                "everything again, or restore the file"
            )
