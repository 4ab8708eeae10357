"""This site's own spend past a host row's watermark: what the replica re-applies on top of
the host's balances and counters (the balance rule, :mod:`authz.balance`; docs/sync.md).

A host row (a contract, a fuel card, a club account) names, per site, the last batch whose
spend it holds. The site turns that batch number into a journal seq with the batch's range
(kept by the sync client in the journal's meta, :func:`terminal.sync.batch_last_seq`), and
re-applies only the records after it. :class:`JournalSpend` reads both from the journal;
:func:`spend_of` turns journal records into the typed spend of :mod:`authz.balance`, grouped
by the row they change (:class:`OwnSpend`).
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left, insort
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from typing import Any, Protocol

import msgspec

from authz.balance import (
    ClubCommitSpend,
    ClubReturnSpend,
    ClubSpend,
    FuelSpend,
    account_after,
    allowed_balance,
    balance_after,
    club_card_of,
    counters_after,
)
from authz.club_model import ClubPayment, ClubReturn, ClubSale, ClubTopUp, SaleLine
from authz.localtime import local_date
from authz.money import MAX_AMOUNT_KOP
from wire.messages import Table

__all__ = [
    "CLUB_COMMITTED",
    "CLUB_RETURNED",
    "CLUB_TOPPED_UP",
    "FUEL_COMPLETED",
    "MARK_PREFIX",
    "PROVISIONAL_SEQ",
    "SPEND_KINDS",
    "JournalSpend",
    "OwnSpend",
    "SpendItem",
    "SpendSource",
    "approved_record",
    "club_item",
    "fuel_item",
    "item_of",
    "lane_spend",
    "spend_of",
    "translate_account",
    "translate_card",
    "translate_contract",
]

log = logging.getLogger("edgepos.replica")

#: Journal record kinds that spend (or give back) a balance, counter or account.
FUEL_COMPLETED = "fuel.completed"
CLUB_COMMITTED = "till.sale_committed"
CLUB_RETURNED = "till.return"
CLUB_TOPPED_UP = "till.topup"
SPEND_KINDS = frozenset({FUEL_COMPLETED, CLUB_COMMITTED, CLUB_RETURNED, CLUB_TOPPED_UP})
#: The journal meta keys of the kept watermarks (``balance.mark:<table>:<row key>``).
MARK_PREFIX = "balance.mark:"
_INT_KEYED = frozenset({Table.CONTRACTS, Table.CLUB_ACCOUNTS})
_MARKED = frozenset({Table.CONTRACTS, Table.FUEL_CARDS, Table.CLUB_ACCOUNTS})
#: The seqs an operation holds in the spend index while a lane has applied it and the journal
#: has not been read past it yet: above every journal seq, so past every watermark.
PROVISIONAL_SEQ = 1 << 62


class SpendSource(Protocol):
    """Where the replica finds this site's spend: its journal."""

    site_id: str

    def seq_of_batch(self, batch_seq: int) -> int:
        """The journal seq of the last record of batch ``batch_seq`` (0 for batch 0)."""

    def records_after(self, seq: int) -> Iterable[Any]:
        """Journal records with a seq greater than ``seq``, in seq order."""


class JournalSpend:
    """A :class:`SpendSource` over the site's open journal.

    A batch whose range the journal no longer knows (a journal written before ranges were
    kept) maps to seq 0: all of the site's spend is re-applied, which only declines more."""

    def __init__(self, site_id: str, journal: Any, chunk: int = 10_000) -> None:
        self.site_id = site_id
        self.journal = journal
        self.chunk = chunk

    def seq_of_batch(self, batch_seq: int) -> int:
        from .sync import batch_last_seq
        if batch_seq <= 0:
            return 0
        last = batch_last_seq(self.journal, batch_seq)
        return 0 if last is None else last

    def load_marks(self) -> dict[tuple[Table, Any], int]:
        """The kept watermarks written by :meth:`save_marks` (rows that name the site no more),
        by (table, row key)."""
        with self.journal._reading() as conn:  # a range of the meta table's primary key
            rows = conn.execute("SELECT key, value FROM meta WHERE key >= ? AND key < ?",
                                (MARK_PREFIX, MARK_PREFIX[:-1] + chr(ord(MARK_PREFIX[-1]) + 1))).fetchall()
        out: dict[tuple[Table, Any], int] = {}
        for key, value in rows:
            table_name, _, row = key[len(MARK_PREFIX):].partition(":")
            try:
                table = Table(table_name)
                mark = int(value)
                if table not in _MARKED or not row or mark < 0:
                    raise ValueError(key)
                out[(table, int(row) if table in _INT_KEYED else row)] = mark
            except ValueError:  # not one this wrote: left out (that row's spend is all re-applied: declines more)
                log.error("journal meta %r is not a kept watermark (%r): ignored", key, value)
        return out

    async def save_marks(self, marks: dict[tuple[Table, Any], int]) -> None:
        """Write kept watermarks into the journal's meta (one key each, in one group commit)."""
        await asyncio.gather(*(self.journal.set_meta(f"{MARK_PREFIX}{t.value}:{k}", str(w))
                               for (t, k), w in marks.items()))

    async def drop_marks(self, keys: Iterable[tuple[Table, Any]]) -> None:
        """Delete kept watermarks from the journal's meta (one key each, in one group commit)."""
        await asyncio.gather(*(self.journal.set_meta(f"{MARK_PREFIX}{t.value}:{k}", None) for t, k in keys))

    def records_after(self, seq: int) -> Iterator[Any]:
        while True:
            chunk = self.journal.after(seq, self.chunk)
            if not chunk:
                return
            yield from chunk
            seq = chunk[-1].seq or seq


