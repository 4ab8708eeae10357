"""Properties of the codec over generated input (hypothesis): nothing but WireError ever
escapes decode, valid messages round-trip exactly, and no single-byte change of a frame
gets through."""

from __future__ import annotations

import hmac
from datetime import date

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from authz.club_model import (AccrualRate, Category, ClubAccount, ClubCard, ClubCardKind, ClubRules, ClubStatus,
                              KindCaps, PointLot)
from authz.fuel_model import (CardKind, CardStatus, Contract, DiscountKind, DiscountRule, DiscountWhere, FuelCard,
                              Limit, LimitCounter, LimitUnit, OnBreach, Period, Product, ProductGroup, Scope, Station,
                              StationScope, Tariff, TimeWindow)
from wire import (Ack, Batch, ClubAccountRow, FuelCardRow, Limits, Presence, Rejection, ReplicaDelta,
                  ReplicaSnapshot, SiteKeys, SnapshotRequest, StopListEntry, Table, TariffRow, WireError, WireRecord,
                  decode, encode, row_key, topic_of)
from wire.codec import INT64_MAX, INT64_MIN, MessageType

SITE_KEY = bytes(range(32))
HOST_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(64, 96)))
SITES = ("SIM-077-001", "a", "Z.9_x-" + "q" * 58)
KEYS = SiteKeys({s: SITE_KEY for s in SITES}, replica_signing=HOST_KEY)


def _signed(signed: bytes, site: str | None) -> bytes:
    """``signed`` with the trailer its type calls for: a site's HMAC, or the host's Ed25519."""
    if site:
        return signed + b"\xc4\x20" + hmac.digest(SITE_KEY, signed, "sha256")
    return signed + b"\xc4\x40" + HOST_KEY.sign(signed)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

i64 = st.integers(INT64_MIN, INT64_MAX)
nat = st.integers(0, INT64_MAX)
small_nat = st.integers(0, 10**12)
sites = st.sampled_from(SITES)
ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def word(first: str, rest: str, max_rest: int) -> st.SearchStrategy[str]:
    """A string of one character of ``first`` and up to ``max_rest`` of ``rest`` (cheaper than from_regex)."""
    return st.builds(str.__add__, st.sampled_from(first), st.text(rest, max_size=max_rest))


names = word(ALNUM, ALNUM + "_.-", 63)
ulids = st.builds(str.__add__, st.sampled_from("01234567"),
                  st.text("0123456789ABCDEFGHJKMNPQRSTVWXYZ", min_size=25, max_size=25))
kinds = word(ALNUM, ALNUM + "_.:-", 63)
codes = word(ALNUM, ALNUM + "_.-", 31)
card_nos = st.text(ALNUM, min_size=1, max_size=32)
tzs = st.sampled_from(["Europe/Moscow", "UTC", "Asia/Kamchatka", "America/Argentina/Buenos_Aires", "Etc/GMT+3"])
json_values = st.recursive(
    st.none() | st.booleans() | i64 | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
bodies = st.dictionaries(st.text(max_size=10), json_values, max_size=5)


@st.composite
def records(draw, site: str) -> WireRecord:
    lane = draw(names)
    return WireRecord(f"{site}-{draw(ulids)}", site, lane, f"{site}:{draw(names)}-{draw(ulids)}", draw(kinds),
                      draw(nat), draw(bodies))


@st.composite
def batches(draw) -> Batch:
    site = draw(sites)
    recs = draw(st.lists(records(site), max_size=6, unique_by=lambda r: r.record_id))
    return Batch(site, draw(st.integers(1, INT64_MAX)), tuple(recs), draw(nat))


@st.composite
def acks(draw) -> Ack:
    up_to = draw(st.integers(0, 10**6))
    seqs = sorted(draw(st.sets(st.integers(1, up_to), max_size=4))) if up_to else []
    return Ack(draw(sites), up_to, tuple(Rejection(s, draw(st.text(min_size=1, max_size=30))) for s in seqs))


presences = st.builds(Presence, sites, st.booleans(), nat,
                      word(ALNUM, ALNUM + "_.+-", 63),
                      st.dictionaries(st.sampled_from(list(Table)), nat, max_size=8))
requests = st.builds(SnapshotRequest, sites, st.sampled_from(list(Table)), nat)

groups = st.frozensets(st.sampled_from(list(ProductGroup)))
limits = st.builds(Limit, nat, st.sampled_from(list(LimitUnit)), st.sampled_from(list(Period)), small_nat,
                   st.sampled_from(list(Scope)), st.none() | st.sampled_from(list(ProductGroup)), st.none() | codes,
                   st.sampled_from(list(OnBreach))).filter(
    lambda lim: not (lim.unit is LimitUnit.PURCHASES and lim.period is Period.TRANSACTION))
windows = st.builds(TimeWindow, st.frozensets(st.integers(0, 6), min_size=1), st.integers(0, 1439),
                    st.integers(1, 1440)).filter(lambda w: w.start_min != w.end_min)


@st.composite
def card_controls(draw) -> dict:
    """The fleet controls of a card (issue 11): each absent (the default) or drawn."""
    out: dict = {}
    if draw(st.booleans()):
        out["products"] = draw(st.frozensets(codes, min_size=1, max_size=4))
    out["windows"] = tuple(draw(st.lists(windows, max_size=3)))
    out["station_scope"] = scope = draw(st.sampled_from(list(StationScope)))
    if scope is StationScope.LISTED:
        out["station_ids"] = draw(st.frozensets(nat, min_size=1, max_size=5))
    out["on_breach"] = draw(st.sampled_from(list(OnBreach)))
    return out


@st.composite
def fuel_cards(draw) -> FuelCardRow:
    lims = draw(st.lists(limits, max_size=4, unique_by=lambda lim: lim.limit_id))
    card = FuelCard(draw(card_nos), draw(nat), draw(st.dates(date(1, 1, 1), date(9999, 12, 31))), draw(groups),
                    tuple(lims), draw(st.sampled_from(list(CardKind))), draw(st.sampled_from(list(CardStatus))),
                    **draw(card_controls()))
    chosen = draw(st.lists(st.sampled_from([lim.limit_id for lim in lims]), unique=True)) if lims else []
    return FuelCardRow(card, tuple((lid, LimitCounter(draw(i64), draw(i64))) for lid in chosen))


@st.composite
def tariffs(draw) -> TariffRow:
    t = draw(st.sampled_from(list(Tariff)))
    rules = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(list(DiscountKind)))
        top = 10_000 if kind is DiscountKind.PERCENT_BP else 10**8
        rules.append(DiscountRule(t, draw(codes), draw(st.sampled_from(list(DiscountWhere))), kind,
                                  draw(st.integers(0, top))))
    return TariffRow(t, tuple(rules))


