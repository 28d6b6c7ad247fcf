"""Training: labelled pair datasets, augmentation, the training loop, metrics and calibration."""
