"""Batch detection: scoring, ranking, run-folder outputs, provenance, resuming, Dask.

Must not import ``train``.
"""
