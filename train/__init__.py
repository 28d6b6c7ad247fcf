"""Training: labelled pair datasets, augmentation, the training loop, metrics and calibration.

Modules (import what you need; importing this package imports nothing heavy):

* :mod:`train.pairs`: ``PairSet`` (uint8 ``(N, 2, C, H, W)`` pairs + labels + groups) and its
  ``.npz`` cache files.
* :mod:`train.datasets`: ``load_dataset(spec, tiles, ...)`` for a labelled folder, ``synth:N``
  or ``xbd:PATH``, every one cut through the tiles stage and cached by content.
* :mod:`train.xbd`: adapter that turns the public xBD layout into a labelled folder
  (fitted georeference, GeoTIFFs, ``sites.csv``).
* :mod:`train.splits`: grouped hold-out / k-fold splits and spatial blocks.
* :mod:`train.augment`: nuisance-change augmentation of training batches.
* :mod:`train.trainer`: ``train_model(specs, out, *, tiles, model, train, synth, ...)`` and
  its pieces ``load_training_data``, ``train_one_epoch``, ``evaluate``, ``fit``, ``calibrate``.
* :mod:`train.metrics`: ROC AUC, average precision, F1 at a threshold, precision/recall at
  top-k, reliability bins and ECE.
* :mod:`train.calibration`: temperature scaling and operating points (``CalibratedPoint``).
* :mod:`train.baseline`: the non-learned pixel-difference reference score.
* :mod:`train.evaluation`: ``evaluate_model(model_dir, out, *, tiles, evaluate)`` behind
  ``sitewatch evaluate``; :mod:`train.plots`.
"""
