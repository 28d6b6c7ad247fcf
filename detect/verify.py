"""``sitewatch verify``: is a run folder what ``sitewatch detect`` wrote, and nothing else?

A manifest that lists SHA-256 hashes proves nothing by itself: whoever edits ``scores.csv`` can
put its new hash in the manifest. :func:`verify_run` therefore checks four things:

1. **hashes**: every output in the folder, and the sites file, rasters, their JSON sidecars and the
   model files at the recorded paths, against the manifest;
2. **the manifest's own consistency**: every required section present, of the right type and not
   empty (an emptied input list is a failure, never "nothing to check"); the fingerprint parts
   re-computed from the recorded inputs, model and config; the model hash equal to the
   checkpoint's; the operating point re-derived from the config and the model's calibration;
   counts, per-site scenes and times, ranks, flags and chips equal to what ``scores.csv``,
   ``scores.geojson`` and ``embeddings.npz`` hold;
3. **the folder**: nothing in it that the manifest does not list, apart from the run's working
   files (journal, lock), the signature and the review app's verdict store;
4. optionally, **the digest** the analyst recorded outside the folder (``--digest``) and an
   **Ed25519 signature** (``--public-key``, :mod:`detect.signing`).

Items 1 to 3 catch mistakes and careless edits; only 4 holds against someone who rewrites the
whole folder consistently, so record the run digest ``detect`` prints, or sign the run.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from detect.config import PRESENTATION_KEYS
from detect.runfolder import CHIP_COLUMNS, FORMAT_VERSION, KNOWN_FORMATS, PER_SITE_COLUMNS, Manifest, read_scores_csv
from detect.provenance import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Difference,
    VerifyReport,
    epoch_component,
    read_manifest_json,
    sha256_text,
)
from detect.ranking import resolve_operating_point
from sitewatch.errors import SitewatchError, UsageError
from sitewatch.hashing import sha256_file

#: top-level files of a run folder that are not outputs and may be there (working state, the
#: signature, the review app's verdict store with its WAL files and chip cache).
ALLOWED_UNLISTED = frozenset({MANIFEST_NAME, SIGNATURE_NAME, "journal.jsonl", "run.lock"})
ALLOWED_UNLISTED_PREFIXES = ("review.sqlite",)
#: outputs every run folder lists.
REQUIRED_OUTPUTS = ("scores.csv", "scores.geojson", "config.yaml", "report.html")
#: software versions every manifest records.
REQUIRED_VERSIONS = ("python", "platform", "sitewatch", "numpy", "torch", "rasterio")
#: the per-site columns of the manifest, in order.

_HEX64 = re.compile(r"[0-9a-f]{64}")


def parse_digest(text: str) -> str:
    """A run digest as 64 lower-case hex digits, from ``sha256:HEX`` or ``HEX``.

    Raises:
        UsageError: not a SHA-256 digest.
    """
    value = text.strip().lower()
    value = value.removeprefix("sha256:")
    if not _HEX64.fullmatch(value):
        raise UsageError(f"digest {text!r}: give the run digest detect printed, 'sha256:' and 64 hex digits")
    return value


class _Checks:
    """Collects findings about ``manifest.json`` and counts the checks made."""

    def __init__(self) -> None:
        self.found: list[Difference] = []
        self.count = 0

    def fail(self, where: str, detail: str, expected: Any = "", actual: Any = "") -> None:
        self.found.append(
            Difference("manifest", f"{MANIFEST_NAME}: {where}", "inconsistent", _short(expected), _short(actual), detail)
        )

    def equal(self, where: str, what: str, expected: Any, actual: Any) -> bool:
        """Record a finding unless ``expected == actual``; ``what`` says what was compared."""
        self.count += 1
        if expected == actual:
            return True
        self.fail(where, f"{what}: recorded {_short(actual)}, expected {_short(expected)}", expected, actual)
        return False

    def true(self, where: str, ok: bool, detail: str) -> bool:
        self.count += 1
        if not ok:
            self.fail(where, detail)
        return ok


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _typename(kind: type | tuple[type, ...]) -> str:
    names = {dict: "an object", list: "a list", str: "text", int: "a whole number", float: "a number", bool: "true/false"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _get(
    checks: _Checks, data: Any, dotted: str, kind: type | tuple[type, ...], *, empty_ok: bool = False, within: str = ""
) -> Any:
    """``data[a][b]...`` for ``dotted = "a.b"``; a finding (and None) when missing, of the wrong
    type or empty. ``within`` names where ``data`` is in the manifest (``inputs.before[0]``)."""
    checks.count += 1
    shown = f"{within}.{dotted}" if within else dotted
    value = data
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            checks.fail(shown, "missing: a run manifest always has it (the manifest was edited or is not from sitewatch detect)")
            return None
        value = value[part]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        checks.fail(shown, f"is true/false, not {_typename(kind)}")
        return None
    if not isinstance(value, kind):
        checks.fail(shown, f"is {type(value).__name__}, not {_typename(kind)}")
        return None
    if not empty_ok and isinstance(value, (dict, list, str)) and not value:
        checks.fail(shown, "is empty: a finished run always records it (an emptied section would turn its checks off)")
        return None
    return value


def _hex(checks: _Checks, data: Any, dotted: str, *, within: str = "") -> str | None:
    value = _get(checks, data, dotted, str, within=within)
    shown = f"{within}.{dotted}" if within else dotted
    if value is not None and not checks.true(shown, bool(_HEX64.fullmatch(value)), f"{value!r} is not a SHA-256 (64 hex digits)"):
        return None
    return value


def _entries(checks: _Checks, manifest: Mapping[str, Any], dotted: str, fields: Sequence[str]) -> list[dict[str, Any]]:
    """A non-empty list of objects, each with SHA-256 ``sha256`` and the text ``fields``."""
    items = _get(checks, manifest, dotted, list)
    good: list[dict[str, Any]] = []
    for i, item in enumerate(items or []):
        where = f"{dotted}[{i}]"
        if not checks.true(where, isinstance(item, dict), "is not an object"):
            continue
        ok = [_get(checks, item, f, str, within=where) is not None for f in fields]
        if all(ok) and _hex(checks, item, "sha256", within=where) is not None:
            good.append(item)
    return good


@dataclass
class _Recorded:
    """The parts of a manifest the file checks need (after the structure checks)."""

    outputs: dict[str, str] = field(default_factory=dict)
    inputs: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, path, sha256)


def check_structure(manifest: Mapping[str, Any], checks: _Checks) -> _Recorded:
    """Every required section present, typed and non-empty; returns what the file checks need."""
    rec = _Recorded()
    fmt = _get(checks, manifest, "format", str)
    if fmt is not None:
        if fmt not in KNOWN_FORMATS:  # version-1 runs ("sitewatch-run/1") verify as they are
            checks.equal("format", "format", MANIFEST_FORMAT, fmt)
        if fmt == MANIFEST_FORMAT:
            checks.equal("format_version", "format_version", FORMAT_VERSION, manifest.get("format_version"))
    try:  # the contract's own reader: every section there and of its type
        Manifest.from_json(dict(manifest), MANIFEST_NAME)
    except SitewatchError as exc:
        checks.true("manifest", False, f"the run folder contract cannot read it: {exc}")
    for name in ("sitewatch_version", "started", "finished"):
        _get(checks, manifest, name, str)
    _hex(checks, manifest, "run_fingerprint")
    for part in ("sites", "before", "after", "config"):
        _hex(checks, manifest, f"fingerprint_components.{part}")
    for dotted in ("fingerprint_components.model", "fingerprint_components.software"):
        _get(checks, manifest, dotted, str)
    # inputs
    sites_path = _get(checks, manifest, "inputs.sites.path", str)
    sites_sha = _hex(checks, manifest, "inputs.sites.sha256")
    count = _get(checks, manifest, "inputs.sites.count", int)
    if count is not None:
        checks.true("inputs.sites.count", count > 0, f"is {count}: a run scores at least one site")
    if sites_path and sites_sha:
        rec.inputs.append(("input", sites_path, sites_sha))
    for epoch in ("before", "after"):
        scenes = _entries(checks, manifest, f"inputs.{epoch}", ("scene_id", "path"))
        ids = [e["scene_id"] for e in scenes]
        checks.true(f"inputs.{epoch}", len(ids) == len(set(ids)), f"scene ids repeat ({sorted({i for i in ids if ids.count(i) > 1})})")
        for i, e in enumerate(scenes):
            rec.inputs.append(("input", e["path"], e["sha256"]))
            sidecars = e.get("sidecars", [])
            if not checks.true(f"inputs.{epoch}[{i}].sidecars", isinstance(sidecars, list), "is not a list"):
                continue
            for j, sc in enumerate(sidecars):
                ok = isinstance(sc, dict) and isinstance(sc.get("path"), str) and isinstance(sc.get("sha256"), str)
                if checks.true(f"inputs.{epoch}[{i}].sidecars[{j}]", ok and bool(_HEX64.fullmatch(sc["sha256"])), "needs a path and a SHA-256"):
                    rec.inputs.append(("input", sc["path"], sc["sha256"]))
    # model
    _get(checks, manifest, "model.path", str)
    _hex(checks, manifest, "model.weights_sha256")
    _get(checks, manifest, "model.meta", dict)
    for e in _entries(checks, manifest, "model.files", ("path",)):
        rec.inputs.append(("model", e["path"], e["sha256"]))
    # config, operating point, versions, execution, counts
    _get(checks, manifest, "config.file", str)
    _hex(checks, manifest, "config.sha256")
    _get(checks, manifest, "config.values.detect", dict)
    _get(checks, manifest, "config.values.tiles", dict)
    _get(checks, manifest, "operating_point.name", str)
    _get(checks, manifest, "operating_point.source", str)
    threshold = _get(checks, manifest, "operating_point.threshold", (int, float))
    if threshold is not None:
        checks.true("operating_point.threshold", 0.0 <= threshold <= 1.0 and math.isfinite(threshold), f"{threshold} is not a probability")
    for name in REQUIRED_VERSIONS:
        _get(checks, manifest, f"software.{name}", str)
    _get(checks, manifest, "execution.mode", str)
    for name in ("sites", "ok", "cannot_assess", "flagged"):
        n = _get(checks, manifest, f"counts.{name}", int)
        if n is not None:
            checks.true(f"counts.{name}", n >= 0, f"is {n}")
    columns = _get(checks, manifest, "per_site_columns", list)
    if columns is not None:
        checks.equal("per_site_columns", "per-site columns", list(PER_SITE_COLUMNS), columns)
    per_site = _get(checks, manifest, "per_site", list)
    for i, row in enumerate(per_site or []):
        ok = isinstance(row, list) and len(row) == len(PER_SITE_COLUMNS) and all(isinstance(v, str) for v in row)
        if not checks.true(f"per_site[{i}]", ok, f"is not a row of {len(PER_SITE_COLUMNS)} texts"):
            break
    outputs = _get(checks, manifest, "outputs", dict)
    for rel, sha in (outputs or {}).items():
        where = f"outputs[{rel!r}]"
        p = Path(rel)
        inside = not p.is_absolute() and ".." not in p.parts and rel == p.as_posix() and rel not in ALLOWED_UNLISTED
        if checks.true(where, inside, "is not a file inside the run folder") and checks.true(
            where, isinstance(sha, str) and bool(_HEX64.fullmatch(sha)), "is not a SHA-256"
        ):
            rec.outputs[rel] = sha
    for name in REQUIRED_OUTPUTS:
        checks.true("outputs", name in rec.outputs, f"does not list {name}: every run writes it")
    return rec


def _fingerprint_config(values: Mapping[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(values))
    data["detect"] = {k: v for k, v in data.get("detect", {}).items() if k not in PRESENTATION_KEYS}
    return data


def check_consistency(run_dir: Path, manifest: Mapping[str, Any], checks: _Checks, hashes_ok: Callable[[str], bool]) -> None:
    """The manifest against itself and against the run's own files.

    Args:
        hashes_ok: whether an output's file matches its recorded hash (content checks read only
            files that do, so one edit gives one finding).
    """
    comp = manifest.get("fingerprint_components") if isinstance(manifest.get("fingerprint_components"), dict) else {}
    inputs = manifest.get("inputs") if isinstance(manifest.get("inputs"), dict) else {}
    model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    values = config.get("values") if isinstance(config.get("values"), dict) else {}
    detect_values = values.get("detect") if isinstance(values.get("detect"), dict) else {}
    op = manifest.get("operating_point") if isinstance(manifest.get("operating_point"), dict) else {}
    counts = manifest.get("counts") if isinstance(manifest.get("counts"), dict) else {}
    outputs = manifest.get("outputs") if isinstance(manifest.get("outputs"), dict) else {}
    meta = model.get("meta") if isinstance(model.get("meta"), dict) else {}

    # the fingerprint, re-computed from the recorded inputs, model and config
    try:
        if isinstance(inputs.get("sites"), dict):
            checks.equal("fingerprint_components.sites", "sites file hash", inputs["sites"].get("sha256"), comp.get("sites"))
        for epoch in ("before", "after"):
            if isinstance(inputs.get(epoch), list) and inputs[epoch]:
                checks.equal(
                    f"fingerprint_components.{epoch}", f"{epoch} rasters' hashes", epoch_component(inputs[epoch]), comp.get(epoch)
                )
        if model.get("weights_sha256") and meta:
            expected = model["weights_sha256"] + ":" + sha256_text(json.dumps(meta, sort_keys=True))
            checks.equal("fingerprint_components.model", "model weights and metadata", expected, comp.get("model"))
        if values:
            expected = sha256_text(json.dumps(_fingerprint_config(values), sort_keys=True))
            checks.equal("fingerprint_components.config", "config values", expected, comp.get("config"))
        if isinstance(manifest.get("sitewatch_version"), str):
            checks.equal("fingerprint_components.software", "software", f"sitewatch {manifest['sitewatch_version']}", comp.get("software"))
        if comp:
            checks.equal("run_fingerprint", "fingerprint of the components", sha256_text(json.dumps(comp, sort_keys=True)), manifest.get("run_fingerprint"))
    except (KeyError, TypeError, AttributeError) as exc:
        checks.fail("fingerprint_components", f"cannot be re-computed from the recorded inputs ({exc})")

    # the model: the weights hash is the checkpoint's
    weights = model.get("weights_sha256")
    files = [f for f in model.get("files", []) if isinstance(f, dict)] if isinstance(model.get("files"), list) else []
    tensors = [f for f in files if str(f.get("path", "")).endswith(".safetensors")]
    if weights and files:
        if checks.true("model.files", len(tensors) == 1, f"lists {len(tensors)} .safetensors files, not the checkpoint's one"):
            checks.equal("model.weights_sha256", "weights hash vs the checkpoint file's", tensors[0].get("sha256"), weights)
        if meta.get("weights_sha256"):
            checks.equal("model.meta.weights_sha256", "weights hash in the checkpoint's metadata", weights, meta["weights_sha256"])

    # the config: the file is the recorded one and holds the recorded values
    if outputs.get("config.yaml") and config.get("sha256"):
        checks.equal("config.sha256", "config.yaml hash", outputs["config.yaml"], config["sha256"])
    if values and hashes_ok("config.yaml"):
        import yaml

        try:
            on_disk = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            checks.fail("config.values", f"config.yaml cannot be read ({exc})")
        else:
            checks.equal("config.values", "config values vs config.yaml", on_disk, values)

    # the operating point, re-derived from the config and the model's calibration, or from the
    # event calibration `sitewatch calibrate` recorded (it re-ranks scores.csv after the run)
    calibration = manifest.get("calibration") if isinstance(manifest.get("calibration"), dict) else None
    spec = detect_values.get("operating_point")
    if calibration is not None and op:
        points = calibration.get("operating_points")
        point = points.get(op.get("name")) if isinstance(points, dict) else None
        if checks.true(
            "operating_point.name", isinstance(point, dict),
            f"{op.get('name')!r} is not one of the operating points the recorded calibration fitted "
            f"({', '.join(sorted(points)) if isinstance(points, dict) else 'none recorded'})",
        ):
            checks.equal("operating_point.threshold", f"threshold of {op.get('name')!r} in calibration.operating_points", point.get("threshold"), op.get("threshold"))
        # ...and the calibration recorded is the one its own file holds
        if checks.true("calibration", "calibration.json" in outputs, "a calibration is recorded but calibration.json (written by `sitewatch calibrate`) is not listed") and hashes_ok("calibration.json"):
            try:
                on_disk = json.loads((run_dir / "calibration.json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                checks.fail("calibration", f"calibration.json cannot be read ({exc})")
            else:
                for key in ("operating_points", "screening_rule", "temperature", "tag", "labels", "n", "positives"):
                    checks.equal(f"calibration.{key}", f"{key} vs calibration.json", on_disk.get(key) if isinstance(on_disk, dict) else None, calibration.get(key))
    elif isinstance(spec, str) and op:
        try:
            points = dict(meta.get("operating_points") or {})
            calibration = manifest.get("calibration")
            if isinstance(calibration, dict) and isinstance(calibration.get("operating_points"), dict):
                # sitewatch calibrate refitted the thresholds on this event's labelled sites
                points = {k: v.get("threshold") for k, v in calibration["operating_points"].items() if isinstance(v, dict)}
            expected_op = resolve_operating_point(spec, points)
        except (SitewatchError, TypeError, ValueError) as exc:
            checks.fail("operating_point", f"config detect.operating_point={spec!r} does not resolve with the model ({exc})")
        else:
            checks.equal("operating_point.name", "operating point name", expected_op.name, op.get("name"))
            checks.equal("operating_point.threshold", f"threshold of {spec!r}", expected_op.threshold, op.get("threshold"))

    # scores.csv and the other outputs against counts, per-site records, threshold and chips
    if not hashes_ok("scores.csv"):
        return
    try:
        rows = read_scores_csv(run_dir / "scores.csv")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        checks.fail("outputs", f"scores.csv cannot be read ({exc})")
        return
    n = len(rows)
    if isinstance(inputs.get("sites"), dict):
        checks.equal("inputs.sites.count", "input sites vs scores.csv rows", n, inputs["sites"].get("count"))
    ok_rows = [r for r in rows if r.get("status") == "ok"]
    flagged = sum(1 for r in rows if r.get("flagged") == "true")
    checks.equal("counts.sites", "sites vs scores.csv rows", n, counts.get("sites"))
    checks.equal("counts.ok", "assessed sites in scores.csv", len(ok_rows), counts.get("ok"))
    checks.equal("counts.cannot_assess", "cannot_assess sites in scores.csv", n - len(ok_rows), counts.get("cannot_assess"))
    checks.equal("counts.flagged", "flagged sites in scores.csv", flagged, counts.get("flagged"))
    per_site = manifest.get("per_site") if isinstance(manifest.get("per_site"), list) else []
    if checks.equal("per_site", "per-site rows vs scores.csv rows", n, len(per_site)):
        # by site (the order is scores.csv's at detect time; `sitewatch calibrate` may re-rank)
        by_id = {row.get("site_id"): (i, row) for i, row in enumerate(rows)}
        for j, rec in enumerate(per_site):
            if not isinstance(rec, list) or len(rec) != len(PER_SITE_COLUMNS):
                continue
            if rec[0] not in by_id:
                checks.fail(f"per_site[{j}]", f"site {rec[0]!r} is not in scores.csv")
                break
            i, row = by_id[rec[0]]
            from_csv = [row.get(c, "") for c in PER_SITE_COLUMNS]
            if from_csv != rec:
                bad = [c for c, a, b in zip(PER_SITE_COLUMNS, from_csv, rec) if a != b]
                checks.fail(f"per_site[{j}]", f"site {rec[0]!r}: {', '.join(bad)} differ from scores.csv row {i + 1}", from_csv, rec)
                break
        checks.count += 1
        checks.true("per_site", len(by_id) == n, "scores.csv repeats a site_id")
    scene_ids = {
        epoch: {e.get("scene_id") for e in inputs.get(epoch, []) if isinstance(e, dict)}
        for epoch in ("before", "after")
        if isinstance(inputs.get(epoch), list)
    }
    for epoch, known in scene_ids.items():
        unknown = sorted({r.get(f"{epoch}_scene", "") for r in rows} - known - {""})
        checks.true(f"inputs.{epoch}", not unknown, f"scores.csv names {epoch} scene(s) {unknown[:5]} that are not among the hashed inputs")
    threshold = op.get("threshold")
    prev = math.inf
    rank = 0
    for i, r in enumerate(rows, start=1):
        where = f"scores.csv row {i} (site {r.get('site_id')!r})"
        if r.get("status") == "ok":
            try:
                score = float(r.get("score", ""))
            except ValueError:
                checks.fail("operating_point", f"{where}: score {r.get('score')!r} is not a number")
                break
            rank += 1
            want_flag = "true" if isinstance(threshold, (int, float)) and score >= threshold else "false"
            if r.get("flagged") != want_flag or r.get("rank") != str(rank) or score > prev:
                checks.fail(
                    "operating_point",
                    f"{where}: score {score}, rank {r.get('rank')!r}, flagged {r.get('flagged')!r} do not follow from "
                    f"the threshold {threshold} and the ranking by score",
                )
                break
            prev = score
        elif r.get("score") or r.get("rank") or r.get("flagged") != "false":
            checks.fail("counts", f"{where}: a {r.get('status')!r} site with a score, rank or flag")
            break
    checks.count += 1
    # chips: exactly the top-N assessed sites, every one listed
    top_n = detect_values.get("chips_top_n")
    if isinstance(top_n, int):
        wanted = len(ok_rows) if top_n < 0 else min(top_n, len(ok_rows))
        with_chips = [r for r in rows if any(r.get(c) for c in CHIP_COLUMNS)]
        # the top sites at detect time; after `sitewatch calibrate` re-ranked, still that many assessed ones
        top = [r.get("site_id") for r in ok_rows[:wanted]]
        same_sites = (
            [r.get("site_id") for r in with_chips] == top
            if calibration is None
            else len(with_chips) == wanted and all(r.get("status") == "ok" for r in with_chips)
        )
        checks.true(
            "outputs",
            same_sites and all(r.get(c) for r in with_chips for c in CHIP_COLUMNS),
            f"chips_top_n={top_n}: scores.csv should name chips for the top {wanted} assessed sites, "
            f"it names them for {len(with_chips)}",
        )
    referenced = {r.get(c) for r in rows for c in CHIP_COLUMNS} - {"", None}
    missing = sorted(referenced - set(outputs))
    checks.true("outputs", not missing, f"scores.csv names chips the manifest does not list: {missing[:5]}")
    strays = sorted(rel for rel in outputs if rel.startswith("chips/") and rel not in referenced)
    checks.true("outputs", not strays, f"lists chips no scores.csv row names: {strays[:5]}")
    ids = [r.get("site_id") for r in rows]
    if hashes_ok("scores.geojson"):
        try:
            gj = json.loads((run_dir / "scores.geojson").read_text(encoding="utf-8"))
            gj_ids = [f["properties"]["site_id"] for f in gj["features"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            checks.fail("outputs", f"scores.geojson cannot be read ({exc})")
        else:
            checks.equal("outputs", "scores.geojson's sites vs scores.csv's", ids, gj_ids)
    embeddings = detect_values.get("embeddings")
    if isinstance(embeddings, bool):
        checks.equal("outputs", "embeddings.npz listed (config detect.embeddings)", embeddings, "embeddings.npz" in outputs)
        if embeddings and hashes_ok("embeddings.npz"):
            import numpy as np

            try:
                with np.load(run_dir / "embeddings.npz", allow_pickle=False) as data:
                    emb_ids = [str(s) for s in data["site_id"]]
            except (OSError, ValueError, KeyError) as exc:
                checks.fail("outputs", f"embeddings.npz cannot be read ({exc})")
            else:
                ok_ids = [r.get("site_id") for r in ok_rows]
                if calibration is not None:  # re-ranked after detect wrote embeddings.npz
                    ok_ids, emb_ids = sorted(ok_ids), sorted(emb_ids)
                checks.equal("outputs", "embeddings.npz's sites vs the assessed sites of scores.csv", ok_ids, emb_ids)


def _check_file(kind: str, path: Path, expected: str, shown: str) -> Difference | None:
    if path.is_symlink():
        return Difference(kind, shown, "changed", expected, "", "is a symbolic link, not the file the run wrote")
    if not path.is_file():
        return Difference(kind, shown, "missing", expected, "")
    try:
        actual = sha256_file(path)
    except OSError:
        return Difference(kind, shown, "unreadable", expected, "")
    if actual != expected:
        return Difference(kind, shown, "changed", expected, actual)
    return None


def unexpected_files(run_dir: Path, listed: Iterable[str]) -> list[Difference]:
    """Everything in ``run_dir`` that is neither a listed output nor an allowed working file."""
    listed = set(listed)
    found = []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if path.is_dir() and not path.is_symlink():
            continue
        if rel in listed:  # a listed path that is a link is reported by the hash check
            continue
        top_level = "/" not in rel
        if top_level and not path.is_symlink() and (rel in ALLOWED_UNLISTED or rel.startswith(ALLOWED_UNLISTED_PREFIXES)):
            continue
        what = "a symbolic link" if path.is_symlink() else ("not a regular file" if not path.is_file() else "a file")
        found.append(Difference("output", rel, "added", "", "", f"{what} the manifest does not list"))
    return found


def verify_run(
    run_dir: str | Path,
    *,
    check_inputs: bool = True,
    digest: str | None = None,
    public_key: Any = None,
) -> VerifyReport:
    """Check a run folder: hashes, the manifest's consistency, the folder, digest and signature.

    Args:
        run_dir: a finished run folder.
        check_inputs: also re-hash the sites file, rasters, sidecars and model files at the paths
            recorded in the manifest.
        digest: the run digest recorded when the run finished (``sha256:HEX`` or ``HEX``); a
            finding when ``manifest.json`` no longer has it.
        public_key: an Ed25519 public key (:func:`detect.signing.load_public_key`); a finding
            unless ``manifest.json.sig`` is a valid signature of the manifest under it.

    Returns:
        A :class:`VerifyReport`; ``report.ok`` when nothing differs.

    Raises:
        RunFolderError: the folder has no readable manifest.
        UsageError: ``digest`` is not a SHA-256.
    """
    run_dir = Path(run_dir)
    wanted_digest = parse_digest(digest) if digest is not None else None
    manifest = read_manifest_json(run_dir)  # raw: a damaged manifest is reported, not refused
    checks = _Checks()
    recorded = check_structure(manifest, checks)
    differences: list[Difference] = []
    checked = 0
    bad_outputs: set[str] = set()
    for rel, expected in sorted(recorded.outputs.items()):
        checked += 1
        diff = _check_file("output", run_dir / rel, expected, rel)
        if diff:
            differences.append(diff)
            bad_outputs.add(rel)
    if check_inputs:
        for kind, path, expected in recorded.inputs:
            checked += 1
            diff = _check_file(kind, Path(path), expected, path)
            if diff:
                differences.append(diff)
    differences.extend(unexpected_files(run_dir, recorded.outputs))
    check_consistency(run_dir, manifest, checks, lambda rel: rel in recorded.outputs and rel not in bad_outputs)
    differences.extend(checks.found)

    manifest_sha = sha256_file(run_dir / MANIFEST_NAME)
    if wanted_digest is not None and manifest_sha != wanted_digest:
        differences.append(
            Difference(
                "manifest", MANIFEST_NAME, "digest", wanted_digest, manifest_sha,
                f"the run digest is sha256:{manifest_sha}, not the sha256:{wanted_digest} recorded: "
                "this is not the manifest that run finished with",
            )
        )
    signature, signer = ("unchecked" if (run_dir / SIGNATURE_NAME).is_file() else "none"), ""
    if public_key is not None:
        from detect.signing import check_signature, key_fingerprint

        signer = key_fingerprint(public_key)
        problem = check_signature(run_dir, public_key)
        signature = "invalid" if problem else "valid"
        if problem:
            differences.append(Difference("signature", SIGNATURE_NAME, "invalid", "", "", problem))
    return VerifyReport(
        run_dir=run_dir,
        checked=checked,
        differences=tuple(differences),
        manifest_sha256=manifest_sha,
        consistency_checks=checks.count,
        signature=signature,
        signer=signer,
    )
