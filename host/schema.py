"""The ledger's schema and its versioned migrations.

``MIGRATIONS[n]`` takes a database from version n-1 to version n; each runs in one
transaction with the version bump (``meta.schema_version``), under the write lock (SQLite)
or an advisory lock (PostgreSQL), so two workers starting together migrate once. A database
of a newer version than :data:`SCHEMA_VERSION` is refused. A new version appends a
function (a list of statements) here and bumps nothing else.

Columns are the same in both dialects: integers are ``BIGINT`` (SQLite stores any integer
in 64 bits), flags ``INTEGER`` 0/1, structured values canonical JSON ``TEXT``.
"""

from __future__ import annotations

from collections.abc import Callable

from .db import Database
from .errors import SchemaError

__all__ = ["SCHEMA_VERSION", "MIGRATIONS", "migrate", "schema_version", "CLUB_HISTORY_KINDS_SQL", "HOT_TABLES"]

_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE sites (
    site_id TEXT PRIMARY KEY,
    status TEXT NOT NULL DEFAULT 'active',           -- active | disabled (batches refused for good)
    up_to_seq BIGINT NOT NULL DEFAULT 0,             -- every batch 1..up_to_seq is settled
    max_seq BIGINT NOT NULL DEFAULT 0,               -- the highest batch number seen
    batches BIGINT NOT NULL DEFAULT 0,               -- batch messages handled (resends included)
    records BIGINT NOT NULL DEFAULT 0,               -- records applied (each once)
    last_batch_at_utc_s BIGINT,
    online INTEGER,                                  -- presence: 1 online, 0 offline, NULL never seen
    presence_at_utc_s BIGINT,
    software_version TEXT,
    replica_versions TEXT,                           -- JSON {table: version}
    created_at_utc_s BIGINT NOT NULL
);

CREATE TABLE batches (
    site_id TEXT NOT NULL,
    batch_seq BIGINT NOT NULL,
    status TEXT NOT NULL,                            -- applied | rejected
    reason TEXT,
    records INTEGER NOT NULL,                        -- records in the batch
    new_records INTEGER NOT NULL,                    -- of which applied by this batch (not seen before)
    created_utc_s BIGINT NOT NULL,
    applied_at_utc_s BIGINT NOT NULL,
    PRIMARY KEY (site_id, batch_seq)
);

CREATE TABLE records (
    record_id TEXT PRIMARY KEY,                      -- the dedup key: each record applied at most once
    site_id TEXT NOT NULL,
    batch_seq BIGINT NOT NULL,
    lane TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at_utc_s BIGINT NOT NULL,
    body TEXT NOT NULL,                              -- canonical JSON, as journaled
    flag TEXT,                                       -- NULL, or why the ledger could not (fully) apply it
    contract_id BIGINT,
    card_no TEXT,
    product TEXT,
    amount_kop BIGINT,
    volume_ml BIGINT,
    ingested_at_utc_s BIGINT NOT NULL
);
CREATE INDEX records_contract ON records (contract_id, at_utc_s) WHERE contract_id IS NOT NULL;
CREATE INDEX records_flagged ON records (flag) WHERE flag IS NOT NULL;

CREATE TABLE ledger_issues (
    issue_id {autoid},
    record_id TEXT,
    site_id TEXT,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    created_at_utc_s BIGINT NOT NULL
);

-- master data (the replica tables) --------------------------------------------------------
CREATE TABLE products (code TEXT PRIMARY KEY, name TEXT NOT NULL, grp INTEGER NOT NULL);
CREATE TABLE stations (station_id BIGINT PRIMARY KEY, region BIGINT NOT NULL, groups TEXT NOT NULL,
                       prices TEXT NOT NULL, max_fill_ml BIGINT NOT NULL);