@dataclass(frozen=True, slots=True)
class SpendItem:
    """One spend operation of this site as the spend index holds it: its journal ``seq`` (a
    provisional one, :data:`PROVISIONAL_SEQ` and up, while a lane has applied it and the
    journal has not been read past it), its ``key`` (the same for the lane's operation and
    its journal record: how the two are matched, exactly once), and either a fuel delivery
    (``fuel``; ``on_card``: it counts on the card's limits) or a club operation (``club`` on
    card ``card_no``, ``redeemed`` the points an approved commit redeemed)."""

    seq: int
    key: str
    fuel: FuelSpend | None = None
    on_card: bool = False
    club: ClubSpend | None = None
    card_no: str = ""
    redeemed: int = 0


#: The canonical form of a spend's key: JSON with every object's keys sorted (a dict built by
#: the lane and the same one read back from the journal give the same text).
_CANON = msgspec.json.Encoder(order="sorted", enc_hook=str)


def _canonical(value: Any) -> str:
    try:
        return _CANON.encode(value).decode()
    except TypeError:  # a key that is not text (the journal reads it back as text): as text
        return _CANON.encode(_text_keys(value)).decode()


def _text_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _text_keys(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_text_keys(v) for v in value]
    return value


def fuel_item(seq: int, body: dict, tz_of: Callable[[int], str | None]) -> SpendItem:
    """The :class:`SpendItem` of a ``fuel.completed`` body (as journaled, or as the lane
    applies it): keyed by the whole body."""
    req = body["request"]
    tz = tz_of(body["contract_id"])
    day = local_date(req["now_utc_s"], tz) if tz is not None else date.min
    spend = FuelSpend(seq, body["contract_id"], body["card_no"], req["product"], body["amount_kop"],
                      body["delivered_volume_ml"], day)
    return SpendItem(seq, "F" + _canonical(body), fuel=spend, on_card=tz is not None)


def club_item(seq: int, op: ClubSpend, redeemed: int = 0) -> SpendItem:
    """The :class:`SpendItem` of an approved club commit, return or top-up (as journaled, or
    as the till applies it): keyed by the typed operation with its decision's figures."""
    return SpendItem(seq, type(op).__name__ + _canonical(asdict(op)), club=op, card_no=club_card_of(op),
                     redeemed=redeemed)


def lane_spend(name: str, args: tuple, result: Any) -> ClubSpend | None:
    """The spend of a club evaluator's call ``name(*args)`` that answered ``result`` (a till's
    ``commit``, ``return_sale`` or ``top_up``): None unless it was approved (a declined one
    changed nothing, and its record is no spend either: :func:`item_of`)."""
    if name == "commit":
        if not result.approved:
            return None
        sale, payment, txn_no = args
        return ClubCommitSpend(sale, payment, txn_no, result.accrued_points)
    if not result.reason.approved:
        return None
    if name == "return_sale":
        return ClubReturnSpend(args[0], result.points_taken_back, result.points_given_back,
                               result.refund_card_balance_kop)
    if name == "top_up":
        return args[0]
    raise ValueError(f"not a club spend call: {name!r}")


def approved_record(kind: str, body: dict) -> bool:
    """Did the till approve the operation a ``till.return`` or ``till.topup`` record journals
    (its result: reason ``OK``, ``approved``)? The till journals declined ones too; only an
    approved one changed an account, the host applies only those (:func:`wire.bodies.club_touch`),
    and so does the balance rule. A committed sale is always approved (a declined one is
    ``till.sale_declined``)."""
    result = body.get("result")
    if not isinstance(result, dict):
        return False
    if kind == CLUB_RETURNED:
        return result.get("reason") == "OK"
    if kind == CLUB_TOPPED_UP:
        return result.get("approved") is True
    return kind == CLUB_COMMITTED


