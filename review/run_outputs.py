"""Which files of the run folder the review app may serve: the outputs ``detect`` listed, unchanged.

A file is served only when ``manifest.json`` lists it among the run's outputs, it resolves to a
file inside the run folder, and its SHA-256 is still the one the manifest recorded. So a
``.png``-named symlink put into the folder (to ``review.sqlite``, say) is never served, and
neither is a chip changed after ``detect`` wrote it: reviewers judge what the run produced.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from review.runfolder import RunFolder

log = logging.getLogger(__name__)


def manifest_outputs(run: RunFolder) -> dict[str, str]:
    """The run's output files as ``manifest.json`` lists them: ``{relative posix path: sha256}``.

    The one place the review app reads the manifest's output list (the typed
    :attr:`detect.runfolder.Manifest.outputs`). Empty when the manifest lists none.
    """
    return {str(k): str(v).lower() for k, v in run.manifest.outputs.items()}


@dataclass(frozen=True)
class OutputCheck:
    """Whether a run file may be served.

    Attributes:
        path: the file (None when it may not be served).
        problem: why not ("" when it may): ``unlisted``, ``missing`` or ``changed``.
        message: the reason in words, for the page and the HTTP answer.
    """

    path: Path | None
    problem: str = ""
    message: str = ""


class RunOutputs:
    """The listed outputs of one run folder; checks and reads them (thread-safe).

    Args:
        run: the run folder.
    """

    def __init__(self, run: RunFolder) -> None:
        self.run = run
        self.listed = manifest_outputs(run)
        self._lock = threading.Lock()
        self._verified: dict[str, tuple[int, int, int]] = {}

    def check(self, relative: str) -> OutputCheck:
        """Whether ``relative`` (e.g. ``chips/s1_before.png``) may be served, hashing it unless it
        was verified before and its size, mtime and inode are unchanged."""
        expected = self.listed.get(relative)
        if expected is None:
            return OutputCheck(None, "unlisted", f"{relative} is not among the outputs manifest.json lists")
        path = self.run.resolve_inside(relative)
        if path is None:
            return OutputCheck(None, "missing", f"{relative} is listed in manifest.json but missing from the run folder")
        st = os.stat(path)
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        with self._lock:
            if self._verified.get(relative) == key:
                return OutputCheck(path)
        if not self._hash_matches(path, expected):
            log.warning("%s differs from its SHA-256 in manifest.json: not served", path)
            return OutputCheck(
                None, "changed",
                f"{relative} has changed since detect wrote it (its SHA-256 differs from manifest.json); "
                "run `sitewatch verify` on the run folder",
            )
        with self._lock:
            self._verified[relative] = key
        return OutputCheck(path)

    def read(self, relative: str) -> tuple[bytes | None, str]:
        """``(content, "")`` of a servable output, or ``(None, problem)`` with the problem of
        :class:`OutputCheck` (``unlisted``, ``missing``, ``changed``).

        The bytes returned are the ones hashed, so a file swapped after a check is never served.
        """
        expected = self.listed.get(relative)
        path = self.run.resolve_inside(relative) if expected is not None else None
        if expected is None or path is None:
            return None, "unlisted" if expected is None else "missing"
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != expected:
            with self._lock:
                self._verified.pop(relative, None)
            log.warning("%s differs from its SHA-256 in manifest.json: not served", path)
            return None, "changed"
        return data, ""

    @staticmethod
    def _hash_matches(path: Path, expected: str) -> bool:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest() == expected
