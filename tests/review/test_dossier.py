"""``sitewatch dossier`` on a real detect run: HTML pages and a PDF with one page per site, a
manifest that ``sitewatch verify`` checks, and tampering that it catches."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from review.dossier.build import write_dossier
from review.dossier.verify import verify_dossier
from review.store import VerdictStore
from sitewatch.errors import UsageError
from tests.review.footprint_scene import write_scene

NOTE = 'roof gone <script>alert("x")</script> & walls down'


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pdf_pages(data: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))


@pytest.fixture(scope="module")
def flagged_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The footprint block scored by the bundled model through ``sitewatch detect``, flagging at
    0.05 (a few sites), chips written for the top 2 only (the others are cut for the dossier), and
    two reviewers plus an adjudication in its verdict store."""
    root = tmp_path_factory.mktemp("dossier")
    scene = write_scene(root / "scene")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "sitewatch", "detect", "-q", "--sites", str(scene.sites), "--before", str(scene.before),
           "--after", str(scene.after), "--out", str(root / "run"), "--chips", "2", "--operating-point", "0.05"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run = root / "run"
    scores = (run / "scores.csv").read_text(encoding="utf-8").splitlines()
    top = scores[1].split(",")[0]
    store = VerdictStore.for_run(run)
    store.add_verdict(top, "ana", "destroyed", note=NOTE)
    store.add_verdict(top, "bo", "major-damage")
    store.add_verdict(top, "chief", "destroyed", kind="adjudication", note="rubble visible on both passes")
    return run


