"""Resume after a real ``kill -9`` in the middle of a run: the rerun ends identical."""

from __future__ import annotations

import json
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


def _copy_scene(tiny_scene, root):
    import shutil

    from tests.detect.conftest import TinyScene

    shutil.copytree(tiny_scene.root, root)
    rel = {k: getattr(tiny_scene, k).relative_to(tiny_scene.root) for k in ("sites", "before", "after")}
    return TinyScene(root=root, sites=root / rel["sites"], before=root / rel["before"], after=root / rel["after"], n_sites=tiny_scene.n_sites)


def _raster(path):
    return path if path.is_file() else sorted(path.glob("*.tif"))[0]


def test_a_raster_with_other_bytes_but_the_same_size_and_time_stops_the_resumed_run(tiny_scene, tmp_path, monkeypatch):
    """Issue 12: the journal is bound by a quick fingerprint while the full SHA-256 runs beside
    scoring; a raster changed in its middle (size, time, first and last bytes kept) is caught by
    the full hash against the one recorded when the earlier batches were scored."""
    import detect.provenance as provenance
    from detect.config import DetectConfig
    from detect.run import run_detect
    from sitewatch.errors import RunFolderError

    monkeypatch.setattr(provenance, "QUICK_EDGE_BYTES", 4096)  # the quick fingerprint sees 4 KiB at each end
    scene = _copy_scene(tiny_scene, tmp_path / "scene")
    detect = DetectConfig(batch_size=8, chips_top_n=0)
    run = tmp_path / "run"
    first = run_detect(scene.sites, [scene.before], [scene.after], run, detect=detect, progress=False)
    manifest = json.loads((run / "manifest.json").read_text())
    again = run_detect(scene.sites, [scene.before], [scene.after], run, detect=detect, progress=False)
    assert again.batches_resumed == again.batches_total and again.run_digest != ""
    assert json.loads((run / "manifest.json").read_text())["run_fingerprint"] == manifest["run_fingerprint"]

    raster = _raster(scene.after)
    st = raster.stat()
    data = bytearray(raster.read_bytes())
    assert len(data) > 3 * 4096
    data[len(data) // 2] ^= 0xFF
    raster.write_bytes(bytes(data))
    os.utime(raster, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(RunFolderError, match=rf"after input {raster.resolve()} has other bytes.*--overwrite"):
        run_detect(scene.sites, [scene.before], [scene.after], run, detect=detect, progress=False)
    assert first.batches_total == again.batches_total


def test_a_raster_that_changes_while_the_run_reads_it_stops_the_run(tiny_scene, tmp_path, monkeypatch):
    """Issue 12: the after raster is rewritten (new modification time) after the first scored
    batch: the run fails naming the file instead of writing scores that mix two versions, and
    the rerun trusts none of that invocation's batches (its journal says the inputs changed)."""
    from detect.config import DetectConfig
    from detect.journal import JournalWriter
    from detect.run import run_detect
    from sitewatch.errors import InputError

    scene = _copy_scene(tiny_scene, tmp_path / "scene")
    raster = _raster(scene.after)
    append = JournalWriter.append

    def append_then_touch(self, record):
        append(self, record)
        if record.batch == 0:
            os.utime(raster, ns=(raster.stat().st_atime_ns, raster.stat().st_mtime_ns + 10**9))

    monkeypatch.setattr(JournalWriter, "append", append_then_touch)
    run = tmp_path / "run"
    detect = DetectConfig(batch_size=8, chips_top_n=0)
    with pytest.raises(InputError, match=rf"{raster.resolve()}: the file changed while this run read it"):
        run_detect(scene.sites, [scene.before], [scene.after], run, detect=detect, progress=False)
    assert not (run / "scores.csv").exists() and not (run / "manifest.json").exists()
    monkeypatch.setattr(JournalWriter, "append", append)
    summary = run_detect(scene.sites, [scene.before], [scene.after], run, detect=detect, progress=False)
    assert summary.batches_resumed == 0 and summary.ok > 0
    clean = run_detect(scene.sites, [scene.before], [scene.after], tmp_path / "clean", detect=detect, progress=False)
    assert (run / "scores.csv").read_bytes() == (tmp_path / "clean" / "scores.csv").read_bytes()
    assert clean.batches_total == summary.batches_total


def test_a_raster_only_touched_or_copied_between_runs_resumes(tiny_scene, tmp_path):
    """A raster with the same bytes but a new modification time (touched, or copied without
    keeping times) resumes: the journal binds size, first and last bytes and verifies the full
    SHA-256 recorded by the earlier invocation; the outputs are those of an uninterrupted run."""
    import shutil

    from detect.config import DetectConfig
    from detect.run import run_detect

    scene = _copy_scene(tiny_scene, tmp_path / "scene")
    detect = DetectConfig(batch_size=8, chips_top_n=0)
    run = tmp_path / "run"
    first = run_detect(scene.sites, [scene.before], [scene.after], run, detect=detect, progress=False)
    scores = (run / "scores.csv").read_bytes()
    raster = _raster(scene.after)
    st = raster.stat()
    os.utime(raster, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    touched = run_detect(scene.sites, [scene.before], [scene.after], run, detect=detect, progress=False)
    assert touched.batches_resumed == touched.batches_total == first.batches_total
    copy = raster.with_name("copy.tmp")
    shutil.copyfile(raster, copy)  # new inode and times, same bytes
    os.replace(copy, raster)
    assert raster.stat().st_mtime_ns != st.st_mtime_ns
    copied = run_detect(scene.sites, [scene.before], [scene.after], run, detect=detect, progress=False)
    assert copied.batches_resumed == copied.batches_total
    assert (run / "scores.csv").read_bytes() == scores


def test_a_journal_of_the_other_spatial_order_is_refused_naming_the_setting(tiny_scene, tmp_path, monkeypatch):
    """A run interrupted with ``detect.spatial_order=false`` (or by a version from before the
    setting, which planned in input order) cannot resume under the default plan; the error names
    the setting that resumes it, and resuming with it works."""
    import detect.pipeline as pipeline
    from detect.config import DetectConfig
    from detect.run import run_detect
    from sitewatch.errors import RunFolderError

    monkeypatch.setattr(pipeline, "SPATIAL_CELL_M", 2.0)  # cells small enough that the orders differ
    run = tmp_path / "run"
    plain = DetectConfig(batch_size=4, chips_top_n=0, spatial_order=False)
    first = run_detect(tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], run, detect=plain, progress=False)
    with pytest.raises(RunFolderError, match=r"detect\.spatial_order=false to resume"):
        run_detect(tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], run,
                   detect=DetectConfig(batch_size=4, chips_top_n=0), progress=False)
    again = run_detect(tiny_scene.sites, [tiny_scene.before], [tiny_scene.after], run, detect=plain, progress=False)
    assert again.batches_resumed == again.batches_total == first.batches_total
