"""Run folders whose ``manifest.json`` lists their outputs, as ``sitewatch detect`` writes them.

The hand-written fixture (``make_run.write_run``) predates the review app's rule that only listed
outputs are served; :func:`record_outputs` adds the list with detect's own hashing, and leaves a
manifest that already has one alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from detect.provenance import hash_outputs


def record_outputs(run_dir: Path) -> Path:
    """List every output file of ``run_dir`` with its SHA-256 in its manifest (unless listed)."""
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if "outputs" not in manifest:
        manifest["outputs"] = hash_outputs(run_dir)
        path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return run_dir