CREATE TABLE tariffs (tariff INTEGER PRIMARY KEY, discounts TEXT NOT NULL);
CREATE TABLE contracts (
    contract_id BIGINT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    tz TEXT NOT NULL,
    home_region BIGINT NOT NULL,
    tariff INTEGER NOT NULL,
    balance_kop BIGINT NOT NULL,
    credit_line_kop BIGINT NOT NULL DEFAULT 0,
    chosen_station_ids TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE contract_entries (                     -- every balance movement, for statements
    entry_id {autoid},
    contract_id BIGINT NOT NULL,
    at_utc_s BIGINT NOT NULL,
    amount_kop BIGINT NOT NULL,                      -- signed: + credit, - debit
    kind TEXT NOT NULL,                              -- opening | topup | purchase | adjustment
    record_id TEXT UNIQUE,                           -- the edge record of a purchase
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX contract_entries_at ON contract_entries (contract_id, at_utc_s);
CREATE TABLE fuel_cards (
    card_no TEXT PRIMARY KEY,
    contract_id BIGINT NOT NULL,
    expires_on TEXT NOT NULL,
    groups TEXT NOT NULL,                            -- JSON [ProductGroup]
    limits TEXT NOT NULL,                            -- JSON [{limit_id, unit, period, amount, scope, group, product}]
    kind INTEGER NOT NULL,
    status INTEGER NOT NULL
);
CREATE INDEX fuel_cards_contract ON fuel_cards (contract_id);
CREATE TABLE fuel_counters (                        -- what each limit spent in each period
    card_no TEXT NOT NULL,
    limit_id BIGINT NOT NULL,
    period_start BIGINT NOT NULL,                    -- local day number the period began on
    spent BIGINT NOT NULL,
    PRIMARY KEY (card_no, limit_id, period_start)
);
CREATE TABLE stop_list (card_no TEXT PRIMARY KEY, listed_at_utc_s BIGINT NOT NULL, reason TEXT NOT NULL DEFAULT '');

-- card transaction counters and clones ------------------------------------------------------
CREATE TABLE card_tc (                              -- which write each (card, counter) holds
    card_no TEXT NOT NULL,
    txn_counter BIGINT NOT NULL,
    write_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    record_id TEXT NOT NULL,
    at_utc_s BIGINT NOT NULL,
    PRIMARY KEY (card_no, txn_counter)
);
CREATE TABLE card_tc_state (                        -- the highest counter seen per card, and when
    card_no TEXT PRIMARY KEY,
    max_tc BIGINT NOT NULL,
    max_tc_at_utc_s BIGINT NOT NULL,
    max_tc_record_id TEXT NOT NULL,
    max_tc_site_id TEXT NOT NULL
);
CREATE TABLE clone_alerts (
    alert_id {autoid},
    card_no TEXT NOT NULL,
    kind TEXT NOT NULL,                              -- tc_conflict | tc_backwards | edge_refused
    txn_counter BIGINT,
    record_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    at_utc_s BIGINT NOT NULL,
    other_record_id TEXT,
    other_site_id TEXT,
    detail TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    created_at_utc_s BIGINT NOT NULL,
    UNIQUE (record_id, kind)
);
CREATE TABLE card_corrections (                     -- reservations a card still holds (fuel.correction)
    record_id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    card_no TEXT NOT NULL,
    contract_id BIGINT,
    why TEXT NOT NULL,
    status TEXT NOT NULL,                            -- due | check_card | not_needed
    reserved_txn_counter BIGINT NOT NULL,
    unsent_write_id TEXT NOT NULL,
    excess TEXT NOT NULL,                            -- JSON [[limit_id, period_start, spent too high by]]
    released_volume_ml BIGINT NOT NULL,
    released_amount_kop BIGINT NOT NULL,
    at_utc_s BIGINT NOT NULL,
    resolved_by_record_id TEXT
);
CREATE INDEX card_corrections_card ON card_corrections (card_no, status);

-- club ---------------------------------------------------------------------------------------
CREATE TABLE club_rules (key TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE club_accounts (
    account_id BIGINT PRIMARY KEY,
    person_id TEXT NOT NULL,
    kind INTEGER NOT NULL,
    activated INTEGER NOT NULL,
    status INTEGER NOT NULL,
    balance_kop BIGINT NOT NULL,
    turnover_month BIGINT NOT NULL,
    turnover_kop BIGINT NOT NULL,
    points_debt BIGINT NOT NULL DEFAULT 0            -- points spent at the edge before the host saw them
);
CREATE INDEX club_accounts_person ON club_accounts (person_id);
CREATE TABLE club_lots (
    account_id BIGINT NOT NULL,
    lot_id BIGINT NOT NULL,
    points BIGINT NOT NULL,
    matures_at_s BIGINT NOT NULL,
    expires_at_s BIGINT NOT NULL,
    PRIMARY KEY (account_id, lot_id)
);
CREATE TABLE club_cards (
    card_no TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL,
    status INTEGER NOT NULL,
    issued_at_utc_s BIGINT NOT NULL,
    replaced_by TEXT
);
CREATE INDEX club_cards_account ON club_cards (account_id);

-- replica versions, deltas and what is published -------------------------------------------
CREATE TABLE replica_versions (tbl TEXT PRIMARY KEY, version BIGINT NOT NULL);
CREATE TABLE replica_deltas (
    tbl TEXT NOT NULL,
    to_version BIGINT NOT NULL,
    from_version BIGINT NOT NULL,
    upsert_keys TEXT NOT NULL,                       -- JSON list of row keys
    delete_keys TEXT NOT NULL,
    created_at_utc_s BIGINT NOT NULL,
    PRIMARY KEY (tbl, to_version)
);
CREATE TABLE replica_dirty (tbl TEXT NOT NULL, key TEXT NOT NULL, gen BIGINT NOT NULL DEFAULT 0,
                            PRIMARY KEY (tbl, key));
CREATE TABLE replica_published (
    tbl TEXT PRIMARY KEY,
    delta_version BIGINT NOT NULL DEFAULT 0,         -- deltas up to here are published
    snapshot_version BIGINT NOT NULL DEFAULT 0,      -- the retained snapshot's version
    snapshot_parts BIGINT NOT NULL DEFAULT 0,
    snapshot_at_utc_s BIGINT NOT NULL DEFAULT 0
);
"""


def _v1(db: Database) -> list[str]:
    return [s.strip() for s in _V1.replace("{autoid}", db.autoid).split(";") if s.strip()]


def _v2(db: Database) -> list[str]:
    """Indexes for the host's return check (host.effects): a sale's committed record and its
    returns, by transaction id. Partial, so other records pay nothing for them."""
    return ["CREATE INDEX records_club_sales ON records (site_id, txn_id) WHERE kind = 'till.sale_committed'",
            "CREATE INDEX records_club_returns ON records (site_id, txn_id) WHERE kind = 'till.return'"]


def _v3(db: Database) -> list[str]:
    """Documents (host.documents): the requisites an invoice and a reconciliation act carry
    (the network operator's, one row; each contract's client's), stations' names and
    addresses for transaction detail, and covering indexes for a contract's month of
    balance movements: all of them (sums and pages read the index alone), and the credits
    alone (a partial index: a month's payments are found without reading its purchases)."""
    return [("CREATE TABLE operator_requisites (one INTEGER PRIMARY KEY CHECK (one = 1), name TEXT NOT NULL, "
             "inn TEXT NOT NULL, kpp TEXT NOT NULL, address TEXT NOT NULL, updated_at_utc_s BIGINT NOT NULL)"),
            ("CREATE TABLE contract_requisites (contract_id BIGINT PRIMARY KEY, name TEXT NOT NULL, "
             "inn TEXT NOT NULL, kpp TEXT NOT NULL, address TEXT NOT NULL, updated_at_utc_s BIGINT NOT NULL)"),
            "CREATE TABLE station_addresses (station_id BIGINT PRIMARY KEY, name TEXT NOT NULL, address TEXT NOT NULL)",
            "CREATE INDEX contract_entries_month ON contract_entries (contract_id, at_utc_s, entry_id, amount_kop)",
            ("CREATE INDEX contract_entries_credits ON contract_entries (contract_id, at_utc_s, amount_kop) "
             "WHERE amount_kop > 0")]


_WEB = """
CREATE TABLE web_fleet_users (                      -- fleet managers (one per company)
    user_id {autoid},
    login TEXT NOT NULL UNIQUE,                      -- case-folded
    email TEXT NOT NULL UNIQUE,                      -- case-folded
    company TEXT NOT NULL DEFAULT '',
    password_hash TEXT NOT NULL,                     -- argon2id (host.passwords)
    status TEXT NOT NULL,                            -- pending (not activated) | active | blocked
    totp_secret TEXT,                                -- base32, NULL: no second factor yet
    created_at_utc_s BIGINT NOT NULL
);
CREATE TABLE web_fleet_contracts (                  -- the contracts a fleet manager has linked
    user_id BIGINT NOT NULL,
    contract_id BIGINT NOT NULL UNIQUE,              -- a contract belongs to one company's cabinet
    linked_at_utc_s BIGINT NOT NULL,
    PRIMARY KEY (user_id, contract_id)
);
CREATE TABLE web_club_members (                     -- a club account's holder, as the cabinet knows them
    person_id TEXT PRIMARY KEY,
    phone TEXT NOT NULL,                             -- E.164 digits, the registered phone
    birth_date TEXT NOT NULL,                        -- YYYY-MM-DD
    password_hash TEXT,                              -- NULL until the cabinet is activated
    created_at_utc_s BIGINT NOT NULL
);
CREATE INDEX web_club_members_phone ON web_club_members (phone);
CREATE TABLE web_codes (                            -- one-time codes and links: only their hash is kept
    code_id {autoid},
    purpose TEXT NOT NULL,                           -- activate | link_contract | club_activate | club_reset
    subject TEXT NOT NULL,                           -- whose code: a user id, a contract, a person
    code_hash TEXT NOT NULL,
    expires_at_utc_s BIGINT NOT NULL,
    tries_left INTEGER NOT NULL,
    used_at_utc_s BIGINT,
    created_at_utc_s BIGINT NOT NULL
);
CREATE INDEX web_codes_subject ON web_codes (purpose, subject);
CREATE TABLE web_attempts (                         -- failed sign-ins and code checks, for rate limits
    scope TEXT NOT NULL,                             -- account | address | pair
    key TEXT NOT NULL,
    at_utc_s BIGINT NOT NULL
);
CREATE INDEX web_attempts_key ON web_attempts (scope, key, at_utc_s);
CREATE TABLE web_devices (                          -- browsers that signed in before (not rate limited per account)
    token_hash TEXT PRIMARY KEY,
    realm TEXT NOT NULL,
    user_key TEXT NOT NULL,
    created_at_utc_s BIGINT NOT NULL
);
CREATE TABLE web_sessions (                         -- server-side sessions: the cookie holds a random id
    sid_hash TEXT PRIMARY KEY,
    realm TEXT,                                      -- fleet | club, NULL before sign-in
    user_key TEXT,
    data TEXT NOT NULL,
    created_at_utc_s BIGINT NOT NULL,
    expires_at_utc_s BIGINT NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions (realm, user_key);
CREATE TABLE web_api_tokens (                       -- the fleet API's per-company tokens
    token_id {autoid},
    user_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,                            -- the first characters, to tell tokens apart
    created_at_utc_s BIGINT NOT NULL,
    revoked_at_utc_s BIGINT
);
CREATE TABLE web_idempotency (                      -- the fleet API's answers to writes, by Idempotency-Key
    user_id BIGINT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at_utc_s BIGINT NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE TABLE web_outbox (                           -- e-mail and SMS waiting to leave (host.outbox)
    msg_id {autoid},
    channel TEXT NOT NULL,                           -- email | sms
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL,                              -- emptied once sent: a sent code is not kept
    created_at_utc_s BIGINT NOT NULL,
    sent_at_utc_s BIGINT,
    tries INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX web_outbox_due ON web_outbox (sent_at_utc_s, msg_id);
-- a club member's history in the cabinet (partial: fuel records pay nothing for it)
CREATE INDEX web_records_club_card ON records (card_no, at_utc_s)
    WHERE kind IN ('till.sale_committed', 'till.return', 'till.topup')
"""


def _v4(db: Database) -> list[str]:
    """The cabinets' tables (host.web): users, sessions, one-time codes, rate-limit attempts,
    API tokens, idempotency keys and the outbox."""
    return [s.strip() for s in _WEB.replace("{autoid}", db.autoid).split(";") if s.strip()]


def _v5(db: Database) -> list[str]:
    """The balance rule (docs/sync.md): which sites' spend each balance or counter row holds
    (``replica_spenders``, written by ingest beside its dirty marks: a published row names
    those sites' watermarks), and each contract's offline exposure (NULL: the host's default),
    shared out as the sites' offline allowances when it is set (``offline_allowances``; site
    ``*``: every site not named; host.watermarks)."""
    return ["CREATE TABLE replica_spenders (tbl TEXT NOT NULL, key TEXT NOT NULL, site_id TEXT NOT NULL, "
            "PRIMARY KEY (tbl, key, site_id))",
            "ALTER TABLE contracts ADD COLUMN offline_exposure_kop BIGINT",
            "CREATE TABLE offline_allowances (contract_id BIGINT NOT NULL, site_id TEXT NOT NULL, "
            "amount_kop BIGINT NOT NULL, PRIMARY KEY (contract_id, site_id))"]


def _v6(db: Database) -> list[str]:
    """One-use TOTP codes (host.fleet_users.check_totp): the last time step accepted for each
    fleet user (NULL: none yet); a code of that step or an earlier one is refused."""
    return ["ALTER TABLE web_fleet_users ADD COLUMN totp_last_step BIGINT"]


def _v7(db: Database) -> list[str]:
    """The fleet controls (issue 11): a fuel card's allowed products, time windows, station
    restriction and on-breach as JSON (``controls``, NULL: none, the card as before; host.rows),
    and the approve-and-alert exceptions sites report (``rule_alerts``, one row per exception
    of a ``fuel.completed``; host.alerts)."""
    return ["ALTER TABLE fuel_cards ADD COLUMN controls TEXT",
            ("CREATE TABLE rule_alerts (record_id TEXT NOT NULL, n INTEGER NOT NULL, site_id TEXT NOT NULL, "
             "lane TEXT NOT NULL, card_no TEXT NOT NULL, contract_id BIGINT, reason TEXT NOT NULL, limit_id BIGINT, "
             "station_id BIGINT, product TEXT NOT NULL, volume_ml BIGINT NOT NULL, amount_kop BIGINT NOT NULL, "
             "at_utc_s BIGINT NOT NULL, status TEXT NOT NULL DEFAULT 'open', created_at_utc_s BIGINT NOT NULL, "
             "PRIMARY KEY (record_id, n))"),
            "CREATE INDEX rule_alerts_at ON rule_alerts (status, at_utc_s)"]


def _v8(db: Database) -> list[str]:
    """Pruning the spenders of live rows (host.watermarks.prune_spenders, docs/sync.md's
    balance rule): the replica version that republished the row to cover a settled site's
    spend on it (``cover_version``, NULL: not under way) and that site's watermark then, or
    when the row was first found quiet (``cover_seq``); ingest clears both when the site
    spends on the row again."""
    return ["ALTER TABLE replica_spenders ADD COLUMN cover_version BIGINT",
            "ALTER TABLE replica_spenders ADD COLUMN cover_seq BIGINT"]


#: The kinds of a club member's history in the cabinet (``web_records_club_card``), as the
#: predicate its index and its query both spell: ORed equalities. SQLite runs a constant
#: ``IN (...)`` list of a partial index's predicate by building a small table for every row
#: inserted (about 1.3 µs a record on this machine against 0.35 µs for the ORs; docs/sync.md,
#: issue 12's fourth pass), and uses a partial index only for a query whose WHERE repeats its
#: predicate, so host.club_members asks with this same text.
CLUB_HISTORY_KINDS_SQL = "(kind = 'till.sale_committed' OR kind = 'till.return' OR kind = 'till.topup')"


def _v9(db: Database) -> list[str]:
    """Less for ingest to write per record (issue 12's fourth pass): the cabinet's club
    history index (v4) with its predicate as ORed equalities (:data:`CLUB_HISTORY_KINDS_SQL`;
    the same rows, cheaper for every record ingested), and no ``contract_entries_at``: its
    columns are the first two of ``contract_entries_month`` (v3), which serves every query
    it served, so each purchase's entry updated two indexes of the same keys; and
    ``records_contract`` only of the purchases (``fuel.completed``), the one kind the
    queries by contract ask for (host.reports), not of every preauthorization too."""
    return ["DROP INDEX web_records_club_card",
            f"CREATE INDEX web_records_club_card ON records (card_no, at_utc_s) WHERE {CLUB_HISTORY_KINDS_SQL}",
            "DROP INDEX contract_entries_at",
            "DROP INDEX records_contract",
            "CREATE INDEX records_contract ON records (contract_id, at_utc_s) WHERE kind = 'fuel.completed'"]


#: The tables ingest updates in place, by how often a row is rewritten, and the share of each
#: PostgreSQL heap page a new row may fill (``fillfactor``): the rest stays free, so that an
#: update of an unindexed column (a balance, a counter, a dirty mark's generation) puts the
#: new row version on the same page, a HOT update that adds no index entry. At the default
#: (100) pages are full and most of these updates went to another page, each with a new
#: entry in every index of the table (docs/sync.md, issue 12's eighth pass).
HOT_TABLES: dict[str, int] = {
    "contracts": 50,          # every balance changed by each ingest transaction that charges it
    "replica_dirty": 50,      # each mark's generation, on every ingest transaction that touches the row
    "card_tc_state": 70,      # each card's highest counter, once a transaction that sees the card
    "fuel_counters": 70,      # a new row per (card, limit, period), then updated
    "replica_spenders": 70,   # inserted once per (row, site); updated when a cover is cleared
    "club_accounts": 70,      # the balance and turnover of each sale, return and top-up
}


def _v10(db: Database) -> list[str]:
    """HOT updates for the rows ingest rewrites (issue 12's eighth pass): PostgreSQL leaves
    room on each new heap page of the tables of :data:`HOT_TABLES`. Pages written before keep
    what they hold (a ``VACUUM FULL`` of a table rewrites it with the room, outside this
    migration, which runs in a transaction). SQLite has no such setting and no HOT updates:
    nothing to do there."""
    if not db.is_pg:
        return []
    return [f"ALTER TABLE {table} SET (fillfactor = {ff})" for table, ff in HOT_TABLES.items()]


#: ``MIGRATIONS[n]`` (1-based) gives the statements that take a database to version n.
MIGRATIONS: list[Callable[[Database], list[str]]] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8, _v9, _v10]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: Database) -> int:
    """The database's schema version (0: empty)."""
    if db.is_pg:
        exists = db.scalar("SELECT to_regclass('meta') IS NOT NULL")
    else:
        exists = db.scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
    if not exists:
        if db.is_pg:
            n = db.scalar("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
        else:
            n = db.scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
        if n:
            raise SchemaError("the database holds tables but is not an edgepos ledger (no meta table)")
        return 0
    v = db.scalar("SELECT value FROM meta WHERE key = 'schema_version'")
    return int(v) if v is not None else 0


def migrate(db: Database) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION`; returns the version it was at.

    Raises :class:`SchemaError` for a database of a newer version or a foreign one."""
    def step(d: Database) -> int:
        if d.is_pg:  # one migrator at a time; released at commit
            d.execute("SELECT pg_advisory_xact_lock(7302011)")
        before = schema_version(d)
        if before > SCHEMA_VERSION:
            raise SchemaError(f"the ledger's schema is version {before}, this code knows up to "
                              f"{SCHEMA_VERSION}: upgrade edgepos")
        for n in range(before, SCHEMA_VERSION):
            for stmt in MIGRATIONS[n](d):
                d.execute(stmt)
            d.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                      "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(n + 1),))
        return before
    return db.run(step)
