"""Resume after a real ``kill -9`` in the middle of a run: the rerun ends identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from detect.journal import JOURNAL_NAME, read_journal

FLAGS = ["--set", "detect.batch_size=2", "--chips", "2", "-q"]


def _cmd(scene, out):
    return [
        sys.executable, "-m", "sitewatch", "detect",
        "--sites", str(scene.sites), "--before", str(scene.before), "--after", str(scene.after),
        "--out", str(out), *FLAGS,
    ]


@pytest.mark.slow
def test_kill_mid_run_then_rerun_matches_uninterrupted(tiny_scene, tmp_path):
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(tiny_scene, killed), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = killed / JOURNAL_NAME
    deadline = time.monotonic() + 240
    batches = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file():
            batches = journal.read_bytes().count(b"\n") - 1  # minus the header line
            if batches >= 2:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    _, records, _ = read_journal(journal)
    total = -(-tiny_scene.n_sites // 2)
    assert 1 <= len(records) < total
    assert not (killed / "scores.csv").exists() and not (killed / "manifest.json").exists()

    rerun = subprocess.run(_cmd(tiny_scene, killed), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    _, records_after, _ = read_journal(journal)
    assert len(records_after) == total

    clean = tmp_path / "clean"
    full = subprocess.run(_cmd(tiny_scene, clean), capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr
    for name in ("scores.csv", "scores.geojson", "embeddings.npz"):
        assert (killed / name).read_bytes() == (clean / name).read_bytes(), name
    verify = subprocess.run([sys.executable, "-m", "sitewatch", "verify", str(killed)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout
