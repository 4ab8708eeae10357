"""The fleet cabinet's documents: each of the statement, transaction report, invoice and
reconciliation act of a closed month, and the transaction detail, downloaded as CSV and PDF
over real HTTP and read back (PDF with pypdf: the Cyrillic text is there); another company's
contract's documents are not given out; an open month's invoice is refused."""

from __future__ import annotations

import io

from pypdf import PdfReader

from host import documents as D
from host import master
from host.ledger import Ledger

from ..host.test_documents import BUYER, SELLER
from .client import Client
from .conftest import CONTRACT, OTHER_CONTRACT
from .test_fleet import sign_in, signed_in_client

DEC_3 = 1_796_256_000  # 2026-12-03 00:00 UTC: November is closed


def pdf_text(data: bytes) -> str:
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages)


def test_every_document_as_csv_and_pdf(client: Client, smtp, ledger: Ledger, clock) -> None:
    master.set_operator_requisites(ledger, SELLER)
    master.set_client_requisites(ledger, CONTRACT, BUYER)
    signed_in_client(client, smtp, ledger)
    assert client.get(f"/fleet/contracts/{CONTRACT}/documents/invoice.pdf?month=2026-11").status == 409  # not closed
    clock.now = DEC_3
    assert client.get("/fleet").status == 303  # two weeks idle: the session expired
    assert sign_in(client).status == 303
    page = client.get(f"/fleet/contracts/{CONTRACT}/documents")
    assert page.status == 200 and 'data-month="2026-11"' in page.text
    for kind in ("statement", "report", "invoice", "act"):
        csv = client.get(f"/fleet/contracts/{CONTRACT}/documents/{kind}.csv?month=2026-11")
        assert csv.status == 200 and csv.header("Content-Type").startswith("text/csv"), (kind, csv.text[:200])
        assert "attachment" in csv.header("Content-Disposition")
        pdf = client.get(f"/fleet/contracts/{CONTRACT}/documents/{kind}.pdf?month=2026-11")
        assert pdf.status == 200 and pdf.body[:5] == b"%PDF-", kind
        text = pdf_text(pdf.body)
        assert str(CONTRACT) in text, kind
        if kind in ("invoice", "act"):
            assert BUYER.inn in text and SELLER.inn in text and "Грузовики" in text, kind
    act = client.get(f"/fleet/contracts/{CONTRACT}/documents/act.csv?month=2026-11").body.decode("utf-8-sig")
    assert "500000" in act  # the opening credit of the contract
    detail = client.get(f"/fleet/contracts/{CONTRACT}/documents/detail.pdf?from=2026-11-01&to=2026-11-30")
    assert detail.status == 200 and detail.body[:5] == b"%PDF-"
    assert client.get(f"/fleet/contracts/{OTHER_CONTRACT}/documents/act.csv?month=2026-11").status == 404
    assert client.get(f"/fleet/contracts/{CONTRACT}/documents/act.doc?month=2026-11").status == 404
    assert client.get(f"/fleet/contracts/{CONTRACT}/documents/act.csv?month=2026-1").status == 400
    assert D.FORMATS == ("csv", "pdf")
