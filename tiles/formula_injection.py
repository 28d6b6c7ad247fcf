"""Cells that a spreadsheet would run as a formula, made inert (CSV / formula injection).

Site lists come from outside (volunteers, partners, scraped registries), and a site named
``=HYPERLINK("http://...")`` or ``+cmd|' /C calc'!A0`` becomes a live formula when an analyst
opens ``index.csv`` or ``scores.csv`` in Excel, LibreOffice or Google Sheets. Following the OWASP
CSV-injection guidance, a cell whose first character (after any leading spaces) is ``=``, ``+``,
``-``, ``@``, a tab, a carriage return, or NUL (or the full-width ``＝ ＋ － ＠``) gets a single
quote in front, which spreadsheets read as "this is text" and show without it. Quoting of
separators and quotes inside cells is left to the ``csv`` module (RFC 4180).

A plain number (``-12.5``, ``+3``, ``1e-5``) is not a formula and stays as it is, so numeric
columns keep their values. A cell that already starts with ``'`` in front of such a cell (text
that would otherwise read back as a neutralised one, e.g. a site id ``'=x``) gets one more quote,
so the change can always be undone exactly: :func:`restore_formula` removes one leading ``'``
where :func:`neutralise_formula` put one, and ``restore_formula(neutralise_formula(t)) == t`` for
every text.
"""

from __future__ import annotations

import re

__all__ = ["neutralise_formula", "restore_formula", "FORMULA_TRIGGERS"]

#: first characters that make a spreadsheet treat a cell as a formula.
FORMULA_TRIGGERS = frozenset("=+-@\t\r\0\uff1d\uff0b\uff0d\uff20")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _is_formula(text: str) -> bool:
    stripped = text.lstrip(" ")
    return bool(stripped) and stripped[0] in FORMULA_TRIGGERS and not _PLAIN_NUMBER.fullmatch(text)


def _needs_quote(text: str) -> bool:
    """A formula, or quotes in front of one (``'=x``, ``''=x``): what gets one more ``'``."""
    body = text.lstrip("'")
    return bool(body) and _is_formula(body)


def neutralise_formula(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet would read it as a formula.

    Args:
        text: one CSV cell as it will be written.

    Returns:
        ``"'" + text`` when its first non-space character is in :data:`FORMULA_TRIGGERS` and it
        is not a plain decimal number, or when it is such a text with quotes in front (so that
        :func:`restore_formula` can undo it); ``text`` unchanged otherwise.
    """
    if text and _needs_quote(text):
        return "'" + text
    return text


def restore_formula(text: str) -> str:
    """The text :func:`neutralise_formula` was given: one leading ``'`` removed where it put one.

    Readers of CSV files sitewatch wrote (``scores.csv``, ``index.csv``, exported ``sites.csv``)
    call this on cells that hold identifiers or names.
    """
    if text.startswith("'") and _needs_quote(text[1:]):
        return text[1:]
    return text