club_rules = st.builds(
    ClubRules,
    categories=st.lists(st.builds(Category, codes, st.booleans(), st.booleans()), max_size=3,
                        unique_by=lambda c: c.code).map(tuple),
    accrual_rates=st.lists(st.builds(AccrualRate, codes | st.just("*"), codes | st.just("*"),
                                     st.integers(0, 10_000)), max_size=3).map(tuple),
    channels=st.lists(codes, max_size=3, unique=True).map(tuple),
    payment_methods=st.lists(codes, max_size=3, unique=True).map(tuple),
    redemption_cap_bp=st.integers(0, 10_000), maturity_s=nat, expiry_months=st.integers(0, 1_200),
    caps=st.dictionaries(st.sampled_from(list(ClubCardKind)), st.builds(KindCaps, small_nat, small_nat)),
    tz=tzs)


@st.composite
def club_accounts(draw) -> ClubAccountRow:
    aid = draw(nat)
    lots = draw(st.lists(st.builds(PointLot, nat, small_nat, i64, i64), max_size=3, unique_by=lambda x: x.lot_id))
    account = ClubAccount(aid, draw(st.sampled_from(list(ClubCardKind))), draw(st.booleans()),
                          draw(st.sampled_from(list(ClubStatus))), draw(small_nat), draw(i64), draw(small_nat),
                          tuple(lots))
    cards = draw(st.lists(card_nos, max_size=3, unique=True))
    return ClubAccountRow(account, tuple(ClubCard(c, aid, draw(st.sampled_from(list(ClubStatus)))) for c in cards))


ROWS = {
    Table.STOP_LIST: st.builds(StopListEntry, card_nos, nat),
    Table.PRODUCTS: st.builds(Product, codes, st.text(max_size=30), st.sampled_from(list(ProductGroup))),
    Table.STATIONS: st.builds(Station, nat, nat, groups, st.dictionaries(codes, st.integers(0, 10**8), max_size=4),
                              st.integers(1, 10**9)),
    Table.TARIFFS: tariffs(),
    Table.CONTRACTS: st.builds(Contract, nat, tzs, nat, st.sampled_from(list(Tariff)),
                               st.integers(-10**12, 10**12), small_nat, st.lists(nat, max_size=3).map(tuple)),
    Table.FUEL_CARDS: fuel_cards(),
    Table.CLUB_RULES: club_rules,
    Table.CLUB_ACCOUNTS: club_accounts(),
}


@st.composite
def snapshots(draw) -> ReplicaSnapshot:
    table = draw(st.sampled_from(list(Table)))
    rows = draw(st.lists(ROWS[table], max_size=4, unique_by=lambda r: row_key(table, r)))
    parts = draw(st.integers(1, 100_000))
    return ReplicaSnapshot(table, draw(st.integers(1, INT64_MAX)), draw(st.integers(0, parts - 1)), parts, tuple(rows))


@st.composite
def deltas(draw) -> ReplicaDelta:
    table = draw(st.sampled_from(list(Table)))
    rows = draw(st.lists(ROWS[table], max_size=4, unique_by=lambda r: row_key(table, r)))
    more = draw(st.lists(ROWS[table], max_size=3, unique_by=lambda r: row_key(table, r)))
    upserted = {row_key(table, r) for r in rows}
    gone = tuple(dict.fromkeys(k for k in (row_key(table, r) for r in more) if k not in upserted))
    from_v = draw(st.integers(0, INT64_MAX - 1))
    return ReplicaDelta(table, from_v, draw(st.integers(from_v + 1, INT64_MAX)), tuple(rows), gone)


