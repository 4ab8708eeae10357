"""Render a document as CSV or PDF: one entry point for the cabinets, the API and the CLI."""

from __future__ import annotations

from ..errors import InvalidInput
from .csvout import to_csv
from .layout import layout
from .model import Document
from .pdfout import to_pdf

__all__ = ["FORMATS", "MEDIA_TYPES", "filename", "render"]

FORMATS = ("csv", "pdf")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "pdf": "application/pdf"}


def render(doc: Document, fmt: str) -> bytes:
    """``doc`` as ``fmt`` (``"csv"`` or ``"pdf"``) bytes. InvalidInput for another format."""
    if fmt not in FORMATS:
        raise InvalidInput(f"a document is rendered as {' or '.join(FORMATS)}, got {str(fmt)[:20]!r}")
    lay = layout(doc)
    return to_csv(lay) if fmt == "csv" else to_pdf(lay)


def filename(doc: Document, fmt: str) -> str:
    """A file name for ``doc`` as ``fmt`` (``invoice-1001-2026-11.pdf``), ASCII only."""
    if fmt not in FORMATS:
        raise InvalidInput(f"a document is rendered as {' or '.join(FORMATS)}, got {str(fmt)[:20]!r}")
    return f"{layout(doc).filename}.{fmt}"