def test_flagged_dossier_is_pdf_and_html_and_verifies(flagged_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "dossier"
    summary = write_dossier(flagged_run, out, selection="flagged")
    manifest_run = json.loads((flagged_run / "manifest.json").read_text())
    flagged = [line.split(",")[0] for line in (flagged_run / "scores.csv").read_text().splitlines()[1:] if ",true," in line]
    assert 2 < len(flagged) < 18 and list(summary.sites) == flagged  # rank order

    pdf = (out / "dossier.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert _pdf_pages(pdf) == len(flagged) + 1 == summary.pdf_pages  # cover + one page per site

    digest = _sha(flagged_run / "manifest.json")
    assert summary.run_digest == digest
    dossier = json.loads((out / "manifest.json").read_text())
    assert dossier["kind"] == "sitewatch-dossier" and dossier["run"]["digest"] == digest
    listed = dossier["files"]
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(listed) == on_disk and all(listed[f] == _sha(out / f) for f in listed)
    assert "index.html" in listed and "dossier.pdf" in listed

    top = dossier["sites"][0]
    page = (out / top["page"]).read_text(encoding="utf-8")
    assert digest in page
    assert manifest_run["model"]["weights_sha256"] in page
    for scene in manifest_run["inputs"]["before"] + manifest_run["inputs"]["after"]:
        assert scene["sha256"] in page
    # chips: detect's own (same SHA-256 as the run manifest records) and the context view
    assert top["images"]["before"]["source"] == "detect"
    assert top["images"]["before"]["sha256"] == manifest_run["outputs"][f"chips/{top['site_id']}_before.png"]
    assert top["images"]["before"]["sha256"] in page and "context_before" in top["images"]
    assert page.count("data:image/png;base64,") >= 5  # self-contained: before, after, heatmap, 2 context
    assert "<polygon" in page  # the footprint drawn over the chips
    # verdicts: reviewer, time, note (escaped), adjudication
    assert "ana" in page and "chief" in page and "rubble visible on both passes" in page
    assert "&lt;script&gt;" in page and "<script>alert" not in page
    assert re.search(r"\d+°\d\d′\d\d\.\d″N", page)  # DMS
    assert "not recorded" in page  # sensor / catalogue id / credit the synthetic rasters do not carry
    # a site beyond detect's top 2 has chips cut for the dossier
    cut = dossier["sites"][-1]
    assert cut["images"]["before"]["source"] == "cut" and "heatmap" not in cut["images"]

    report = verify_dossier(out)
    assert report.ok, report.findings
    assert report.run_checked and report.checked == len(listed)
    r = subprocess.run([sys.executable, "-m", "sitewatch", "verify", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verified dossier" in r.stdout


def test_tampered_dossier_fails_verify(flagged_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "dossier"
    summary = write_dossier(flagged_run, out, selection="sites", site_ids=["clinic", "b00"])
    assert summary.sites == ("clinic", "b00") and summary.pdf_pages == 3
    assert verify_dossier(out).ok
    image = next((out / "images").glob("*clinic*_before.png"))
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF
    image.write_bytes(bytes(data))
    (out / "sites" / "notes.txt").write_text("added later")
    report = verify_dossier(out)
    problems = {f.what: f.problem for f in report.findings}
    assert not report.ok
    assert problems[image.relative_to(out).as_posix()].startswith("changed")
    assert problems["sites/notes.txt"].startswith("added")
    r = subprocess.run([sys.executable, "-m", "sitewatch", "verify", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and image.name in r.stdout


def test_dossier_notices_a_changed_run(flagged_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(flagged_run, run)
    out = tmp_path / "dossier"
    write_dossier(run, out, selection="sites", site_ids=["well"])
    assert verify_dossier(out).ok
    manifest = run / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"flagged"', '"flagged" '), encoding="utf-8")
    problems = {f.what: f.problem for f in verify_dossier(out).findings}
    assert "run" in problems and "changed since the dossier was written" in problems["run"]
    assert verify_dossier(out, check_run=False).ok


def test_selections_and_their_errors(flagged_run: Path, tmp_path: Path) -> None:
    verified = write_dossier(flagged_run, tmp_path / "v", selection="verified")
    top = (flagged_run / "scores.csv").read_text().splitlines()[1].split(",")[0]
    assert verified.sites == (top,)  # the adjudicated site
    with pytest.raises(UsageError, match="not in"):
        write_dossier(flagged_run, tmp_path / "x", selection="sites", site_ids=["no-such-site"])
    with pytest.raises(UsageError, match="not empty"):
        write_dossier(flagged_run, tmp_path / "v", selection="verified")
    again = write_dossier(flagged_run, tmp_path / "v", selection="verified", overwrite=True)
    assert verify_dossier(again.out_dir).ok


def test_dossier_command(flagged_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sitewatch.cli import main

    out = tmp_path / "cli"
    assert main(["dossier", str(flagged_run), "--sites", "b03", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "dossier.pdf (2 pages)" in text and f"sitewatch verify {out}" in text
    assert main(["verify", str(out)]) == 0
    with pytest.raises(SystemExit) as exc:  # --flagged and --sites exclude each other
        main(["dossier", str(flagged_run), "--flagged", "--sites", "b03", "--out", str(tmp_path / "y")])
    assert exc.value.code == 2


def test_cannot_assess_and_any_script_names(tmp_path: Path) -> None:
    from review.runfolder import RunFolder
    from tests.review.make_run import write_run

    name = "<b>Clinic</b> ü 中文"
    run = write_run(tmp_path / "run", 8, names={1: name})
    ids = [s.site_id for s in RunFolder(run).sites]
    summary = write_dossier(run, tmp_path / "d", selection="sites", site_ids=[ids[1], ids[-1]])
    assert summary.pdf_pages == 3 and _pdf_pages((tmp_path / "d" / "dossier.pdf").read_bytes()) == 3
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    named = (tmp_path / "d" / manifest["sites"][0]["page"]).read_text(encoding="utf-8")
    assert "&lt;b&gt;Clinic&lt;/b&gt; ü 中文" in named  # the HTML page keeps every name exactly, escaped
    unassessed = (tmp_path / "d" / manifest["sites"][1]["page"]).read_text(encoding="utf-8")
    reason = RunFolder(run).sites[-1].reason
    assert manifest["sites"][1]["status"] == "cannot_assess" and "not assessed" in unassessed and reason in unassessed
    assert "before" not in manifest["sites"][1]["images"]  # no chip for a site that cannot be assessed
    assert verify_dossier(tmp_path / "d").ok


def test_an_event_calibration_is_told_in_words_not_as_a_dump_of_its_record():
    """After `sitewatch calibrate`, the dossier's calibration line ran to a dozen raw
    'key: value' pairs (logits_recovered_from_scores: True; n_temperature: 19; ...) and pushed
    every site onto a second PDF page."""
    from review.dossier.evidence import calibration_text

    cal = {
        "kind": "event", "created": "2026-12-03T08:53:06+00:00", "n": 38, "positives": 10,
        "description": "this event's verified sample: 38 labelled sites (10 damaged), labels file",
        "temperature": 0.0183157, "previous_temperature": 1.00737, "ece": 0.0, "ece_before": 0.0056237,
        "n_temperature": 19, "n_operating_points": 19, "logits_recovered_from_scores": True,
        "screening_note": "screening p >= 0.5000 fitted on only 5 damaged sites", "tag": "event:404671b603b3",
        "policy": {"min_labels": 30}, "labels": {"path": "x.csv"},
    }
    text = calibration_text({"calibration": cal, "model": {"meta": {"temperature": 1.0}}})
    assert text == (
        "this event's verified sample: 38 labelled sites (10 damaged), labels file; fitted 2026-12-03; "
        "temperature 0.01832 (was 1.007); calibration error (ECE) on the held-out labelled sites 0.006 before, "
        "0.000 after; screening p >= 0.5000 fitted on only 5 damaged sites; tag event:404671b603b3"
    )
    assert "n_temperature" not in text and "logits_recovered" not in text
    # the model's own calibration is still described as before
    assert calibration_text({"model": {"meta": {"temperature": 1.5, "data_hashes": {"synth:10": "x"}}}}).startswith(
        "temperature scaling T = 1.5000, fitted on the validation split of synth:10")
