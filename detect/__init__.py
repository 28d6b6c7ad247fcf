"""Batch detection: scoring, ranking, run-folder outputs, provenance, resuming, Dask.

Public API:

- :func:`detect.run.run_detect` — ``sitewatch detect`` as a library call; returns a
  :class:`detect.run.RunSummary`.
- :func:`detect.verify.verify_run` — ``sitewatch verify``; returns a
  :class:`detect.provenance.VerifyReport`.
- :func:`detect.demo.run_demo` — ``sitewatch demo``.
- :func:`detect.ranking.resolve_operating_point`, :func:`detect.ranking.rank_rows`.
- :mod:`detect.runfolder` — the run folder contract: :class:`~detect.runfolder.ScoreRow`,
  :class:`~detect.runfolder.Manifest`, :func:`~detect.runfolder.read_scores`,
  :func:`~detect.runfolder.read_manifest`, and the one writer of each file.

Modules: ``pipeline`` (batch plan, reader thread, scoring a batch), ``cluster`` (Dask),
``journal`` (resume journal), ``ranking``, ``runfolder`` (the run folder contract: scores.csv/geojson,
manifest.json, embeddings.npz), ``cutting`` (one batch through the tiles stage),
``site_chips`` (before/after/heatmap PNGs for people), ``report`` (report.html), ``provenance`` (hashes), ``verify`` (``sitewatch
verify``), ``signing`` (Ed25519 signatures of manifests), ``agreement`` (ROC AUC, precision at k),
``demo``, ``config``.

Must not import ``train``.
"""