def item_of(rec: Any, tz_of: Callable[[int], str | None]) -> SpendItem | None:
    """The spend of one journal record (``seq``, ``kind``, ``body``), None for a record that
    spends nothing: not a spend kind, or a return or top-up the till declined (journaled, but
    it changed nothing: :func:`approved_record`)."""
    kind, body, seq = rec.kind, rec.body, rec.seq
    if kind == FUEL_COMPLETED:
        return fuel_item(seq, body, tz_of)
    if kind == CLUB_COMMITTED:
        s = body["sale"]
        sale = ClubSale(s["card_no"], tuple(SaleLine(**line) for line in s["lines"]), s["now_utc_s"],
                        s["channel"], s["payment_method"])
        return club_item(seq, ClubCommitSpend(sale, ClubPayment(**body["payment"]), body["txn_no"],
                                              int(body.get("accrued_points", 0))),
                         int(body.get("redeemed_points", 0)))
    if kind == CLUB_RETURNED:
        if not approved_record(kind, body):
            return None
        res = body["result"]
        return club_item(seq, ClubReturnSpend(ClubReturn(**body["return"]), int(res["points_taken_back"]),
                                              int(res["points_given_back"]), int(res["refund_card_balance_kop"])))
    if kind == CLUB_TOPPED_UP:
        if not approved_record(kind, body):
            return None
        return club_item(seq, ClubTopUp(**body["topup"]))
    return None


@dataclass(slots=True)
class OwnSpend:
    """This site's spend records by the row they change, each list in journal order:
    fuel deliveries by contract and by card, club operations by card number, and the points
    each approved commit redeemed (for the per-card offline allowance)."""

    by_contract: dict[int, list[FuelSpend]] = field(default_factory=lambda: defaultdict(list))
    by_fuel_card: dict[str, list[FuelSpend]] = field(default_factory=lambda: defaultdict(list))
    by_club_card: dict[str, list[tuple[int, ClubSpend]]] = field(default_factory=lambda: defaultdict(list))
    redeemed: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, item: SpendItem) -> None:
        """Index ``item`` under the rows it changes, in seq order."""
        if item.fuel is not None:
            _in_order(self.by_contract[item.fuel.contract_id], item.fuel, item.seq, _fuel_seq)
            if item.on_card:
                _in_order(self.by_fuel_card[item.fuel.card_no], item.fuel, item.seq, _fuel_seq)
        elif item.club is not None:
            _in_order(self.by_club_card[item.card_no], (item.seq, item.club), item.seq, _first)
            _in_order(self.redeemed[item.card_no], (item.seq, item.redeemed), item.seq, _first)

    def remove(self, item: SpendItem) -> None:
        """Take ``item`` (one :meth:`add` put in) out of the index again."""
        if item.fuel is not None:
            _drop(self.by_contract, item.fuel.contract_id, item.seq, _fuel_seq, lambda s: s is item.fuel)
            if item.on_card:
                _drop(self.by_fuel_card, item.fuel.card_no, item.seq, _fuel_seq, lambda s: s is item.fuel)
        elif item.club is not None:
            _drop(self.by_club_card, item.card_no, item.seq, _first, lambda x: x[1] is item.club)
            _drop(self.redeemed, item.card_no, item.seq, _first, lambda x: True)

    def fuel_past(self, spends: list[FuelSpend], seq: int) -> list[FuelSpend]:
        """The deliveries of ``spends`` after journal seq ``seq``."""
        return [s for s in spends if s.seq > seq]

    def club_past(self, card_nos: Iterable[str], seq: int) -> list[ClubSpend]:
        """The club operations on ``card_nos`` after journal seq ``seq``, in journal order."""
        ops = sorted((x for no in card_nos for x in self.by_club_card.get(no, ()) if x[0] > seq),
                     key=lambda x: x[0])
        return [op for _, op in ops]

    def redeemed_past(self, card_no: str, seq: int) -> int:
        """Points the approved commits on ``card_no`` after journal seq ``seq`` redeemed."""
        return sum(p for s, p in self.redeemed.get(card_no, ()) if s > seq)

    def forget_contract(self, contract_id: int, seq: int) -> None:
        """Drop the deliveries on a contract up to journal seq ``seq``: a row of it at that
        watermark is held, and watermarks never go back, so they are counted for good."""
        _keep_after(self.by_contract, contract_id, seq, lambda s: s.seq)

    def forget_fuel_card(self, card_no: str, seq: int) -> None:
        """The same for a fuel card's deliveries."""
        _keep_after(self.by_fuel_card, card_no, seq, lambda s: s.seq)

    def forget_club_cards(self, card_nos: Iterable[str], seq: int) -> None:
        """The same for the club operations (and redemptions) on an account's cards."""
        for no in card_nos:
            _keep_after(self.by_club_card, no, seq, lambda x: x[0])
            _keep_after(self.redeemed, no, seq, lambda x: x[0])


