"""Run folders whose ``manifest.json`` lists their outputs, as ``sitewatch detect`` writes them.

The contract-written fixture (``make_run.write_run``) lists no outputs, so the review app serves
none of its files; :func:`record_outputs` lists every output file with detect's own hashing,
read and written through the run folder contract, and leaves a manifest that lists some alone.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from detect.provenance import hash_outputs
from detect.runfolder import read_manifest, write_manifest


def record_outputs(run_dir: Path) -> Path:
    """List every output file of ``run_dir`` with its SHA-256 in its manifest (unless listed)."""
    manifest = read_manifest(run_dir)
    if not manifest.outputs:
        write_manifest(run_dir, replace(manifest, outputs=hash_outputs(run_dir)))
    return run_dir
