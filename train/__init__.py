"""Training: labelled pair datasets, augmentation, the training loop, metrics and calibration.

Modules (import what you need; importing this package imports nothing heavy):

* :mod:`train.datasets`: ``PairSet`` (uint8 ``(N, 2, C, H, W)`` pairs + labels + groups),
  ``load_dataset(spec, tiles, ...)`` for a labelled folder, ``synth:N`` or ``xbd:PATH``, cached.
* :mod:`train.xbd`: importer for the public xBD layout.
* :mod:`train.splits`: grouped hold-out / k-fold splits and spatial blocks.
* :mod:`train.augment`: nuisance-change augmentation of training batches.
* :mod:`train.trainer`: ``train_model(specs, out, job, ...)``, ``train_one_epoch``,
  ``predict_logits``.
* :mod:`train.metrics`: ROC AUC, average precision, F1 at a threshold, precision/recall at
  top-k, reliability bins and ECE.
* :mod:`train.calibration`: temperature scaling and operating points.
* :mod:`train.baseline`: the non-learned pixel-difference reference score.
* :mod:`train.evaluation`: ``evaluate_model`` behind ``sitewatch evaluate``; :mod:`train.plots`.
"""
