"""Settings of ``sitewatch dossier`` (defaults live here and nowhere else)."""

from __future__ import annotations

from dataclasses import dataclass

#: where Debian/Ubuntu (fonts-dejavu-core), Fedora and macOS Homebrew keep DejaVu Sans.
DEFAULT_FONT_SEARCH = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/opt/homebrew/share/fonts/DejaVuSans.ttf",
)


@dataclass(frozen=True)
class DossierConfig:
    """How evidence dossiers are written.

    Attributes:
        font: a TrueType font for the PDF's text (its bold face is looked for beside it as
            ``NAME-Bold.ttf``). ``None``: the first of ``font_search`` that exists. A Unicode
            font is needed for names in any script and the DMS signs (° ′ ″); without one the PDF
            falls back to Helvetica and writes characters outside Latin-1 as ``?`` (with a
            warning; the HTML pages are never affected).
        font_search: font files tried, in order, when ``font`` is not set.
        html_chip_scale: on the HTML pages every chip pixel is shown as this many screen
            pixels (nearest-neighbour, so the native pixels stay visible).
        pdf_chip_mm: width in millimetres of the before/after chips on the PDF page.
    """

    font: str | None = None
    font_search: tuple[str, ...] = DEFAULT_FONT_SEARCH
    html_chip_scale: int = 2
    pdf_chip_mm: float = 54.0

    def __post_init__(self) -> None:
        if not 1 <= self.html_chip_scale <= 8:
            raise ValueError("html_chip_scale must be between 1 and 8")
        if not 30.0 <= self.pdf_chip_mm <= 95.0:
            raise ValueError("pdf_chip_mm must be between 30 and 95 (two chips side by side on A4)")
