"""Siamese change-detection networks, the factory, the checkpoint format and the default model.

Must not read rasters.
"""