messages = st.one_of(batches(), acks(), presences, requests, snapshots(), deltas())


@FAST
@given(messages)
def test_valid_messages_round_trip_exactly(msg):
    data = encode(msg, KEYS)
    assert decode(data, KEYS, topic=topic_of(msg)) == msg
    assert encode(decode(data, KEYS, topic=None), KEYS) == data  # one encoding per message


@settings(max_examples=200, deadline=None)
@given(messages, st.data())
def test_any_single_byte_change_is_refused(msg, data):
    frame = encode(msg, KEYS)
    i = data.draw(st.integers(0, len(frame) - 1), label="index")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != frame[i]), label="byte")
    changed = frame[:i] + bytes([new]) + frame[i + 1:]
    try:
        back = decode(changed, KEYS, topic=None)
    except WireError:
        return
    assert back == msg  # never happens with the MAC over every byte but its own; allowed by the contract


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_wire_errors(data):
    try:
        decode(data, KEYS, topic=None)
    except WireError:
        pass


@FAST
@given(messages, st.binary(min_size=1, max_size=8), st.data())
def test_mangled_frames_raise_only_wire_errors(msg, junk, data):
    frame = encode(msg, KEYS)
    i = data.draw(st.integers(0, len(frame)))
    how = data.draw(st.sampled_from(["insert", "overwrite", "cut"]))
    if how == "insert":
        frame = frame[:i] + junk + frame[i:]
    elif how == "overwrite":
        frame = frame[:i] + junk + frame[i + len(junk):]
    else:
        frame = frame[:i]
    try:
        decode(frame, KEYS, topic=None, limits=Limits(max_message_bytes=len(frame) + 1))
    except WireError:
        pass


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 64), (1 << 64) - 1) | st.floats() | st.text(max_size=10)
    | st.binary(max_size=10) | st.sampled_from([0, 1, 5, "SIM-077-001", "stop_list", "fuel_cards", "*"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["batch_seq", "records", "rows", "table", "card_no", "body", "x"]) | st.text(max_size=6),
        inner, max_size=5),
    max_leaves=20)


@settings(max_examples=250, deadline=None)
@given(st.sampled_from(list(MessageType)), sites, msgpack_values)
def test_signed_garbage_payloads_raise_only_wire_errors(mtype, site, payload):
    """Correctly signed frames, so the payload checks themselves are fuzzed."""
    site_types = {MessageType.BATCH, MessageType.PRESENCE, MessageType.SNAPSHOT_REQUEST, MessageType.ACK}
    envelope_site = site if mtype in site_types else None
    try:
        signed = msgpack.Packer().pack_array_header(5) + b"".join(
            msgpack.packb(x) for x in (1, mtype.value, envelope_site, payload))
    except (OverflowError, ValueError):
        assume(False)
    frame = _signed(signed, envelope_site)
    try:
        msg = decode(frame, KEYS, topic=None)
    except WireError:
        return
    assert decode(encode(msg, KEYS), KEYS, topic=None) == msg


@FAST
@given(messages, sites)
def test_signed_payloads_of_one_type_under_another_are_refused(msg, site):
    """Every type's payload, resigned as every other type, is refused or decodes to a valid message."""
    payload = msgpack.unpackb(encode(msg, KEYS), raw=False)[3]
    for mtype in MessageType:
        envelope_site = site if mtype in {MessageType.BATCH, MessageType.PRESENCE, MessageType.SNAPSHOT_REQUEST,
                                          MessageType.ACK} else None
        signed = msgpack.Packer().pack_array_header(5) + b"".join(
            msgpack.packb(x) for x in (1, mtype.value, envelope_site, payload))
        frame = _signed(signed, envelope_site)
        try:
            decode(frame, KEYS, topic=None)
        except WireError:
            pass


def _paths(value, path=()):
    """Every path into a decoded payload (map keys and array indexes)."""
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, path + (i,))


@settings(max_examples=300, deadline=None)
@given(messages, msgpack_values, st.data())
def test_valid_payloads_with_one_value_replaced_raise_only_wire_errors(msg, new_value, data):
    """A correctly signed frame whose payload is valid but for one value anywhere in it: the
    deep payload checks are fuzzed, and whatever they accept is a valid message."""
    _, mtype, site, payload, _ = msgpack.unpackb(encode(msg, KEYS), raw=False)
    path = data.draw(st.sampled_from(list(_paths(payload))[1:] or [()]), label="path")
    if path:
        target = payload
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = new_value
    try:
        signed = msgpack.Packer().pack_array_header(5) + b"".join(
            msgpack.packb(x) for x in (1, mtype, site, payload))
    except (OverflowError, ValueError):
        assume(False)
    frame = _signed(signed, site)
    try:
        back = decode(frame, KEYS, topic=None)
    except WireError:
        return
    assert decode(encode(back, KEYS), KEYS, topic=None) == back
