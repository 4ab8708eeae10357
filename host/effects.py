"""What new records do to the ledger, applied set-wise inside ingest's transaction.

:class:`BatchEffects` reads each new record (:meth:`read`, which also gives the record's
``records`` columns in the same pass; :meth:`add` is the reference reader), keeps what it
implies, then :meth:`apply` loads the master data the batch touches in a few queries and writes every
change, locking rows in one fixed order (club accounts, contracts, limit counters, card
counters, dirty marks, each sorted by key) so that workers ingesting batches of different
sites at the same time never deadlock. The rows every site's sales share (the contracts'
balances, the limit counters, the cards' transaction counters, their dirty marks) come
last, as the transaction's last statements (:meth:`BatchEffects.apply_shared`), so that
another site's transaction waits for them only from there to the commit. Ingest is the
only writer of ``card_tc_state`` and of the dirty marks; the one other transaction that
locks contracts and limit counters together (the master-data import) takes them in the
same order, contracts first.

- ``fuel.completed``: the contract is charged ``amount_kop`` (a ``contract_entries`` row, for
  statements) and every limit of the card (the host's master data) that covers the product
  and has a period counts the delivery (litres, kopecks, or one purchase when anything was
  delivered) in the period of the authorization's time, in the contract's time zone: the
  one rule of :func:`authz.fuel.count_delivery`.
- Card transaction counters (``fuel.preauth``, ``fuel.reserved``, ``fuel.card_committed``,
  ``fuel.voided`` with a release, ``fuel.correction`` of an applied reservation): each
  counter value of a card holds exactly one write, and a card's counter never goes back in
  time. Two different writes at one counter value, or a counter that is lower than one seen
  earlier (beyond the clock tolerance), is a ``clone_alerts`` row. So is a card the edge
  refused for a counter behind one it had seen.
- ``fuel.correction``: the card could not be settled and may hold counters higher than it
  should (``card_corrections``, with the excess per limit). Money was never taken for a
  reservation (balances move only by completions), and the host's counters count only
  completions, so the host's own figures are already right; ``why: unknown`` waits for the
  card's next counter to tell whether the unsent write was made.
- ``till.sale_committed``, ``till.return`` (approved), ``till.topup`` (approved): the club
  account (:mod:`host.club`).
- A return is applied only within what its sale can still return by the host's own
  figures (the sale's ``till.sale_committed`` total less the returns the ledger applied),
  whatever the edge sent: one beyond is stored, flagged ``return_over_sale`` (a
  ``ledger_issues`` row) and changes no account. A return whose sale the ledger does not
  hold yet (batches may be ingested out of order) is flagged ``return_waits_for_sale`` and
  applied, or refused, when the sale arrives.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from authz.fuel import count_delivery
from authz.fuel_model import FuelCard, LimitCounter, Product, ProductGroup, mask_card_no
from authz.localtime import MAX_UTC_S, local_date
from authz.club_model import ClubCardKind, ClubRules, PointLot
from authz.money import MAX_AMOUNT_KOP, MAX_VOLUME_ML
from wire import Table, WireRecord
from wire.bodies import BodyError as WireBodyError
from wire.bodies import (CLUB_KINDS, HOT_FIELDS, TOUCH_KINDS, ClubTouch, Counters, FuelCardRefused, FuelCorrection,
                         FuelVoided, body_of, card_touch, charge_of, club_touch, hot_fields)

from . import club as C
from . import records as K
from .db import Database
from .records import BodyError
from .rows import dumps, limits_from_json, rules_from_json
from .versions import mark_dirty

__all__ = ["RETURN_OVER_SALE", "RETURN_WAITS", "BatchEffects", "Columns"]

#: The fuel kinds whose typed bodies have ledger effects (the rest are stored only).
_FUEL_KINDS = frozenset({K.FUEL_COMPLETED, K.FUEL_PREAUTH, K.FUEL_RESERVED, K.FUEL_CARD_COMMITTED, K.FUEL_VOIDED,
                         K.FUEL_CORRECTION, K.FUEL_CARD_REFUSED})
#: The known kinds with no facts and no ledger effects: stored as they are.
_STORED_ONLY = K.FACTLESS_KINDS - _FUEL_KINDS - CLUB_KINDS
_LOWER_HEX = "0123456789abcdef"
#: A record's ``records`` columns: contract_id, card_no, product, amount_kop, volume_ml.
Columns = tuple[int | None, str | None, str | None, int | None, int | None]
RETURN_OVER_SALE = "return_over_sale"  #: flag: a return beyond what its sale could still return
RETURN_WAITS = "return_waits_for_sale"  #: flag: a return whose sale the ledger does not hold yet


def _from_nothing(limit_id: int) -> LimitCounter | None:
    """No counter yet: :func:`count_delivery` then gives a delivery's own increment."""
    return None


