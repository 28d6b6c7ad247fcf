"""The tamper corpus: every way of changing a finished run folder that issue 10 names (and more),
each applied to a copy of one real small ``detect`` run; ``sitewatch verify`` must catch them all.

Most cases re-compute the SHA-256 of what they edit and put it in the manifest, as a forger
would, so only the manifest's internal consistency (or the digest, or the signature) can tell.
``test_tamper_corpus`` prints ``cases tried / detected`` (run with ``-s`` to see it).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Callable

import pytest

from detect.config import DetectConfig
from detect.journal import JOURNAL_NAME, RunKeyStore, scan_journal
from detect.runfolder import read_scores_csv
from detect.provenance import MANIFEST_NAME, SIGNATURE_NAME
from detect.run import run_detect
from detect.signing import generate_keypair, load_private_key, load_public_key, sign_run
from detect.verify import verify_run
from sitewatch.config import build_config
from sitewatch.errors import RunFolderError
from sitewatch.hashing import sha256_file
from tests.detect.conftest import make_tiny_scene
from tiles.config import TilesConfig

OPERATING_POINT = "0.001"  # flags about a third of the tiny scene's sites, so flags can be forged
DETECT = build_config(DetectConfig, {"chips_top_n": 4, "batch_size": 8, "operating_point": OPERATING_POINT})
TILES = build_config(TilesConfig, {})


@pytest.fixture(scope="module")
def signed_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real run over a scene of our own (with a JSON sidecar), signed, and its digest."""
    root = tmp_path_factory.mktemp("tamper")
    scene = make_tiny_scene(root / "scene")
    sidecar = scene.after / "after_scene.tif.json"
    sidecar.write_text(json.dumps({"acquired": "2021-09-01T10:00:00Z"}), encoding="utf-8")
    summary = run_detect(
        scene.sites, [scene.before], [scene.after], root / "run", tiles=TILES, detect=DETECT, progress=False
    )
    key_path, pub_path = generate_keypair(root / "keys" / "signer.key")
    other_key, other_pub = generate_keypair(root / "keys" / "other.key")
    sign_run(summary.run_dir, load_private_key(key_path))
    return {
        "run": summary.run_dir,
        "scene": scene,
        "digest": summary.run_digest,
        "key": key_path,
        "public": load_public_key(pub_path),
        "other_key": other_key,
        "other_public": load_public_key(other_pub),
        "sidecar": sidecar,
    }


# -- helpers a forger would write -----------------------------------------------------------------


def _manifest(run: Path) -> dict[str, Any]:
    return json.loads((run / MANIFEST_NAME).read_text(encoding="utf-8"))


