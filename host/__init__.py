"""The central host: ingest of the sites' batches into a ledger (SQLite or PostgreSQL), the
ledger's effects (contract balances, limit counters, clone detection, club accounts), the
replica publisher, reports, reconciliation with edge journals, the admin command line and a
thin MQTT worker (docs/host.md).

- :class:`Ledger` (:mod:`host.ledger`): ``Ledger.open(url)`` with ``sqlite:///file`` or
  ``postgresql://...``; reads.
- :mod:`host.ingest`: ``ingest_batch(ledger, batch) -> Ack``, ``record_presence``.
- :mod:`host.master`: operators' changes (cards, limits, blocks, tariffs, top-ups, club cards).
- :mod:`host.publisher`: replica snapshots and deltas.
- :mod:`host.reports`: transaction detail and monthly statements.
- :func:`reconcile`: the ledger against edge journals, per site and kind.
- :mod:`host.worker`: the aiomqtt consumer; :mod:`host.admin`: ``python -m host.admin``.

``host`` imports :mod:`authz` and :mod:`wire`, never :mod:`terminal`.
"""

from .errors import Conflict, HostError, InvalidInput, LedgerUnavailable, NotFound, SchemaError
from .ledger import CardCorrection, CloneAlert, ClubAccountInfo, Issue, Ledger, SiteInfo
from .reconciliation import Reconciliation, reconcile

__all__ = ["reconcile", "Reconciliation", "Ledger", "SiteInfo", "CloneAlert", "Issue", "CardCorrection", "ClubAccountInfo",
           "HostError", "LedgerUnavailable", "SchemaError", "NotFound", "Conflict", "InvalidInput"]
