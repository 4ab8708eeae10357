"""A document as PDF, Cyrillic included, with fpdf2 and the DejaVu Sans font.

The font is Debian's ``fonts-dejavu-core`` (scripts/bootstrap.sh installs it): a TrueType
font with Cyrillic, embedded as a subset, with a ToUnicode map so that the text can be
searched, copied and extracted. Text is drawn through fpdf2's text API, which escapes it
inside the PDF's strings, so a hostile name is shown as its characters and can break
nothing; characters that are not printable are shown as ``?``. Long text is cut to its
column with ``…``; the table's header repeats on every page.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import HostError
from .layout import Cell, Layout

__all__ = ["FONT", "FONT_BOLD", "FONT_DIR", "to_pdf"]

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT = FONT_DIR / "DejaVuSans.ttf"
FONT_BOLD = FONT_DIR / "DejaVuSans-Bold.ttf"
_SIZE = 7.5
_ROW = 4.6
_FAMILY = "DejaVu"


def _clean(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _fit(pdf, text: str, width: float) -> str:
    text = _clean(text)
    room = width - 1.2
    if pdf.get_string_width(text) <= room:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if pdf.get_string_width(text[:mid] + "…") <= room:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "…"


def to_pdf(doc: Layout) -> bytes:
    """The PDF bytes of a laid-out document. Raises HostError when the font is missing."""
    try:
        from fpdf import FPDF
        from fpdf.enums import XPos, YPos
    except ImportError:  # pragma: no cover - a dependency of edgepos
        raise HostError("PDF documents need fpdf2: pip install 'fpdf2>=2.7'") from None
    for f in (FONT, FONT_BOLD):
        if not f.is_file():
            raise HostError(f"PDF documents need the DejaVu fonts ({f} is missing): apt-get install fonts-dejavu-core")
    pdf = FPDF(orientation="L" if doc.landscape else "P", unit="mm", format="A4")
    pdf.set_title(doc.title)
    pdf.set_creator("edgepos")
    pdf.add_font(_FAMILY, "", str(FONT))
    pdf.add_font(_FAMILY, "B", str(FONT_BOLD))
    pdf.set_margins(10, 10, 10)
    pdf.set_auto_page_break(False)
    pdf.add_page()
    bottom = pdf.h - 10
    width = pdf.w - 20

    def kv(lines: tuple[tuple[str, Cell], ...]) -> None:
        for key, value in lines:
            if pdf.get_y() + _ROW > bottom:
                pdf.add_page()
            pdf.set_font(_FAMILY, "B", _SIZE + 0.5)
            pdf.cell(70, _ROW, _fit(pdf, key, 70), new_x=XPos.RIGHT, new_y=YPos.TOP)
            pdf.set_font(_FAMILY, "", _SIZE + 0.5)
            pdf.multi_cell(width - 70, _ROW, _clean(value.text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    pdf.set_font(_FAMILY, "B", 12)
    pdf.multi_cell(width, 7, _clean(doc.title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2)
    kv(doc.head)
    pdf.ln(3)
    t = doc.table
    total = sum(t.widths)
    widths = [width * w / total for w in t.widths]

    def header() -> None:
        pdf.set_font(_FAMILY, "B", _SIZE)
        for w, h in zip(widths, t.head):
            pdf.cell(w, _ROW + 1, _fit(pdf, h, w), border=1, align="C", new_x=XPos.RIGHT, new_y=YPos.TOP)
        pdf.ln(_ROW + 1)
        pdf.set_font(_FAMILY, "", _SIZE)

    header()
    if not t.rows:
        pdf.cell(width, _ROW, "нет операций за период", border=1, align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    for row in t.rows:
        if pdf.get_y() + _ROW > bottom:
            pdf.add_page()
            header()
        for w, c in zip(widths, row):
            pdf.cell(w, _ROW, _fit(pdf, c.text, w), border=1, align="R" if c.number else "L",
                     new_x=XPos.RIGHT, new_y=YPos.TOP)
        pdf.ln(_ROW)
    pdf.ln(3)
    kv(doc.tail)
    return bytes(pdf.output())
