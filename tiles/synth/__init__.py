"""Synthetic before/after scenes: labelled GeoTIFF datasets the project makes itself."""
