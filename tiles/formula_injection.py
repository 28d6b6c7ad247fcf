"""Cells that a spreadsheet would run as a formula, made inert (CSV / formula injection).

Site lists come from outside (volunteers, partners, scraped registries), and a site named
``=HYPERLINK("http://...")`` or ``+cmd|' /C calc'!A0`` becomes a live formula when an analyst
opens ``index.csv`` or ``scores.csv`` in Excel, LibreOffice or Google Sheets. Following the OWASP
CSV-injection guidance, a cell whose first character (after any leading spaces) is ``=``, ``+``,
``-``, ``@``, a tab, a carriage return, or NUL (or the full-width ``＝ ＋ － ＠``) gets a single
quote in front, which spreadsheets read as "this is text" and show without it. Quoting of
separators and quotes inside cells is left to the ``csv`` module (RFC 4180).

A plain number (``-12.5``, ``+3``, ``1e-5``) is not a formula and stays as it is, so numeric
columns keep their values. Readers that need the original text back remove one leading ``'``
from cells that start with ``'`` followed by one of those characters.
"""

from __future__ import annotations

import re

__all__ = ["neutralise_formula", "FORMULA_TRIGGERS"]

#: first characters that make a spreadsheet treat a cell as a formula.
FORMULA_TRIGGERS = frozenset("=+-@\t\r\0\uff1d\uff0b\uff0d\uff20")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def neutralise_formula(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet would read it as a formula.

    Args:
        text: one CSV cell as it will be written.

    Returns:
        ``"'" + text`` when its first non-space character is in :data:`FORMULA_TRIGGERS` and it
        is not a plain decimal number; ``text`` unchanged otherwise.
    """
    if not text:
        return text
    stripped = text.lstrip(" ")
    if stripped and stripped[0] in FORMULA_TRIGGERS and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text
