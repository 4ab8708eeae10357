"""A contract's documents from the host's ledger: transaction detail, monthly statements,
and for each closed month the transaction report, the invoice (счёт-фактура) and the
reconciliation act (акт сверки); each rendered as CSV or PDF (:func:`render`).

The web cabinets, the fleet API and ``edgepos host document`` call these functions; they
return frozen dataclasses (:mod:`host.documents.model`) and raise
:class:`~host.errors.NotFound` (an unknown contract or card) or
:class:`~host.errors.InvalidInput` (a bad period, month, cursor or page size). See
docs/documents.md.
"""

from __future__ import annotations

from .model import (
                    VAT_RATE_PCT,
                    ActLine,
                    DetailLine,
                    DetailPage,
                    Document,
                    Invoice,
                    InvoiceLine,
                    Month,
                    ProductTotal,
                    ReconciliationAct,
                    Requisites,
                    StatementEntry,
                    StatementPage,
                    TransactionReport,
)
from .monthly import (
                    invoice,
                    invoice_number,
                    reconciliation_act,
                    transaction_report,
                    vat_of,
)
from .queries import (
                    DEFAULT_PAGE,
                    MAX_PAGE,
                    statement,
                    statement_page,
                    transaction_detail,
)
from .render import FORMATS, MEDIA_TYPES, filename, render
from .requisites import (
                    check_inn,
                    check_kpp,
                    check_requisites,
                    client_requisites,
                    operator_requisites,
)

__all__ = [
                    "DEFAULT_PAGE",
                    "FORMATS",
                    "MAX_PAGE",
                    "MEDIA_TYPES",
                    "VAT_RATE_PCT",
                    "ActLine",
                    "DetailLine",
                    "DetailPage",
                    "Document",
                    "Invoice",
                    "InvoiceLine",
                    "Month",
                    "ProductTotal",
                    "ReconciliationAct",
                    "Requisites",
                    "StatementEntry",
                    "StatementPage",
                    "TransactionReport",
                    "check_inn",
                    "check_kpp",
                    "check_requisites",
                    "client_requisites",
                    "filename",
                    "invoice",
                    "invoice_number",
                    "operator_requisites",
                    "reconciliation_act",
                    "render",
                    "statement",
                    "statement_page",
                    "transaction_detail",
                    "transaction_report",
                    "vat_of",
]
