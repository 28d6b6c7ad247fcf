"""sitewatch: find likely destroyed facilities in before/after satellite imagery.

This package holds two layers (``../shared/DESIGN.md``; enforced by ``lint-imports``):

- the **foundation**, which every stage may import and which imports only the standard library
  and yaml: the exception tree (:mod:`sitewatch.errors`), config machinery
  (:mod:`sitewatch.config`) and file hashing (:mod:`sitewatch.hashing`);
- the **CLI leaf**, which nothing imports: the ``sitewatch`` command (:mod:`sitewatch.cli`), its
  subcommands (:mod:`sitewatch.commands`) and the per-command job composition
  (:mod:`sitewatch.jobs`).

Stage logic lives in the top-level packages ``tiles``, ``models``, ``train``, ``detect`` and
``review``.
"""

__version__ = "0.1.0"
