"""The central host: ingest, ledger, replica publisher, reports (later issue)."""
