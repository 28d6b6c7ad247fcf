"""Batch detection: scoring, ranking, run-folder outputs, provenance, resuming, Dask.

Public API:

- :func:`detect.run.run_detect` — ``sitewatch detect`` as a library call; returns a
  :class:`detect.run.RunSummary`.
- :func:`detect.verify.verify_run` — ``sitewatch verify``; returns a
  :class:`detect.provenance.VerifyReport`.
- :func:`detect.demo.run_demo` — ``sitewatch demo``.
- :func:`detect.ranking.resolve_operating_point`, :func:`detect.ranking.rank_rows`.
- :func:`detect.outputs.read_scores_csv`.

Modules: ``pipeline`` (batch plan, reader thread, scoring a batch), ``cluster`` (Dask),
``journal`` (resume journal), ``ranking``, ``outputs`` (scores.csv/geojson, embeddings.npz),
``chips``, ``report`` (report.html), ``provenance`` (hashes, manifest), ``verify`` (``sitewatch
verify``), ``signing`` (Ed25519 signatures of manifests), ``agreement`` (ROC AUC, precision at k),
``demo``, ``config``.

Must not import ``train``.
"""
