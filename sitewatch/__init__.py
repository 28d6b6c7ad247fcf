"""sitewatch: find likely destroyed facilities in before/after satellite imagery.

This package is deliberately thin: the ``sitewatch`` command (:mod:`sitewatch.cli`), the exception
tree (:mod:`sitewatch.errors`) and config loading (:mod:`sitewatch.config`). Stage logic lives in
the top-level packages ``tiles``, ``models``, ``train``, ``detect`` and ``review``.
"""

__version__ = "0.1.0"
