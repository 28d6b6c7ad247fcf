"""The tiles stage: sites, a raster catalogue, aligned before/after pairs, and synthetic scenes.

Must not import torch (so a tiles-only install and Dask workers stay light).
"""