def _save(run: Path, manifest: dict[str, Any]) -> None:
    (run / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _edit(run: Path, change: Callable[[dict[str, Any]], None]) -> None:
    manifest = _manifest(run)
    change(manifest)
    _save(run, manifest)


def _rehash(run: Path, *rels: str) -> None:
    """Put the new SHA-256 of edited outputs into the manifest (what issue 10's forger did)."""
    manifest = _manifest(run)
    for rel in rels:
        manifest["outputs"][rel] = sha256_file(run / rel)
    _save(run, manifest)


def _rows(run: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(run / "scores.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _write_rows(run: Path, columns: list[str], rows: list[dict[str, str]], *, rehash: bool = True) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (run / "scores.csv").write_bytes(buf.getvalue().encode("utf-8"))
    if rehash:
        _rehash(run, "scores.csv")


def _edit_rows(change: Callable[[list[dict[str, str]]], None]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        columns, rows = _rows(run)
        change(rows)
        _write_rows(run, columns, rows)

    return apply


def _set(path: str, value: Any) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        def change(m: dict[str, Any]) -> None:
            *parents, last = path.split(".")
            node = m
            for p in parents:
                node = node[int(p)] if isinstance(node, list) else node[p]
            if value is _DELETE:
                del node[last]
            else:
                node[int(last) if isinstance(node, list) else last] = value

        _edit(run, change)

    return apply


_DELETE = object()


def _lower_destroyed_score(rows: list[dict[str, str]]) -> None:
    rows[0]["score"] = "0.000001"  # the top-ranked (most damaged) site made harmless


def _flip_flag(rows: list[dict[str, str]]) -> None:
    rows[0]["flagged"] = "false" if rows[0]["flagged"] == "true" else "true"


def _delete_chip_with_entry(run: Path) -> None:
    manifest = _manifest(run)
    chip = sorted(k for k in manifest["outputs"] if k.startswith("chips/"))[0]
    (run / chip).unlink()
    del manifest["outputs"][chip]
    _save(run, manifest)


def _delete_chips_of_a_site_everywhere(run: Path) -> None:
    """Remove the top site's chips, their manifest entries and the scores.csv cells naming them."""
    columns, rows = _rows(run)
    manifest = _manifest(run)
    for c in ("chip_before", "chip_after", "chip_heatmap"):
        (run / rows[0][c]).unlink()
        del manifest["outputs"][rows[0][c]]
        rows[0][c] = ""
    _save(run, manifest)
    _write_rows(run, columns, rows)


def _forge_threshold_everywhere_but_config_yaml(run: Path) -> None:
    """A consistent-looking change of the operating point: threshold, config values, flags, counts."""
    columns, rows = _rows(run)
    for r in rows:
        if r["status"] == "ok":
            r["flagged"] = "true" if float(r["score"]) >= 0.5 else "false"
    _write_rows(run, columns, rows)

    def change(m: dict[str, Any]) -> None:
        m["operating_point"]["threshold"] = 0.5
        m["config"]["values"]["detect"]["operating_point"] = "0.5"
        m["counts"]["flagged"] = sum(1 for r in rows if r["flagged"] == "true")

    _edit(run, change)


def _forge_calibration(run: Path) -> None:
    """Claim an event calibration (as `sitewatch calibrate` records) to justify another threshold:
    flags, counts and threshold rewritten consistently, the config left alone."""
    columns, rows = _rows(run)
    for r in rows:
        if r["status"] == "ok":
            r["flagged"] = "true" if float(r["score"]) >= 0.5 else "false"
    _write_rows(run, columns, rows)

    def change(m: dict[str, Any]) -> None:
        m["operating_point"]["threshold"] = 0.5
        m["counts"]["flagged"] = sum(1 for r in rows if r["flagged"] == "true")
        m["calibration"] = {"kind": "event", "operating_points": {"custom": {"threshold": 0.5}}}

    _edit(run, change)


def _edit_config_yaml(run: Path) -> None:
    path = run / "config.yaml"
    path.write_text(path.read_text().replace(f"operating_point: '{OPERATING_POINT}'", "operating_point: '0.9'"))
    _rehash(run, "config.yaml")
    _edit(run, lambda m: m["config"].__setitem__("sha256", m["outputs"]["config.yaml"]))


def _reorder_geojson(run: Path) -> None:
    path = run / "scores.geojson"
    data = json.loads(path.read_text())
    data["features"].reverse()
    path.write_text(json.dumps(data))
    _rehash(run, "scores.geojson")


def _drop_embeddings(run: Path) -> None:
    (run / "embeddings.npz").unlink()
    _edit(run, lambda m: m["outputs"].pop("embeddings.npz"))


def _drop_a_site(run: Path) -> None:
    columns, rows = _rows(run)
    _write_rows(run, columns, rows[:-1])


def _add_file(rel: str, data: bytes = b"notes") -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(data)

    return apply


def _add_symlink(run: Path) -> None:
    os.symlink(run / "review.sqlite", run / "chips" / "zz_before.png")


def _replace_chip_with_symlink(run: Path) -> None:
    chip = sorted(p for p in (run / "chips").iterdir())[0]
    target = run.parent / f"{run.name}-outside.png"
    shutil.copyfile(chip, target)
    chip.unlink()
    os.symlink(target, chip)


def _per_site_unknown_scene(run: Path) -> None:
    columns, rows = _rows(run)
    rows[0]["after_scene"] = "other_scene"
    _write_rows(run, columns, rows)
    _edit(run, lambda m: m["per_site"][0].__setitem__(3, "other_scene"))


def _edit_sidecar(sidecar: Path) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        sidecar.write_text(json.dumps({"acquired": "2021-04-01T10:00:00Z"}), encoding="utf-8")

    return apply


def _drop_sidecar_entry(run: Path) -> None:
    _edit(run, lambda m: m["inputs"]["after"][0].__setitem__("sidecars", []))


def _swap_raster_hash(run: Path) -> None:
    def change(m: dict[str, Any]) -> None:
        b, a = m["inputs"]["before"][0], m["inputs"]["after"][0]
        b["sha256"], a["sha256"] = a["sha256"], b["sha256"]

    _edit(run, change)


def _any_manifest_edit(run: Path) -> None:
    _edit(run, lambda m: m.__setitem__("finished", "2020-01-01T00:00:00+00:00"))


def _sign_with(key_path: Path) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        _any_manifest_edit(run)
        sign_run(run, load_private_key(key_path))

    return apply


def _remove_signature(run: Path) -> None:
    (run / SIGNATURE_NAME).unlink()


def _garble_manifest(run: Path) -> None:
    (run / MANIFEST_NAME).write_text('{"format": "sitewatch-run/1", "outputs": ')


def _corpus(ctx: dict[str, Any]) -> list[tuple[str, Callable[[Path], None], dict[str, Any]]]:
    """``(name, tamper, verify_run keyword arguments)``; every case must be detected."""
    signed = {"public_key": ctx["public"]}
    return [
        # issue 10: outputs edited and their new SHA-256 put in the manifest
        ("score lowered, hash re-computed", _edit_rows(_lower_destroyed_score), {}),
        ("flag flipped, hash re-computed", _edit_rows(_flip_flag), {}),
        ("a site dropped from scores.csv, hash re-computed", _drop_a_site, {}),
        ("rows reordered, hash re-computed", _edit_rows(lambda rows: rows.reverse()), {}),
        ("scores.geojson reordered, hash re-computed", _reorder_geojson, {}),
        ("config.yaml edited, both hashes re-computed", _edit_config_yaml, {}),
        ("per-site scene not among the inputs", _per_site_unknown_scene, {}),
        # issue 10: inputs list emptied (it used to turn the input checks off)
        ("before list emptied", _set("inputs.before", []), {}),
        ("after list emptied", _set("inputs.after", []), {}),
        ("inputs section removed", _set("inputs", _DELETE), {}),
        ("sites entry removed", _set("inputs.sites", _DELETE), {}),
        ("model file list emptied", _set("model.files", []), {}),
        ("outputs emptied", _set("outputs", {}), {}),
        # issue 10: threshold, model hash, versions, counts
        ("threshold changed", _set("operating_point.threshold", 0.9), {}),
        ("operating point renamed", _set("operating_point.name", "evidence"), {}),
        ("threshold forged everywhere but config.yaml", _forge_threshold_everywhere_but_config_yaml, {}),
        ("threshold justified by a forged calibration", _forge_calibration, {}),
        ("model hash changed", _set("model.weights_sha256", "0" * 64), {}),
        ("model metadata changed", _set("model.meta.temperature", 3.0), {}),
        ("versions removed", _set("software", {}), {}),
        ("torch version removed", _set("software.torch", _DELETE), {}),
        ("sitewatch version changed", _set("sitewatch_version", "9.9.9"), {}),
        ("count of sites changed", _set("counts.sites", 24), {}),
        ("count of flagged changed", _set("counts.flagged", 0), {}),
        ("count of ok changed", _set("counts.ok", 1), {}),
        ("input site count changed", _set("inputs.sites.count", 1), {}),
        ("per-site rows removed", _set("per_site", []), {}),
        ("run fingerprint changed", _set("run_fingerprint", "f" * 64), {}),
        ("config values changed", _set("config.values.tiles.chip_px", 64), {}),
        ("started removed", _set("started", _DELETE), {}),
        ("raster hashes swapped", _swap_raster_hash, {}),
        ("output path outside the folder", lambda run: _edit(run, lambda m: m["outputs"].__setitem__("../x", "0" * 64)), {}),
        # issue 10: chips
        ("chip deleted with its entry", _delete_chip_with_entry, {}),
        ("a site's chips deleted everywhere", _delete_chips_of_a_site_everywhere, {}),
        ("embeddings deleted with their entry", _drop_embeddings, {}),
        # issue 10: anything unexpected in the folder
        ("extra file", _add_file("notes.txt"), {}),
        ("extra chip", _add_file("chips/zz_after.png", b"\x89PNG"), {}),
        ("leftover .tmp file", _add_file("scores.csv.tmp"), {}),
        ("review.sqlite name in a subfolder", _add_file("chips/review.sqlite"), {}),
        ("symlink to the verdict store", _add_symlink, {}),
        ("chip replaced by a symlink", _replace_chip_with_symlink, {}),
        # sidecars are inputs
        ("sidecar edited", _edit_sidecar(ctx["sidecar"]), {}),
        ("sidecar entry removed", _drop_sidecar_entry, {}),
        # digest and signature
        ("wrong digest", lambda run: None, {"digest": "sha256:" + "ab" * 32}),
        ("manifest edited, digest recorded", _any_manifest_edit, {"digest": "sha256:" + ctx["digest"]}),
        ("manifest edited after signing", _any_manifest_edit, signed),
        ("re-signed with another key", _sign_with(ctx["other_key"]), signed),
        ("checked with the wrong public key", lambda run: None, {"public_key": ctx["other_public"]}),
        ("signature removed", _remove_signature, signed),
        ("signature truncated", lambda run: (run / SIGNATURE_NAME).write_bytes(b"x" * 10), signed),
        ("manifest not JSON", _garble_manifest, {}),
    ]


def _detected(run: Path, kwargs: dict[str, Any]) -> tuple[bool, str]:
    try:
        report = verify_run(run, **kwargs)
    except RunFolderError as exc:  # a clear refusal is a detection too
        return True, str(exc)
    return (not report.ok), "; ".join(d.describe() for d in report.differences[:3])


def test_untouched_run_verifies_with_digest_and_signature(signed_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(signed_run["run"], run, symlinks=True)
    report = verify_run(run, digest="sha256:" + signed_run["digest"], public_key=signed_run["public"])
    assert report.ok, [d.describe() for d in report.differences]
    assert report.signature == "valid" and report.manifest_sha256 == signed_run["digest"]
    assert report.consistency_checks > 100 and report.checked >= 20
    manifest = _manifest(run)
    (sidecar,) = manifest["inputs"]["after"][0]["sidecars"]
    assert sidecar["path"] == str(signed_run["sidecar"].resolve()) and sidecar["sha256"] == sha256_file(signed_run["sidecar"])
    assert manifest["counts"]["flagged"] > 0  # the threshold cases forge real flags


def test_tamper_corpus(signed_run, tmp_path, capsys):
    sidecar = signed_run["sidecar"]
    original_sidecar = sidecar.read_bytes()
    cases = _corpus(signed_run)
    missed = []
    for i, (name, tamper, kwargs) in enumerate(cases):
        run = tmp_path / f"case{i:02d}"
        shutil.copytree(signed_run["run"], run, symlinks=True)
        try:
            tamper(run)
            found, what = _detected(run, kwargs)
        finally:
            sidecar.write_bytes(original_sidecar)
        if not found:
            missed.append(name)
        elif os.environ.get("SITEWATCH_TAMPER_SHOW"):
            print(f"{name}: {what}")
        shutil.rmtree(run)
    with capsys.disabled():
        print(f"\ntamper corpus: {len(cases)} cases tried, {len(cases) - len(missed)} detected, {len(missed)} missed")
    assert not missed, f"not detected: {missed}"
    assert len(cases) >= 40


def test_findings_name_the_file_and_the_field(signed_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(signed_run["run"], run, symlinks=True)
    _set("inputs.before", [])(run)
    _set("operating_point.threshold", 0.9)(run)
    _delete_chip_with_entry(run)
    _add_file("notes.txt")(run)
    lines = [d.describe() for d in verify_run(run).differences]
    assert any(line.startswith("manifest inconsistent: manifest.json: inputs.before: is empty") for line in lines), lines
    assert any("manifest.json: operating_point.threshold" in line and "0.9" in line for line in lines), lines
    assert any("scores.csv names chips the manifest does not list" in line for line in lines), lines
    assert "output added: notes.txt: a file the manifest does not list" in lines


def test_verify_checks_the_verdict_chain(signed_run, tmp_path, capsys):
    from review.store import VerdictStore
    from sitewatch.cli import main

    run = tmp_path / "run"
    shutil.copytree(signed_run["run"], run, symlinks=True)
    store = VerdictStore.for_run(run)
    for sid, verdict in (("s000", "destroyed"), ("s001", "no-damage"), ("s003", "destroyed")):
        store.add_verdict(sid, "ann", verdict)
    head = store.chain_head()[1]
    assert main(["verify", str(run)]) == 0
    assert f"verdicts: 3, hash chain intact, head {head}" in capsys.readouterr().out
    con = sqlite3.connect(run / "review.sqlite")
    con.execute("DROP TRIGGER verdicts_no_update")
    con.execute("UPDATE verdicts SET verdict = 'no-damage' WHERE site_id = 's000'")
    con.commit()
    con.close()
    assert main(["verify", str(run)]) == 1
    out = capsys.readouterr().out
    assert "hash chain BROKEN (first broken verdict 1)" in out and "edited outside the app" in out


def test_edited_journal_with_recomputed_checksum_is_refused_and_rescored(signed_run, tmp_path, caplog):
    """Issue 10: a destroyed site set to 0.000001 in the journal, checksum re-computed, was trusted."""
    import hashlib

    scene = signed_run["scene"]
    run = tmp_path / "run"
    shutil.copytree(signed_run["run"], run, symlinks=True)
    journal = run / JOURNAL_NAME
    lines = journal.read_text(encoding="utf-8").splitlines()
    target = json.loads(lines[1])
    top = read_scores_csv(run / "scores.csv")[0]
    edited = None
    for n, line in enumerate(lines[1:], start=1):
        outer = json.loads(line)
        if "record" not in outer:  # the inputs line (the rasters' full hashes), not a batch
            continue
        for row in outer["record"]["rows"]:
            if row["site_id"] == top["site_id"]:
                row["score"] = "0.000001"
                edited = n
        if edited == n:
            target = outer
            break
    assert edited is not None
    body = json.dumps(target["record"], ensure_ascii=False, separators=(",", ":"))
    for field in ("sha", "mac"):  # the old checksum, and a keyless SHA-256 in the new field
        target[field] = hashlib.sha256(body.encode("utf-8")).hexdigest()[: 16 if field == "sha" else 64]
    lines[edited] = json.dumps(target, ensure_ascii=False, separators=(",", ":"))
    journal.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert "edited outside sitewatch" in scan_journal(journal, RunKeyStore.from_setting(None)).refused

    before = (run / "scores.csv").read_bytes()
    with caplog.at_level("WARNING"):
        summary = run_detect(scene.sites, [scene.before], [scene.after], run, tiles=TILES, detect=DETECT, progress=False)
    assert "edited outside sitewatch" in caplog.text and "scored again" in caplog.text
    kinds = [next(k for k in ("record", "inputs", "resumed") if k in json.loads(line)) for line in lines[1:edited]]
    # the batches before the edited line are trusted (the run's inputs line, the rasters' full
    # hashes, came before it too: else that invocation's batches are all scored again)
    assert summary.batches_resumed == (kinds.count("record") if "inputs" in kinds else 0) < summary.batches_total
    assert (run / "scores.csv").read_bytes() == before  # re-scored, not trusted
    assert read_scores_csv(run / "scores.csv")[0]["score"] == top["score"]
    assert verify_run(run).ok


def test_cli_prints_digest_signs_and_verifies(signed_run, tmp_path, capsys):
    from sitewatch.cli import main

    scene = signed_run["scene"]
    out = tmp_path / "run"
    args = ["detect", "--sites", str(scene.sites), "--before", str(scene.before), "--after", str(scene.after), "--out", str(out)]
    assert main([*args, "--set", "detect.batch_size=8", "--chips", "2", "--sign", str(signed_run["key"]), "-q"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == f"run digest: sha256:{sha256_file(out / MANIFEST_NAME)}"
    digest = printed[-1].split()[-1]
    pub = str(signed_run["key"]) + ".pub"
    assert main(["verify", str(out), "--digest", digest, "--public-key", pub]) == 0
    text = capsys.readouterr().out
    assert f"run digest: {digest} (as recorded)" in text and "signature: valid" in text
    assert main(["verify", str(out), "--public-key", str(signed_run["other_key"]) + ".pub"]) == 1
    assert "signature invalid" in capsys.readouterr().out
    assert main(["verify", str(out), "--digest", "sha256:" + "0" * 64]) == 1
    assert "not the sha256:000" in capsys.readouterr().out
    assert main(["verify", str(out), "--digest", "nonsense"]) == 2
    # a bad key stops detect before any work, naming the flag
    assert main([*args, "--sign", pub, "-q"]) == 2
    assert "--sign" in capsys.readouterr().err
    assert main(["keygen", str(tmp_path / "k")]) == 0 and (tmp_path / "k.pub").is_file()
    assert main(["keygen", str(tmp_path / "k")]) == 1  # never overwritten silently