@dataclass(slots=True)
class _Charge:
    rec: WireRecord
    contract_id: int
    card_no: str
    product: str
    amount_kop: int
    volume_ml: int
    auth_at_utc_s: int


@dataclass(slots=True)
class _Obs:
    """A card's transaction counter seen by a record; ``write_id`` is the write it holds (None
    when the record only read the counter)."""

    card_no: str
    tc: int
    write_id: str | None
    rec: WireRecord


def _in(kind: str, name: str, v: int, lo: int, hi: int) -> int:
    if not lo <= v <= hi:
        raise BodyError(f"{kind}: body.{name} must be in {lo}..{hi}, got {v}")
    return v


def _counters(counters: Counters) -> dict[int, tuple[int, int]]:
    """A typed body's counters as ``{limit_id: (spent, period_start)}``."""
    return {limit_id: (c.spent, c.period_start) for limit_id, c in counters}


def _club(kind: str, body: Any) -> ClubTouch:
    """The till record's :class:`wire.bodies.ClubTouch` (BodyError naming the field)."""
    try:
        return club_touch(kind, body)
    except WireBodyError as exc:
        raise BodyError(str(exc)) from None


class BatchEffects:
    """The effects of the new records of one batch (of one site)."""

    def __init__(self, db: Database, site_id: str, now_utc_s: int, clone_tolerance_s: int) -> None:
        self.db = db
        self.site_id = site_id
        self.now = now_utc_s
        self.tolerance = clone_tolerance_s
        self.charges: list[_Charge] = []
        self.obs: list[_Obs] = []
        self.corrections: list[tuple] = []
        self.club: list[tuple[str, str, WireRecord]] = []  # (kind, card_no, record)
        self.refusals: list[tuple[str, WireRecord, str]] = []
        self.flags: dict[str, str] = {}
        self.issues: list[tuple[str | None, str, str]] = []  # (record_id, kind, detail)
        self.dirty: set[tuple[Table, str | int]] = set()
        self.alerts: list[tuple] = []
        #: the new records when ingest stored their rows before applying (PostgreSQL: the
        #: ``records`` COPY runs before the site's lock, :mod:`host.ingest`); what the ledger
        #: held before is then the rows read less these
        self.stored_already: Sequence[WireRecord] = ()
        #: the charges' balance change per contract and increment per limit counter, computed
        #: by :meth:`apply_own` and written by :meth:`apply_shared`
        self._balance: dict[int, int] = {}
        self._counts: dict[tuple[str, int, int], int] = {}
        #: run by :meth:`apply` once the flags are final, before the balances are written
        #: (ingest stores the records' rows there)
        self.before_balances: Callable[[], None] | None = None
        #: run by :meth:`apply_shared` just before the dirty marks (PostgreSQL ingest locks the
        #: site's row and settles its batches there: the site's row locked last and briefly,
        #: its spender rows still written under that lock)
        self.before_marks: Callable[[], None] | None = None

    # -- reading records --

    def flag(self, rec: WireRecord, flag: str, detail: str) -> None:
        self.flags.setdefault(rec.record_id, flag)
        self.issues.append((rec.record_id, flag, detail))

    def read(self, rec: WireRecord) -> Columns:
        """Read one new record in one pass: keep its effects (as :meth:`add`) and return its
        ``records`` columns (as :func:`host.records.facts`; NULLs for a record flagged
        ``unknown_kind`` or ``bad_body``, which has no effect).

        The stored-only kinds are not read at all. The hot kinds are read from the values at
        :data:`wire.bodies.HOT_FIELDS` (``rec.body_fields``, which decode picked out of the
        body's bytes, or :func:`wire.bodies.hot_fields` of a body built otherwise), each field
        once, without the body itself when they are all of the exact type and in range; any
        other body, and every other kind, goes the reference way (:func:`host.records.facts`,
        then :meth:`add`), so a malformed body is refused with the same flag and the same
        message as before."""
        kind = rec.kind
        if kind in _STORED_ONLY:
            return K.NO_FACTS
        if kind in HOT_FIELDS:
            vals = rec.body_fields
            if vals is None:
                vals = hot_fields(kind, rec.body)
            cols = self._hot(kind, rec, vals)  # type: ignore[arg-type]
            if cols is not None:
                return cols
        if kind not in K.KNOWN_KINDS:
            self.flag(rec, "unknown_kind", f"record kind {kind!r} is not known to this host: stored, not applied")
            return K.NO_FACTS
        body = rec.body
        try:
            cols = K.facts(kind, body).columns()
            self.add(rec)
        except BodyError as exc:
            self.flag(rec, "bad_body", f"{kind}: {exc}")
            return K.NO_FACTS
        return cols

    def _hot(self, kind: str, rec: WireRecord, vals: tuple[Any, ...]) -> Columns | None:
        """:meth:`read` of a hot kind from its :data:`wire.bodies.HOT_FIELDS` values, when
        every one is of the exact type and in range (what the reference way would accept and
        read alike); else None."""
        if kind == K.FUEL_COMPLETED:
            cid, card, product, amount, volume, at = vals
            if (type(cid) is int and type(card) is str and type(product) is str
                    and type(amount) is int and type(volume) is int and type(at) is int
                    and 0 <= amount <= MAX_AMOUNT_KOP and 0 <= volume <= MAX_VOLUME_ML and 0 <= at <= MAX_UTC_S):
                self.charges.append(_Charge(rec, cid, card, product, amount, volume, at))
                return (cid, card, product, amount, volume)
        elif kind == K.FUEL_PREAUTH:
            cid, card, tc, product, amount, volume = vals
            if (type(cid) is int and type(card) is str and type(tc) is int and type(product) is str
                    and type(amount) is int and type(volume) is int):
                self.obs.append(_Obs(card, tc, None, rec))
                return (cid, card, product, amount, volume)
        else:  # fuel.reserved, fuel.card_committed
            card, tc, w = vals
            if type(card) is str and type(tc) is int and type(w) is str and len(w) == 32 and not w.strip(_LOWER_HEX):
                self.obs.append(_Obs(card, tc, w, rec))
                return (None, card, None, None, None)
        return None

    def add(self, rec: WireRecord) -> None:
        """Read one new record. Raises :class:`BodyError` (and keeps nothing of it) when its
        body is not of its kind's shape. A fuel record is read through :mod:`wire.bodies`: the
        hot kinds by its readers of the fields the ledger needs (``charge_of``, ``card_touch``),
        the rare ones decoded whole."""
        kind = rec.kind
        if kind in _FUEL_KINDS:
            self._add_fuel(rec)
        elif kind in CLUB_KINDS:
            c = _club(kind, rec.body)
            if c.applies:
                self.club.append((kind, c.card_no, rec))

    def _add_fuel(self, rec: WireRecord) -> None:
        kind = rec.kind
        try:
            if kind == K.FUEL_COMPLETED:
                c = charge_of(rec.body)
                self.charges.append(_Charge(rec, c.contract_id, c.card_no, c.product,
                                            _in(kind, "amount_kop", c.amount_kop, 0, MAX_AMOUNT_KOP),
                                            _in(kind, "delivered_volume_ml", c.delivered_volume_ml, 0, MAX_VOLUME_ML),
                                            _in(kind, "request.now_utc_s", c.auth_at_utc_s, 0, MAX_UTC_S)))
                return
            if kind in TOUCH_KINDS:
                t = card_touch(kind, rec.body)
                self.obs.append(_Obs(t.card_no, t.txn_counter, None if t.write_id is None else t.write_id.hex(), rec))
                return
            b = body_of(kind, rec.body)  # the rare kinds: decoded whole
        except WireBodyError as exc:
            raise BodyError(str(exc)) from None
        if isinstance(b, FuelVoided):
            if b.card_release == "released":
                if b.txn_counter is None or b.release_write_id is None:
                    raise BodyError("fuel.voided: a released reservation names its txn_counter and release_write_id")
                self.obs.append(_Obs(b.card_no, b.txn_counter, b.release_write_id.hex(), rec))
        elif isinstance(b, FuelCorrection):
            self._correction(rec, b)
        elif isinstance(b, FuelCardRefused):
            if b.card_no and b.reason.startswith("transaction counter"):
                self.refusals.append((b.card_no, rec, b.reason))

    def _correction(self, rec: WireRecord, b: FuelCorrection) -> None:
        kind = b.KIND
        held = _counters(b.counters_reserved)
        final = _counters(b.counters_final)
        excess = [[lid, start, spent - final[lid][0]] for lid, (spent, start) in sorted(held.items())
                  if lid in final and final[lid][1] == start and spent > final[lid][0]]
        applied = b.reservation_applied
        if applied is False:
            status = "not_needed"
        elif b.why == "unknown" or applied is None:
            status = "check_card"
        else:
            status = "due"
        self.corrections.append((rec.record_id, self.site_id, rec.txn_id, b.card_no, b.contract_id,
                                 b.why, status, b.reserved_txn_counter, b.unsent_write_id.hex(), dumps(excess),
                                 _in(kind, "released_volume_ml", b.released_volume_ml, -MAX_VOLUME_ML, MAX_VOLUME_ML),
                                 _in(kind, "released_amount_kop", b.released_amount_kop, -MAX_AMOUNT_KOP,
                                     MAX_AMOUNT_KOP),
                                 rec.at_utc_s, None))
        if applied is True:
            self.obs.append(_Obs(b.card_no, b.reserved_txn_counter, b.reserve_write_id.hex(), rec))

    # -- applying --

    def apply(self) -> None:
        """Write every effect (inside the caller's transaction): :meth:`apply_own`, the club
        accounts, then :attr:`before_balances` (ingest's records rows, whose flags are final
        only then), then :meth:`apply_shared`. Ingest calls this as its transaction's last
        step, after the site's bookkeeping, so that the rows other sites' transactions write
        too are locked last (each held until the commit)."""
        self.apply_own()
        if self.club:
            self._apply_club()  # the last flags (unknown club card, a bad body)
        if self.before_balances is not None:
            self.before_balances()
        self.apply_shared()

    def apply_own(self) -> None:
        """The part that locks no row another site's transaction writes: the master data the
        charges name read (their flags: unknown contract, card, product), their balance changes
        and counter increments computed (written by :meth:`apply_shared`), their
        ``contract_entries`` rows stored, and the till returns checked against this site's own
        sales."""
        if self.charges:
            self._read_charges()
        if self.club:
            self._check_returns()

    def apply_shared(self) -> None:
        """The rows every site's sales share, meant as the transaction's last statements, in
        the one lock order: the contracts' balances (one set-based UPDATE in contract-id
        order), the cards' limit counters (one upsert in key order), the cards' transaction
        counters (``card_tc_state``, locked by card, with the alerts they give), then the
        issues found, :attr:`before_marks` (ingest's site row), and the dirty marks
        (:func:`host.versions.mark_dirty`, in key order). The locks these take are held only
        from here to the commit."""
        db = self.db
        if self._balance:
            db.update_many("contracts", [("balance_kop", "balance_kop + {}")], "contract_id", ("bigint", "bigint"),
                           [(d, cid) for cid, d in sorted(self._balance.items())])
        if self._counts:
            db.insert_many("fuel_counters", ("card_no", "limit_id", "period_start", "spent"),
                           ("text", "bigint", "bigint", "bigint"), [(*k, v) for k, v in sorted(self._counts.items())],
                           "ON CONFLICT (card_no, limit_id, period_start) DO UPDATE SET "
                           "spent = fuel_counters.spent + excluded.spent")
        self._balance, self._counts = {}, {}
        if self.obs or self.refusals or self.corrections:
            self._apply_counters()
        if self.alerts:
            db.executemany("INSERT INTO clone_alerts (card_no, kind, txn_counter, record_id, site_id, at_utc_s, "
                           "other_record_id, other_site_id, detail, created_at_utc_s) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (record_id, kind) DO NOTHING",
                           [a + (self.now,) for a in self.alerts])
        if self.issues:
            db.executemany("INSERT INTO ledger_issues (record_id, site_id, kind, detail, created_at_utc_s) "
                           "VALUES (?, ?, ?, ?, ?)", [(r, self.site_id, k, d, self.now) for r, k, d in self.issues])
        if self.before_marks is not None:
            self.before_marks()
        if self.dirty:
            mark_dirty(db, self.dirty, self.site_id)  # the site's spend is in these rows now

    def _read_charges(self) -> None:
        db = self.db
        contracts = {c.contract_id for c in self.charges}
        tz = dict(db.select_in("SELECT contract_id, tz FROM contracts WHERE contract_id IN ({in})", sorted(contracts)))
        cards = {c.card_no for c in self.charges}
        card_rows = {r[0]: limits_from_json(r[1]) for r in db.select_in(
            "SELECT card_no, limits FROM fuel_cards WHERE card_no IN ({in})", sorted(cards))}
        products = {code: Product(code, "", ProductGroup(grp)) for code, grp in db.fetchall("SELECT code, grp FROM products")}
        balance: dict[int, int] = defaultdict(int)
        entries: list[Sequence[Any]] = []
        counts: dict[tuple[str, int, int], int] = defaultdict(int)
        for ch in self.charges:
            rid = ch.rec.record_id
            if ch.contract_id not in tz:
                self.flag(ch.rec, "unknown_contract", f"fuel.completed of unknown contract {ch.contract_id}: "
                                                      f"{ch.amount_kop} kop not charged")
                continue
            balance[ch.contract_id] -= ch.amount_kop
            entries.append((ch.contract_id, ch.rec.at_utc_s, -ch.amount_kop, "purchase", rid, ""))
            limits = card_rows.get(ch.card_no)
            if limits is None:
                self.flag(ch.rec, "unknown_card", f"fuel.completed of unknown card {mask_card_no(ch.card_no)}: "
                                                  "charged to the contract, no limit counted")
                continue
            product = products.get(ch.product)
            if product is None:
                self.flag(ch.rec, "unknown_product", f"fuel.completed of unknown product {ch.product!r}: "
                                                     "charged to the contract, no limit counted")
                continue
            # The one counting rule (authz.fuel.count_delivery: litres, kopecks, or one purchase
            # per delivery of more than nothing, in the period containing the authorization's
            # local day), counted from nothing: what it gives is this delivery's increment of the
            # counter row of that period, which the upsert below adds to what the row holds.
            card = FuelCard(ch.card_no, ch.contract_id, date.min, frozenset(), limits)  # count_delivery reads its limits
            for lid, counter in count_delivery(card, product, local_date(ch.auth_at_utc_s, tz[ch.contract_id]),
                                               _from_nothing, ch.volume_ml, ch.amount_kop):
                counts[(ch.card_no, lid, counter.period_start)] += counter.spent
            self.dirty.add((Table.FUEL_CARDS, ch.card_no))
        self.dirty.update((Table.CONTRACTS, cid) for cid in balance)
        # new rows only (no foreign keys): no lock on the contracts
        db.copy_rows("contract_entries", ("contract_id", "at_utc_s", "amount_kop", "kind", "record_id", "note"), entries,
                     ("int8", "int8", "int8", "text", "text", "text"))
        for cid, d in balance.items():  # written last (apply_shared): the rows other sites charge too
            self._balance[cid] = self._balance.get(cid, 0) + d
        for k, v in counts.items():
            self._counts[k] = self._counts.get(k, 0) + v

    def _apply_counters(self) -> None:
        db = self.db
        cards = sorted({o.card_no for o in self.obs} | {c[3] for c in self.corrections} | {r[0] for r in self.refusals})
        for card_no, rec, reason in self.refusals:
            self.alerts.append((card_no, "edge_refused", None, rec.record_id, self.site_id, rec.at_utc_s, None, None,
                                f"site {self.site_id} refused card {mask_card_no(card_no)}: {reason}"))
        if not cards:
            return
        db.insert_many("card_tc_state", ("card_no", "max_tc", "max_tc_at_utc_s", "max_tc_record_id", "max_tc_site_id"),
                       ("text", "bigint", "bigint", "text", "text"), [(c, -1, 0, "", "") for c in cards],
                       "ON CONFLICT (card_no) DO NOTHING")
        state = {r[0]: list(r[1:]) for r in db.select_in(
            "SELECT card_no, max_tc, max_tc_at_utc_s, max_tc_record_id, max_tc_site_id FROM card_tc_state "
            f"WHERE card_no IN ({{in}}) ORDER BY card_no{db.for_update}", cards)}
        pending = [list(r) for r in db.select_in(
            "SELECT record_id, card_no, reserved_txn_counter, unsent_write_id FROM card_corrections "
            "WHERE status = 'check_card' AND card_no IN ({in})", cards)]
        pending += [[c[0], c[3], c[7], c[8]] for c in self.corrections if c[6] == "check_card"]
        pairs = {(o.card_no, o.tc) for o in self.obs if o.write_id is not None}
        pairs |= {(p[1], p[2] + 1) for p in pending}
        held: dict[tuple[str, int], tuple[str, str, str]] = {
            (r[0], r[1]): (r[2], r[3], r[4]) for r in db.select_pairs(
                "card_tc", ("card_no", "txn_counter", "write_id", "record_id", "site_id"), ("card_no", "txn_counter"),
                sorted(pairs))}  # a read: any order
        new_tc = []
        changed = set()
        tol = self.tolerance
        for o in self.obs:
            rec = o.rec
            if o.write_id is not None:
                key = (o.card_no, o.tc)
                was = held.get(key)
                if was is None:
                    held[key] = (o.write_id, rec.record_id, self.site_id)
                    new_tc.append((o.card_no, o.tc, o.write_id, self.site_id, rec.txn_id, rec.record_id, rec.at_utc_s))
                elif was[0] != o.write_id:
                    self.alerts.append((o.card_no, "tc_conflict", o.tc, rec.record_id, self.site_id, rec.at_utc_s,
                                        was[1], was[2],
                                        f"card {mask_card_no(o.card_no)} transaction counter {o.tc} holds two "
                                        f"different writes (sites {was[2]} and {self.site_id}): two plastics"))
            st = state[o.card_no]
            max_tc, max_at = st[0], st[1]
            if max_tc >= 0 and ((o.tc < max_tc and rec.at_utc_s > max_at + tol)
                                or (o.tc > max_tc and rec.at_utc_s < max_at - tol)):
                self.alerts.append((o.card_no, "tc_backwards", o.tc, rec.record_id, self.site_id, rec.at_utc_s,
                                    st[2], st[3],
                                    f"card {mask_card_no(o.card_no)} transaction counter {o.tc} at {rec.at_utc_s} "
                                    f"against {max_tc} at {max_at} (site {st[3]}): the counter went back in time"))
            if o.tc > max_tc:
                state[o.card_no] = [o.tc, rec.at_utc_s, rec.record_id, self.site_id]
                changed.add(o.card_no)
        db.update_many("card_tc_state", [("max_tc", "{}"), ("max_tc_at_utc_s", "{}"), ("max_tc_record_id", "{}"),
                                         ("max_tc_site_id", "{}")], "card_no", ("bigint", "bigint", "text", "text", "text"),
                       [(*state[c], c) for c in sorted(changed)])
        # new pairs only: ``held`` was read under the cards' card_tc_state locks, which every
        # writer of card_tc holds, so none of them is there (a COPY, not an upsert: no
        # speculative insertion; a pair there after all fails the transaction, not silently)
        db.copy_rows("card_tc", ("card_no", "txn_counter", "write_id", "site_id", "txn_id", "record_id", "at_utc_s"),
                     sorted(new_tc),  # by (card, counter): each pair once, so the whole tuple sorts alike
                     ("text", "int8", "text", "text", "text", "text", "int8"))
        db.executemany("INSERT INTO card_corrections (record_id, site_id, txn_id, card_no, contract_id, why, status, "
                       "reserved_txn_counter, unsent_write_id, excess, released_volume_ml, released_amount_kop, "
                       "at_utc_s, resolved_by_record_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                       "ON CONFLICT (record_id) DO NOTHING", self.corrections)
        resolved = []
        for record_id, card_no, reserved_tc, unsent in pending:
            was = held.get((card_no, reserved_tc + 1))
            if was is not None:
                resolved.append(("not_needed" if was[0] == unsent else "due", was[1], record_id))
        db.executemany("UPDATE card_corrections SET status = ?, resolved_by_record_id = ? WHERE record_id = ?", resolved)

    def _check_returns(self) -> None:
        """Keep in ``self.club`` only the returns their sales can still take, in record order;
        bring in the waiting returns of sales this batch commits; flag the rest."""
        db, site = self.db, self.site_id
        sales = sorted({rec.txn_id for kind, _, rec in self.club if kind in (K.TILL_SALE_COMMITTED, K.TILL_RETURN)})
        if not sales:
            return
        own = {r.record_id for r in self.stored_already}  # this transaction's rows: not held before
        total: dict[str, int] = {txn: amount for rid, txn, amount in db.select_in(
            "SELECT record_id, txn_id, amount_kop FROM records WHERE kind = 'till.sale_committed' AND site_id = ? "
            "AND txn_id IN ({in})", sales, (site,)) if amount is not None and rid not in own}
        returned: dict[str, int] = defaultdict(int)
        waiting: dict[str, list[WireRecord]] = defaultdict(list)
        for rid, lane, txn, at, body, flag in db.select_in(
                "SELECT record_id, lane, txn_id, at_utc_s, body, flag FROM records WHERE kind = 'till.return' "
                "AND site_id = ? AND txn_id IN ({in}) ORDER BY at_utc_s, record_id", sales, (site,)):
            if rid in own:
                continue
            b = json.loads(body)
            if flag is None:
                c = _club(K.TILL_RETURN, b)
                if c.applies:
                    returned[txn] += c.amount_kop
            elif flag == RETURN_WAITS:
                waiting[txn].append(WireRecord(rid, site, lane, txn, K.TILL_RETURN, at, b))
        kept: list[tuple[str, str, WireRecord]] = []
        settled: list[tuple[str | None, str]] = []  # (new flag, record id) of stored waiting returns

        def check(card_no: str, rec: WireRecord, stored: bool) -> None:
            txn, kop = rec.txn_id, _club(K.TILL_RETURN, rec.body).amount_kop
            if txn not in total:
                if not stored:
                    self.flag(rec, RETURN_WAITS, f"till.return of sale {txn} that the ledger does not hold yet: "
                                                 "applied when the sale arrives")
                return
            left = total[txn] - returned[txn]
            if not 0 < kop <= left:
                detail = (f"till.return of {kop} kop of sale {txn}: the sale ({total[txn]} kop) can return only "
                          f"{left} kop more; not applied")
                if stored:
                    settled.append((RETURN_OVER_SALE, rec.record_id))
                    self.issues.append((rec.record_id, RETURN_OVER_SALE, detail))
                else:
                    self.flag(rec, RETURN_OVER_SALE, detail)
                return
            returned[txn] += kop
            kept.append((K.TILL_RETURN, card_no, rec))
            if stored:
                settled.append((None, rec.record_id))

        for kind, card_no, rec in self.club:
            if kind == K.TILL_RETURN:
                check(card_no, rec, stored=False)
                continue
            kept.append((kind, card_no, rec))
            if kind == K.TILL_SALE_COMMITTED and rec.txn_id not in total:
                total[rec.txn_id] = _club(kind, rec.body).amount_kop
                for w in waiting.pop(rec.txn_id, []):
                    check(_club(K.TILL_RETURN, w.body).card_no, w, stored=True)
        self.club = kept
        db.executemany("UPDATE records SET flag = ? WHERE record_id = ?", settled)

    def _apply_club(self) -> None:
        db = self.db
        body = db.scalar("SELECT body FROM club_rules WHERE key = 'club'")
        rules = ClubRules() if body is None else rules_from_json(body)
        card_acc = dict(db.select_in("SELECT card_no, account_id FROM club_cards WHERE card_no IN ({in})",
                                     sorted({c[1] for c in self.club})))
        ids = sorted(set(card_acc.values()))
        books: dict[int, C.AccountBook] = {}
        for r in db.select_in("SELECT account_id, kind, balance_kop, turnover_month, turnover_kop, points_debt "
                              f"FROM club_accounts WHERE account_id IN ({{in}}) ORDER BY account_id{db.for_update}", ids):
            books[r[0]] = C.AccountBook(r[0], ClubCardKind(r[1]), r[2], r[3], r[4], r[5])
        before: dict[int, dict[int, PointLot]] = defaultdict(dict)
        for r in db.select_in("SELECT account_id, lot_id, points, matures_at_s, expires_at_s FROM club_lots "
                              "WHERE account_id IN ({in})", ids):
            lot = PointLot(*r[1:])
            books[r[0]].lots.append(lot)
            before[r[0]][lot.lot_id] = lot
        for b in books.values():
            b.sort()
        apply = {K.TILL_SALE_COMMITTED: C.apply_commit, K.TILL_RETURN: C.apply_return, K.TILL_TOPUP: C.apply_topup}
        touched = set()
        for kind, card_no, rec in self.club:
            aid = card_acc.get(card_no)
            book = books.get(aid) if aid is not None else None
            if book is None:
                self.flag(rec, "unknown_club_card", f"{kind} of unknown club card {mask_card_no(card_no)}")
                continue
            try:
                for text in apply[kind](book, rules, rec.body):
                    self.issues.append((rec.record_id, "club_limit", text))
            except BodyError as exc:
                self.flag(rec, "bad_body", f"{kind}: {exc}")
                continue
            touched.add(aid)
        ups, dels = [], []
        for aid in sorted(touched):
            b = books[aid]
            now_lots = {lot.lot_id: lot for lot in b.lots}
            ups += [(aid, lot.lot_id, lot.points, lot.matures_at_s, lot.expires_at_s)
                    for lid, lot in sorted(now_lots.items()) if before[aid].get(lid) != lot]
            dels += [(aid, lid) for lid in sorted(before[aid]) if lid not in now_lots]
        db.executemany("UPDATE club_accounts SET balance_kop = ?, turnover_month = ?, turnover_kop = ?, points_debt = ? "
                       "WHERE account_id = ?", [(books[a].balance_kop, books[a].turnover_month, books[a].turnover_kop,
                                                 books[a].points_debt, a) for a in sorted(touched)])
        db.executemany("DELETE FROM club_lots WHERE account_id = ? AND lot_id = ?", dels)
        db.executemany("INSERT INTO club_lots (account_id, lot_id, points, matures_at_s, expires_at_s) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT (account_id, lot_id) DO UPDATE SET points = excluded.points, "
                       "matures_at_s = excluded.matures_at_s, expires_at_s = excluded.expires_at_s", ups)
        self.dirty.update((Table.CLUB_ACCOUNTS, a) for a in touched)