def _in_order(items: list, x: Any, seq: int, seq_of: Callable[[Any], int]) -> None:
    """Insert ``x`` (at ``seq``) into ``items`` (in seq order) after every entry at ``seq`` or
    before: appended when it is the last (the common case: seqs come in order)."""
    if not items or seq_of(items[-1]) <= seq:
        items.append(x)
    else:
        insort(items, x, key=seq_of)


def _fuel_seq(s: FuelSpend) -> int:
    return s.seq


def _first(x: tuple[int, Any]) -> int:
    return x[0]


def _drop(index: dict, key: Any, seq: int, seq_of: Callable[[Any], int], match: Callable[[Any], bool]) -> None:
    """Remove the entry of ``index[key]`` (a list in seq order) at ``seq`` that ``match``es."""
    items = index.get(key)
    if items is None:
        return
    i = bisect_left(items, seq, key=seq_of)
    while i < len(items) and seq_of(items[i]) == seq:
        if match(items[i]):
            del items[i]
            break
        i += 1
    if not items:
        del index[key]


def _keep_after(index: dict, key: Any, seq: int, seq_of: Callable[[Any], int]) -> None:
    items = index.get(key)
    if items is None:
        return
    kept = [x for x in items if seq_of(x) > seq]
    if kept:
        index[key] = kept
    else:
        del index[key]


def spend_of(records: Iterable[Any], tz_of: Callable[[int], str | None], into: OwnSpend | None = None) -> OwnSpend:
    """The spend among journal ``records`` (any object with ``seq``, ``kind`` and ``body``),
    grouped (added to ``into`` if given). ``tz_of(contract_id)`` gives a contract's time zone
    (None: not in the replica; its deliveries still count on the contract's balance, on no
    card limit)."""
    out = OwnSpend() if into is None else into
    for rec in records:
        item = item_of(rec, tz_of)
        if item is not None:
            out.add(item)
    return out


# -- rows translated: the host's figures plus this site's spend past the watermark ----------

def translate_contract(row: Any, seq: int, allowance_kop: int | None, spend: OwnSpend) -> Any:
    """A contract row (:class:`authz.fuel_model.Contract`) with the balance the evaluators
    decide on: the host's less this site's deliveries after journal seq ``seq``, capped by
    the site's offline allowance (:func:`authz.balance.allowed_balance`)."""
    past = spend.fuel_past(spend.by_contract.get(row.contract_id, []), seq)
    view = balance_after(row.balance_kop, past)
    balance = allowed_balance(view, row.credit_line_kop, allowance_kop, row.balance_kop - view)
    return replace(row, balance_kop=max(balance, -MAX_AMOUNT_KOP))


def translate_card(row: Any, seq: int, products: Any, spend: OwnSpend) -> Any:
    """A fuel card row (:class:`wire.FuelCardRow`) with the host's counters plus this site's
    deliveries on the card after journal seq ``seq``."""
    past = spend.fuel_past(spend.by_fuel_card.get(row.card.card_no, []), seq)
    if not past:
        return row
    return replace(row, counters=counters_after(row.card, row.counters, products, past))


def translate_account(row: Any, seq: int, rules: Any, spend: OwnSpend) -> Any:
    """A club account row (:class:`wire.ClubAccountRow`) with the host's balance, turnover and
    lots after this site's approved operations on its cards after journal seq ``seq``
    (:func:`authz.balance.account_after`: each as it was decided, never decided again).

    A balance below zero (the same money spent offline at two sites: the host keeps the
    debt) is carried as it is, so a top-up or a refund made meanwhile first pays the debt
    back, as at the host (docs/sync.md)."""
    past = spend.club_past((c.card_no for c in row.cards), seq)
    account = account_after(rules, row.account, tuple(row.cards), past) if past else row.account
    if not -MAX_AMOUNT_KOP <= account.balance_kop <= MAX_AMOUNT_KOP:
        account = replace(account, balance_kop=min(max(account.balance_kop, -MAX_AMOUNT_KOP), MAX_AMOUNT_KOP))
    elif not past:
        return row
    return replace(row, account=account)
