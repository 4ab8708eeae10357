"""The cabinets on a PostgreSQL ledger (sessions, codes, rate limits, outbox, master-data
changes): the fleet, API and club flows of the SQLite tests, run again with ``db_url`` a
fresh schema of the local PostgreSQL (it fails, not skips, when PostgreSQL cannot run)."""

from __future__ import annotations

import pytest

from ..host.conftest import pg_schema_url, postgres  # noqa: F401 - fixtures used by db_url below
from .test_api import test_token_reads_writes_idempotency_and_revocation  # noqa: F401 - run here on PostgreSQL
from .test_club import (  # noqa: F401 - run here on PostgreSQL
    test_block_by_inbound_sms,
    test_password_reset_by_sms_code_ends_old_sessions,
    test_sms_code_guessing_is_stopped,
)
from .test_fleet import (  # noqa: F401 - run here on PostgreSQL
    test_password_brute_force_is_stopped_but_owner_device_still_signs_in,
    test_register_activate_sign_in_link_and_see_the_contract,
    test_session_renewed_at_sign_in_and_ended_on_sign_out,
    test_set_change_remove_a_limit_and_block_a_card,
)


@pytest.fixture
def db_url(pg_schema_url: str) -> str:  # noqa: F811 - the PostgreSQL ledger for every test here
    return pg_schema_url
