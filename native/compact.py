"""The compact replica: the fuel and club models as columns, and FuelModel and ClubModel
views over the tables of a native evaluator.

A :class:`authz.fuel_model.FuelModel` of 1,000,000 cards is millions of Python objects
(~1 GB, ~20 s to build). :class:`FuelColumns` holds the same replica as one typed array per
field (``array.array``): what a host snapshot decodes to and what the simulation generates,
with no Python object per card. ``NativeFuelEvaluator(columns)`` packs it into its C structs;
the caller then drops the columns. :class:`CompactFuelModel` is a read-only FuelModel over
such an evaluator: cards, contracts, the stop list and counters are built on demand, one at
a time, so code written against a FuelModel (``model.card(no)``, ``model.card_index``,
``len(model.cards)``, ``authz.fuel.authorize(model, ...)``) keeps working. See
docs/evaluator.md, "The compact replica". The club replica has the same three parts:
:class:`ClubColumns` (accounts, lots and cards as arrays), ``NativeClubEvaluator(columns)``
and :class:`CompactClubModel`.

**Card numbers** (fuel and club) are digit strings, so "0012" and "12" are different cards.
A number of at most 18 ASCII digits is the int64 key ``int("1" + number)`` (the leading 1
keeps the leading zeros: "0012" -> 10012, "12" -> 112); any other number (letters, more
digits) has key 0 and lives in a small dict (``card_other``).
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

from authz import sample
from authz.club_model import ClubAccount, ClubCard, ClubCardKind, ClubModel, ClubRules, ClubStatus, PointLot
from authz.errors import ModelError
from authz.fuel_model import (CardKind, CardStatus, Contract, DiscountRule, FuelCard, FuelModel, Limit,
                              LimitCounter, LimitUnit, OnBreach, Period, Product, ProductGroup, Scope, Station,
                              StationScope, Tariff, TimeWindow, mask_card_no)
from authz.localtime import EPOCH, day_number
from authz.money import MAX_AMOUNT_KOP

from .tables import NO_PERIOD, _mask

#: The longest card number that has an int64 key.
MAX_KEY_DIGITS = 18


def card_key(card_no: object) -> int:
    """The int64 key of a card number, or 0 when it has none (not 0..18 ASCII digits)."""
    if type(card_no) is str and len(card_no) <= MAX_KEY_DIGITS and card_no.isascii() and \
            (card_no.isdigit() or not card_no):
        return int("1" + card_no)
    return 0


def card_no_of(key: int) -> str:
    """The card number of a key (the inverse of :func:`card_key`)."""
    return str(key)[1:]


def _groups_of(mask: int) -> frozenset[ProductGroup]:
    return frozenset(g for g in ProductGroup if mask >> int(g) & 1)


class _Columns:
    """What the fuel and club columns share: one typed array per name of ``ARRAYS`` (name,
    typecode), checked when given; ``card_key`` and ``card_other`` naming the cards (see the
    module doc); size, equality and card numbers."""

    ARRAYS: tuple[tuple[str, str], ...] = ()
    __slots__ = ()
    card_key: array[int]
    card_other: dict[int, str]

    def _set_arrays(self, arrays: dict[str, array]) -> None:
        """Every column of ``ARRAYS`` from ``arrays`` (an empty one where it has none); a
        ModelError for one of the wrong type, a TypeError for a name that is no column."""
        for name, code in self.ARRAYS:
            a = arrays.pop(name, None)
            if a is None:
                a = array(code)
            elif not isinstance(a, array) or a.typecode != code:
                raise ModelError(f"column {name} must be an array of type {code!r}")
            setattr(self, name, a)
        if arrays:
            raise TypeError(f"unknown columns: {', '.join(sorted(arrays))}")

    @property
    def n_cards(self) -> int:
        """Cards in the columns."""
        return len(self.card_key)

    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return sum(len(getattr(self, n)) * getattr(self, n).itemsize for n, _ in self.ARRAYS)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        names: tuple[str, ...] = self.__slots__
        return all(getattr(self, n) == getattr(other, n) for n in names)

    __hash__ = None  # type: ignore[assignment]  # mutable columns

    def card_no(self, i: int) -> str:
        """The number of card ``i``."""
        k = self.card_key[i]
        return card_no_of(k) if k else self.card_other[i]


class FuelColumns(_Columns):
    """A fuel replica as columns. Positions are those of the FuelModel it stands for.

    Small tables stay objects: ``products``, ``stations``, ``discounts`` (tuples, as in a
    FuelModel) and ``tz_names``. Everything else is one array per field:

    - contracts: ``ct_id`` (q), ``ct_tz`` (H, index into ``tz_names``), ``ct_region`` (i),
      ``ct_tariff`` (b), ``ct_balance`` (q), ``ct_credit`` (q), ``ct_nchosen`` (b) and
      ``ct_chosen`` (q, three station ids per contract, the first ``ct_nchosen`` meaningful,
      the rest 0);
    - cards: ``card_key`` (q, see the module doc; 0: the number is ``card_other[position]``),
      ``card_contract`` (i, contract position), ``card_kind`` (b), ``card_status`` (b),
      ``card_expires`` (i, last valid local day, days since 1970-01-01), ``card_groups`` (B,
      product-group bit mask), ``card_nlimits`` (H);
    - limits, card after card (card ``i`` owns the next ``card_nlimits[i]`` rows): ``lim_id``
      (q), ``lim_unit``, ``lim_period``, ``lim_scope`` (b), ``lim_amount`` (q),
      ``lim_scope_value`` (i: the group for GROUP, the product position for PRODUCT, -1),
      ``lim_spent`` (q) and ``lim_pstart`` (i; ``NO_PERIOD``: no counter yet);
    - the fleet manager's controls of each card (issue 11): ``card_nproducts`` (H, 0: every
      product of its groups, else the next rows of ``cprod_pos``, i: product positions, in
      position order), ``card_nwindows`` (B, the next rows of ``win_days``, B: weekday bit
      mask, bit 0 Monday; ``win_start`` and ``win_end``, H: minutes), ``card_scope`` (b,
      StationScope), ``card_nstations`` (B, the next rows of ``cst_id``, q: station ids,
      rising), ``card_on_breach`` (b, OnBreach); and ``lim_on_breach`` (b) per limit row.
      Columns built elsewhere may leave these five card columns (and ``lim_on_breach``)
      empty: no card has a control (every limit declines);
    - the stop list: ``stop_keys`` (q, sorted, unique: every number with a key, whether its
      card is in this replica or not) and ``stop_other`` (frozenset of the other numbers).

    Columns made by :meth:`from_model` are canonical (time zones in order of first use), so
    ``FuelColumns.from_model(cols.to_model()) == cols`` for canonical columns. Fields a
    FuelModel holds but the rules ignore are not kept: a limit's group or product outside
    its scope, counters of limits a card does not have.
    """

    CONTRACT_FIELDS = (("ct_id", "q"), ("ct_tz", "H"), ("ct_region", "i"), ("ct_tariff", "b"),
                       ("ct_balance", "q"), ("ct_credit", "q"), ("ct_nchosen", "b"), ("ct_chosen", "q"))
    CARD_FIELDS = (("card_key", "q"), ("card_contract", "i"), ("card_kind", "b"), ("card_status", "b"),
                   ("card_expires", "i"), ("card_groups", "B"), ("card_nlimits", "H"))
    LIMIT_FIELDS = (("lim_id", "q"), ("lim_unit", "b"), ("lim_period", "b"), ("lim_scope", "b"),
                    ("lim_amount", "q"), ("lim_scope_value", "i"), ("lim_spent", "q"), ("lim_pstart", "i"))
    #: the controls (issue 11): per card, then their rows card after card
    CONTROL_FIELDS = (("card_nproducts", "H"), ("card_nwindows", "B"), ("card_scope", "b"),
                      ("card_nstations", "B"), ("card_on_breach", "b"))
    CONTROL_ROW_FIELDS = (("cprod_pos", "i"), ("win_days", "B"), ("win_start", "H"), ("win_end", "H"),
                          ("cst_id", "q"))
    ARRAYS = CONTRACT_FIELDS + CARD_FIELDS + LIMIT_FIELDS + (("lim_on_breach", "b"),) + CONTROL_FIELDS + \
        CONTROL_ROW_FIELDS + (("stop_keys", "q"),)

    __slots__ = ("products", "stations", "discounts", "tz_names", "card_other", "stop_other") + \
        tuple(name for name, _ in ARRAYS)
    # the columns (set from ARRAYS in __init__), named for the type checker
    ct_id: array[int]
    ct_tz: array[int]
    ct_region: array[int]
    ct_tariff: array[int]
    ct_balance: array[int]
    ct_credit: array[int]
    ct_nchosen: array[int]
    ct_chosen: array[int]
    card_key: array[int]
    card_contract: array[int]
    card_kind: array[int]
    card_status: array[int]
    card_expires: array[int]
    card_groups: array[int]
    card_nlimits: array[int]
    lim_id: array[int]
    lim_unit: array[int]
    lim_period: array[int]
    lim_scope: array[int]
    lim_amount: array[int]
    lim_scope_value: array[int]
    lim_spent: array[int]
    lim_pstart: array[int]
    lim_on_breach: array[int]
    card_nproducts: array[int]
    card_nwindows: array[int]
    card_scope: array[int]
    card_nstations: array[int]
    card_on_breach: array[int]
    cprod_pos: array[int]
    win_days: array[int]
    win_start: array[int]
    win_end: array[int]
    cst_id: array[int]
    stop_keys: array[int]

    def __init__(self, *, products=(), stations=(), discounts=(), tz_names=(), card_other=None,
                 stop_other=frozenset(), **arrays: array) -> None:
        self.products = tuple(products)
        self.stations = tuple(stations)
        self.discounts = tuple(discounts)
        self.tz_names = tuple(tz_names)
        self.card_other = dict(card_other or {})
        self.stop_other: frozenset[str] = frozenset(stop_other)
        self._set_arrays(arrays)

    # -- sizes --

    @property
    def n_contracts(self) -> int:
        return len(self.ct_id)

    @property
    def n_limits(self) -> int:
        return len(self.lim_id)

    @property
    def stop_list_size(self) -> int:
        """Numbers on the stop list (of cards in this replica or not)."""
        return len(self.stop_keys) + len(self.stop_other)

    def __repr__(self) -> str:
        return (f"<FuelColumns {self.n_cards} cards, {self.n_limits} limits, {self.n_contracts} contracts, "
                f"{len(self.stations)} stations, stop list {self.stop_list_size}, {self.nbytes() >> 20} MiB>")

    # -- to and from a FuelModel --

    @classmethod
    def from_model(cls, m: FuelModel) -> "FuelColumns":
        """The columns of ``m`` (same positions)."""
        tz_names = tuple(dict.fromkeys(c.tz for c in m.contracts))
        tz_pos = {name: k for k, name in enumerate(tz_names)}
        chosen = array("q")
        for c in m.contracts:
            ids = tuple(c.chosen_station_ids)
            if len(ids) > 3:
                raise ModelError(f"contract {c.contract_id} chose more than three stations")
            chosen.extend(ids + (0,) * (3 - len(ids)))
        cards = m.cards
        cols = cls(
            products=m.products, stations=m.stations, discounts=m.discounts, tz_names=tz_names,
            ct_id=array("q", [c.contract_id for c in m.contracts]),
            ct_tz=array("H", [tz_pos[c.tz] for c in m.contracts]),
            ct_region=array("i", [c.home_region for c in m.contracts]),
            ct_tariff=array("b", [int(c.tariff) for c in m.contracts]),
            ct_balance=array("q", [c.balance_kop for c in m.contracts]),
            ct_credit=array("q", [c.credit_line_kop for c in m.contracts]),
            ct_nchosen=array("b", [len(c.chosen_station_ids) for c in m.contracts]),
            ct_chosen=chosen,
            card_key=array("q", [card_key(c.card_no) for c in cards]),
            card_contract=array("i", [m.contract_index[c.contract_id] for c in cards]),
            card_kind=array("b", [int(c.kind) for c in cards]),
            card_status=array("b", [int(c.status) for c in cards]),
            card_expires=array("i", [day_number(c.expires_on) for c in cards]),
            card_groups=array("B", [_mask(c.groups) for c in cards]),
            card_nlimits=array("H", [len(c.limits) for c in cards]),
        )
        cols.card_other = {i: c.card_no for i, c in enumerate(cards) if cols.card_key[i] == 0}
        counters, products = m.counters, m.product_index
        rows: list[tuple] = []
        for c in cards:
            for lim in c.limits:
                if lim.scope is Scope.GROUP:
                    value = int(lim.group)
                elif lim.scope is Scope.PRODUCT:
                    value = products[lim.product]
                else:
                    value = -1
                counter = counters.get((c.card_no, lim.limit_id))
                rows.append((lim.limit_id, int(lim.unit), int(lim.period), int(lim.scope), lim.amount, value,
                             counter.spent if counter else 0, counter.period_start if counter else NO_PERIOD))
        for k, (name, code) in enumerate(cls.LIMIT_FIELDS):
            setattr(cols, name, array(code, [r[k] for r in rows]))
        cols.lim_on_breach = array("b", [int(lim.on_breach) for card in cards for lim in card.limits])
        for card in cards:
            _put_controls(cols, card, products)
        keys = sorted({k for k in map(card_key, m.stop_list) if k})
        cols.stop_keys = array("q", keys)
        cols.stop_other = frozenset(no for no in m.stop_list if not card_key(no))
        return cols

    @classmethod
    def from_rows(cls, *, products: Iterable[Product], stations: Iterable[Station],
                  discounts: Iterable[DiscountRule], contracts: Iterable[Contract],
                  cards: Iterable[tuple[FuelCard, Iterable[tuple[int, LimitCounter]]]] | StoredCards,
                  stop_list: Iterable[str] | StoredCards = ()) -> "FuelColumns":
        """The columns of the replica the host's rows describe, with no FuelModel in between
        (a million cards in a few seconds, no object kept per card). ``cards`` are (card,
        counters) pairs, the counters as (limit_id, LimitCounter); rows keep their order.
        A card of an unknown contract or a limit of an unknown product is a ModelError here;
        the rest is checked when an evaluator packs the columns."""
        products, stations = tuple(products), tuple(stations)
        if isinstance(contracts, ContractColumns):  # filled while their snapshot was staged
            cc = contracts
        else:
            cc = ContractColumns()
            cc.add(contracts)
        contract_pos = cc.pos
        cols = cls(products=products, stations=stations, discounts=tuple(discounts), tz_names=tuple(cc.tz_pos),
                   **cc.arrays)
        from ._evaluator import _fill_card_columns
        product_pos = {p.code: i for i, p in enumerate(products)}
        try:
            if isinstance(cards, FilledCards):  # filled while their snapshot was staged, on these contracts
                if cards.contracts is not cc or cards.product_codes != tuple(product_pos):
                    raise ModelError("the fuel cards were filled on other contracts or products")
                for name in cards.NAMES:
                    setattr(cols, name, getattr(cards.cols, name))
                cols.card_other = cards.cols.card_other
                cards.cols = FuelColumns()  # these columns own the arrays now: freed once packed
            elif isinstance(cards, StoredCards):
                load_stored_cards(cards, contract_pos, product_pos, cols)
            else:
                _fill_card_columns(cards, contract_pos, product_pos, cols)
        except ModelError:
            raise
        except (TypeError, OverflowError, AttributeError, ValueError) as exc:
            raise ModelError(f"a fuel card row does not fit its columns: {exc}") from None
        if isinstance(cards, FilledCards):
            cc.drop_positions()  # the cards' contract positions are in their columns: not kept while they are packed
        from ._evaluator import _merge_keys
        stop = array("q")
        other: set[str] = set()
        if isinstance(stop_list, FilledStopList):  # filled while its snapshot was staged
            stop, other = stop_list.keys, stop_list.other
            stop_list.keys, stop_list.other = array("q"), set()  # sorted into new keys below: not kept twice
        elif isinstance(stop_list, StoredCards):  # the store's stop-list rows: by the native loader
            from ._rowload import load_stop_keys
            load_stop_keys(stop_list.datas(), lambda d: stop_list.row_of(d).card_no, card_key, stop, other)
        else:
            for no in stop_list:
                k = card_key(no)
                if k:
                    stop.append(k)
                else:
                    other.add(no)
        cols.stop_keys = _merge_keys(stop, array("q"))
        cols.stop_other = frozenset(other)
        return cols

    def to_model(self) -> FuelModel:
        """The FuelModel of these columns (a Python object per card: for tests, the reference
        evaluator and small replicas)."""
        tz = self.tz_names
        contracts = [Contract(self.ct_id[i], tz[self.ct_tz[i]], self.ct_region[i], Tariff(self.ct_tariff[i]),
                              self.ct_balance[i], self.ct_credit[i],
                              tuple(self.ct_chosen[3 * i:3 * i + self.ct_nchosen[i]]))
                     for i in range(self.n_contracts)]
        cards, counters = [], {}
        row = 0
        rows_at = [0, 0, 0]  # the next row of cprod_pos, of the windows, of cst_id
        for i in range(self.n_cards):
            no = self.card_no(i)
            limits = []
            for r in range(row, row + self.card_nlimits[i]):
                limits.append(_limit(self, r, OnBreach(self.lim_on_breach[r]) if self.lim_on_breach
                                     else OnBreach.DECLINE))
                if self.lim_pstart[r] != NO_PERIOD:
                    counters[(no, self.lim_id[r])] = LimitCounter(self.lim_spent[r], self.lim_pstart[r])
            row += self.card_nlimits[i]
            controls = self._controls(i, rows_at) if self.card_scope else {}
            cards.append(FuelCard(no, self.ct_id[self.card_contract[i]], EPOCH + timedelta(days=self.card_expires[i]),
                                  _groups_of(self.card_groups[i]), tuple(limits), CardKind(self.card_kind[i]),
                                  CardStatus(self.card_status[i]), **controls))
        stop = [card_no_of(k) for k in self.stop_keys] + list(self.stop_other)
        return FuelModel(products=self.products, stations=self.stations, contracts=contracts, cards=cards,
                         discounts=self.discounts, stop_list=stop, counters=counters)

    def _controls(self, i: int, rows_at: list[int]) -> dict:
        """The controls of card ``i`` as FuelCard keyword arguments; ``rows_at`` holds the
        next rows of the three row tables (card ``i``'s first ones) and moves past them."""
        p, w, s = rows_at
        n_p, n_w, n_s = self.card_nproducts[i], self.card_nwindows[i], self.card_nstations[i]
        rows_at[:] = [p + n_p, w + n_w, s + n_s]
        return {
            "products": frozenset(self.products[k].code for k in self.cprod_pos[p:p + n_p]) if n_p else None,
            "windows": tuple(TimeWindow(_weekdays_of(self.win_days[r]), self.win_start[r], self.win_end[r])
                             for r in range(w, w + n_w)),
            "station_scope": StationScope(self.card_scope[i]), "station_ids": frozenset(self.cst_id[s:s + n_s]),
            "on_breach": OnBreach(self.card_on_breach[i])}

    # -- edits the simulated site makes --

    def with_station(self, station) -> "FuelColumns":
        """These columns with ``station`` replacing the station of the same id (moved to the
        end) or added; contracts name chosen stations by id, so they follow. Shares the arrays."""
        out = self._copy()
        out.stations = tuple(s for s in self.stations if s.station_id != station.station_id) + (station,)
        return out

    def with_stop_keys(self, keys: array) -> "FuelColumns":
        """These columns with the card-number keys ``keys`` (any order, duplicates allowed)
        added to the stop list. Shares the other arrays."""
        from ._evaluator import _merge_keys
        out = self._copy()
        out.stop_keys = _merge_keys(self.stop_keys, keys)
        return out

    def _copy(self) -> "FuelColumns":
        out = object.__new__(FuelColumns)
        for n in self.__slots__:
            setattr(out, n, getattr(self, n))
        return out


def _limit(cols: FuelColumns, r: int, on_breach: OnBreach) -> Limit:
    scope, value = Scope(cols.lim_scope[r]), cols.lim_scope_value[r]
    return Limit(cols.lim_id[r], LimitUnit(cols.lim_unit[r]), Period(cols.lim_period[r]), cols.lim_amount[r],
                 scope, group=ProductGroup(value) if scope is Scope.GROUP else None,
                 product=cols.products[value].code if scope is Scope.PRODUCT else None, on_breach=on_breach)


def _weekdays_of(mask: int) -> frozenset[int]:
    return frozenset(d for d in range(7) if mask >> d & 1)


def days_mask(days: Iterable[int]) -> int:
    """A time window's weekdays as the bit mask of its ``win_days`` column (bit 0 Monday)."""
    m = 0
    for d in days:
        m |= 1 << d
    return m


def _put_controls(cols: FuelColumns, card: FuelCard, product_pos: Mapping[str, int]) -> None:
    """Append ``card``'s controls to the control columns (the rows of the Python paths;
    native._evaluator._fill_card_columns writes the same)."""
    if card.products is None:
        cols.card_nproducts.append(0)
    else:
        cols.card_nproducts.append(len(card.products))
        for code in card.products:
            if code not in product_pos:
                raise ModelError(f"card {mask_card_no(card.card_no)} allows product {code!r} the network does not sell")
        cols.cprod_pos.extend(sorted(product_pos[code] for code in card.products))
    cols.card_nwindows.append(len(card.windows))
    for w in card.windows:
        cols.win_days.append(days_mask(w.days))
        cols.win_start.append(w.start_min)
        cols.win_end.append(w.end_min)
    cols.card_scope.append(int(card.station_scope))
    cols.card_nstations.append(len(card.station_ids))
    cols.cst_id.extend(sorted(card.station_ids))
    cols.card_on_breach.append(int(card.on_breach))


# -- the simulated network, as columns ------------------------------------------------------------

def sample_fuel_columns(n_cards: int = 10_000, n_stations: int = 200, seed: int = 1) -> FuelColumns:
    """``authz.sample.fuel_model(n_cards, n_stations, seed)`` as columns, without making its
    objects: the same network, card for card (the same random draws, in the same order: the
    stations in Python, then contracts and cards by a port of the generator's loops to C
    that continues the same Mersenne Twister; tests/test_compact.py checks equality).
    About 0.1 s for 1,000,000 cards instead of ~16 s."""
    from ._evaluator import _sample_fuel_rows
    rnd = random.Random(seed)
    stations = sample.fuel_stations(rnd, n_stations)
    _version, mt, _gauss = rnd.getstate()
    arrays, tz_first = _sample_fuel_rows(mt, n_cards, array("q", [s.station_id for s in stations]),
                                         array("i", [s.region for s in stations]), sample.N_REGIONS)
    return FuelColumns(products=sample.PRODUCTS, stations=stations, discounts=sample.tariff_table(),
                       tz_names=tuple(sample.RUSSIAN_ZONES[k] for k in tz_first), **arrays)


def foreign_stop_keys(n: int, prefix: str = "700584") -> array:
    """Keys of ``n`` card numbers ``{prefix}{i:010d}`` (the simulated site pads its stop list
    with such cards of another issuer)."""
    from ._evaluator import _key_run
    return _key_run(int("1" + prefix) * 10**10, n)


# -- a FuelModel over a native evaluator's tables --------------------------------------------------

class _Rows(Sequence):
    """The rows of one kind (``card``, ``contract``, ``account``) of a native evaluator's
    tables, each built on demand from its position (``ev.<kind>_count``, ``ev.<kind>_at``)."""

    __slots__ = ("_ev", "_count", "_at", "_kind")

    def __init__(self, ev, kind: str) -> None:
        self._ev, self._count, self._at, self._kind = ev, f"{kind}_count", getattr(ev, f"{kind}_at"), kind

    def __len__(self) -> int:
        return getattr(self._ev, self._count)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self._kind} position out of range")
        return self._at(i)

    def __iter__(self):
        at = self._at
        return (at(i) for i in range(len(self)))


class _Positions(Mapping):
    """Key -> position for one kind of rows (``ev.<kind>_position``); iterates the keys in
    position order (``key_at``). ``text_keys``: a key that is not a str is simply absent."""

    __slots__ = ("_ev", "_count", "_position", "_key_at", "_text_keys")

    def __init__(self, ev, kind: str, key_at, *, text_keys: bool = False) -> None:
        self._ev, self._count = ev, f"{kind}_count"
        self._position, self._key_at, self._text_keys = getattr(ev, f"{kind}_position"), key_at, text_keys

    def _find(self, key):
        if self._text_keys and not isinstance(key, str):
            return None
        return self._position(key)

    def __getitem__(self, key) -> int:
        i = self._find(key)
        if i is None:
            raise KeyError(key)
        return i

    def __contains__(self, key) -> bool:
        return self._find(key) is not None

    def __iter__(self) -> Iterator:
        key_at = self._key_at
        return (key_at(i) for i in range(len(self)))

    def __len__(self) -> int:
        return getattr(self._ev, self._count)


class _StopList(Set):
    __slots__ = ("_ev",)

    def __init__(self, ev) -> None:
        self._ev = ev

    def __contains__(self, card_no) -> bool:
        return self._ev.on_stop_list(card_no)

    def __iter__(self) -> Iterator[str]:
        return self._ev.stop_list_numbers()

    def __len__(self) -> int:
        return self._ev.stop_list_size


class _Counters(Mapping):
    __slots__ = ("_ev",)

    def __init__(self, ev) -> None:
        self._ev = ev

    def __getitem__(self, key) -> LimitCounter:
        try:
            card_no, limit_id = key
            counter = self._ev.counter(card_no, limit_id)
        except (KeyError, TypeError, ValueError, OverflowError):
            counter = None
        if counter is None:
            raise KeyError(key)
        return counter

    def __iter__(self):
        return (key for key, _ in self._ev.counter_items())

    def __len__(self) -> int:
        return sum(1 for _ in self._ev.counter_items())

    def items(self):
        return self._ev.counter_items()


class CompactFuelModel(FuelModel):
    """A read-only FuelModel over the tables of a NativeFuelEvaluator built from columns.

    Products, stations, discounts and their indexes are the usual tuples and dicts; cards,
    contracts, ``card_index``, ``contract_index``, ``stop_list`` and ``counters`` are views
    that build a FuelCard, Contract or LimitCounter when asked (``len`` is immediate).
    Contract balances and counters are the evaluator's *now*: the snapshot plus this site's
    completions since. Iterating a million cards works but makes a million objects: ask for
    cards one at a time.
    """

    __slots__ = ("evaluator",)

    def __init__(self, evaluator) -> None:  # no FuelModel.__init__: the evaluator checked the columns
        ev = self.evaluator = evaluator
        self.products, self.stations, self.discounts = ev.products, ev.stations, ev.discounts
        self.product_index, self.station_index = ev.product_index, ev.station_index
        self.discount_index = {}
        for d in self.discounts:
            self.discount_index[(d.tariff, d.product)] = self.discount_index.get((d.tariff, d.product), ()) + (d,)
        self.cards = _Rows(ev, "card")
        self.card_index = _Positions(ev, "card", ev.card_number)
        self.contracts = _Rows(ev, "contract")
        self.contract_index = _Positions(ev, "contract", lambda i: ev.contract_at(i).contract_id)
        self.stop_list = _StopList(ev)
        self.counters = _Counters(ev)

    def __repr__(self) -> str:
        return f"<CompactFuelModel {len(self.cards)} cards, {len(self.contracts)} contracts>"


# -- the club replica as columns -------------------------------------------------------------------

class ClubColumns(_Columns):
    """A club replica as columns. Positions are those of the ClubModel it stands for.

    The rules stay one object (``rules``, a ClubRules). Everything else is one array per field:

    - accounts: ``acc_id`` (q), ``acc_kind``, ``acc_activated``, ``acc_status`` (b),
      ``acc_balance`` (q), ``acc_tmonth`` (i, months since January 1970), ``acc_turnover`` (q)
      and ``acc_nlots`` (i);
    - point lots, account after account (account ``a`` owns the next ``acc_nlots[a]`` rows, in
      the model's order): ``lot_id``, ``lot_points``, ``lot_matures``, ``lot_expires`` (q);
    - cards: ``card_key`` (q, see the module doc; 0: the number is ``card_other[position]``),
      ``card_account`` (i, account position) and ``card_status`` (b).

    ``ClubColumns.from_model(cols.to_model()) == cols``, and ``to_model()`` of the columns of
    a model has the same accounts and cards (lots in the same order).
    """

    ACCOUNT_FIELDS = (("acc_id", "q"), ("acc_kind", "b"), ("acc_activated", "b"), ("acc_status", "b"),
                      ("acc_balance", "q"), ("acc_tmonth", "i"), ("acc_turnover", "q"), ("acc_nlots", "i"))
    LOT_FIELDS = (("lot_id", "q"), ("lot_points", "q"), ("lot_matures", "q"), ("lot_expires", "q"))
    CARD_FIELDS = (("card_key", "q"), ("card_account", "i"), ("card_status", "b"))
    ARRAYS = ACCOUNT_FIELDS + LOT_FIELDS + CARD_FIELDS

    __slots__ = ("rules", "card_other") + tuple(name for name, _ in ARRAYS)
    # the columns (set from ARRAYS in __init__), named for the type checker
    acc_id: array[int]
    acc_kind: array[int]
    acc_activated: array[int]
    acc_status: array[int]
    acc_balance: array[int]
    acc_tmonth: array[int]
    acc_turnover: array[int]
    acc_nlots: array[int]
    lot_id: array[int]
    lot_points: array[int]
    lot_matures: array[int]
    lot_expires: array[int]
    card_key: array[int]
    card_account: array[int]
    card_status: array[int]

    def __init__(self, *, rules: ClubRules | None = None, card_other=None, **arrays: array) -> None:
        self.rules = ClubRules() if rules is None else rules
        self.card_other = dict(card_other or {})
        self._set_arrays(arrays)

    @property
    def n_accounts(self) -> int:
        return len(self.acc_id)

    @property
    def n_lots(self) -> int:
        return len(self.lot_id)

    def __repr__(self) -> str:
        return (f"<ClubColumns {self.n_accounts} accounts, {self.n_cards} cards, {self.n_lots} lots, "
                f"{self.nbytes() >> 20} MiB>")

    @classmethod
    def from_model(cls, m: ClubModel) -> "ClubColumns":
        """The columns of ``m`` (same positions, lots in the model's order)."""
        if isinstance(m, CompactClubModel):
            return m.evaluator.columns()
        accounts, cards = m.accounts, m.cards
        try:
            cols = cls(
                rules=m.rules,
                acc_id=array("q", [a.account_id for a in accounts]),
                acc_kind=array("b", [int(a.kind) for a in accounts]),
                acc_activated=array("b", [int(bool(a.activated)) for a in accounts]),
                acc_status=array("b", [int(a.status) for a in accounts]),
                acc_balance=array("q", [a.balance_kop for a in accounts]),
                acc_tmonth=array("i", [a.turnover_month for a in accounts]),
                acc_turnover=array("q", [a.turnover_kop for a in accounts]),
                acc_nlots=array("i", [len(a.lots) for a in accounts]),
                lot_id=array("q", [lot.lot_id for a in accounts for lot in a.lots]),
                lot_points=array("q", [lot.points for a in accounts for lot in a.lots]),
                lot_matures=array("q", [lot.matures_at_s for a in accounts for lot in a.lots]),
                lot_expires=array("q", [lot.expires_at_s for a in accounts for lot in a.lots]),
                card_key=array("q", [card_key(c.card_no) for c in cards]),
                card_account=array("i", [m.account_index[c.account_id] for c in cards]),
                card_status=array("b", [int(c.status) for c in cards]),
            )
        except (TypeError, OverflowError, ValueError) as exc:
            raise ModelError(f"the club model does not fit its columns: {exc}") from None
        cols.card_other = {i: c.card_no for i, c in enumerate(cards) if cols.card_key[i] == 0}
        return cols

    @classmethod
    def from_rows(cls, rules: ClubRules,
                  accounts: Iterable[tuple[ClubAccount, Iterable[ClubCard]]]) -> "ClubColumns":
        """The columns of the club the host's rows describe: (account, its cards) pairs, in
        order, with no ClubModel in between. A card listed with an account it does not point
        to is a ModelError here; the rest is checked when an evaluator packs the columns."""
        cols = cls(rules=rules)
        a_id, a_kind, a_act, a_status = cols.acc_id, cols.acc_kind, cols.acc_activated, cols.acc_status
        a_bal, a_tm, a_turn, a_nlots = cols.acc_balance, cols.acc_tmonth, cols.acc_turnover, cols.acc_nlots
        o_id, o_pts, o_mat, o_exp = cols.lot_id, cols.lot_points, cols.lot_matures, cols.lot_expires
        c_key, c_acc, c_status = cols.card_key, cols.card_account, cols.card_status
        try:
            for a, cards in accounts:
                pos = len(a_id)
                a_id.append(a.account_id)
                a_kind.append(int(a.kind))
                a_act.append(1 if a.activated else 0)
                a_status.append(int(a.status))
                a_bal.append(a.balance_kop)
                a_tm.append(a.turnover_month)
                a_turn.append(a.turnover_kop)
                a_nlots.append(len(a.lots))
                for lot in a.lots:
                    o_id.append(lot.lot_id)
                    o_pts.append(lot.points)
                    o_mat.append(lot.matures_at_s)
                    o_exp.append(lot.expires_at_s)
                for c in cards:
                    if c.account_id != a.account_id:
                        raise ModelError(f"club card {mask_card_no(c.card_no)} of account {c.account_id} "
                                         f"listed with account {a.account_id}")
                    key = card_key(c.card_no)
                    if not key:
                        cols.card_other[len(c_key)] = c.card_no
                    c_key.append(key)
                    c_acc.append(pos)
                    c_status.append(int(c.status))
        except (TypeError, OverflowError, ValueError) as exc:
            raise ModelError(f"a club account row does not fit its columns: {exc}") from None
        return cols

    def to_model(self) -> ClubModel:
        """The ClubModel of these columns (a Python object per account, card and lot: for
        tests, the reference evaluator and small replicas)."""
        accounts, row = [], 0
        for a in range(self.n_accounts):
            lots = tuple(PointLot(self.lot_id[r], self.lot_points[r], self.lot_matures[r], self.lot_expires[r])
                         for r in range(row, row + self.acc_nlots[a]))
            row += self.acc_nlots[a]
            accounts.append(ClubAccount(self.acc_id[a], ClubCardKind(self.acc_kind[a]), bool(self.acc_activated[a]),
                                        ClubStatus(self.acc_status[a]), self.acc_balance[a], self.acc_tmonth[a],
                                        self.acc_turnover[a], lots))
        cards = [ClubCard(self.card_no(i), self.acc_id[self.card_account[i]], ClubStatus(self.card_status[i]))
                 for i in range(self.n_cards)]
        return ClubModel(rules=self.rules, accounts=accounts, cards=cards)


def sample_club_columns(n_accounts: int = 5_000, seed: int = 3,
                        now_utc_s: int = sample.DAY_START_UTC) -> ClubColumns:
    """``authz.sample.club_model(n_accounts, seed, now_utc_s)`` as columns, without making its
    objects: the same chain, account for account (a port of the generator's loop to C on the
    same Mersenne Twister; tests/test_compact_club.py checks equality). About 0.02 s for
    100,000 accounts instead of ~1.7 s."""
    from ._evaluator import _sample_club_rows
    rnd = random.Random(seed)
    rules = ClubRules()
    _version, mt, _gauss = rnd.getstate()
    arrays = _sample_club_rows(mt, n_accounts, now_utc_s, rules.maturity_s, rules.expiry_months,
                               rules.caps[ClubCardKind.IDENTIFIED].balance_cap_kop // 2,
                               rules.caps[ClubCardKind.UNIDENTIFIED].balance_cap_kop // 2)
    return ClubColumns(rules=rules, **arrays)


# -- a ClubModel over a native evaluator's tables --------------------------------------------------

class CompactClubModel(ClubModel):
    """A read-only ClubModel over the tables of a NativeClubEvaluator built from columns.

    The rules and the category, channel and method indexes are the usual objects and dicts;
    ``accounts``, ``cards``, ``account_index`` and ``card_index`` are views that build a
    ClubAccount or ClubCard when asked (``len`` is immediate). Accounts are the evaluator's
    *now*: the snapshot plus this site's commits, returns and top-ups since, lots oldest first.
    """

    __slots__ = ("evaluator",)

    def __init__(self, evaluator) -> None:  # no ClubModel.__init__: the evaluator checked the columns
        ev = self.evaluator = evaluator
        self.rules = ev.rules
        self.category_index, self.channel_index, self.method_index = \
            ev.category_index, ev.channel_index, ev.method_index
        self.accounts = _Rows(ev, "account")
        self.account_index = _Positions(ev, "account", lambda i: ev.account_at(i).account_id)
        self.cards = _Rows(ev, "card")
        self.card_index = _Positions(ev, "card", ev.card_number, text_keys=True)

    def __repr__(self) -> str:
        return f"<CompactClubModel {len(self.accounts)} accounts, {len(self.cards)} cards>"



# -- after a load ----------------------------------------------------------------------------------

def release_free_memory() -> bool:
    """Give the memory freed by dropped columns back to the system (glibc's ``malloc_trim``).

    Columns are dropped once packed, but glibc keeps freed blocks of a few MB in its heap
    (its mmap threshold rises after the first large frees), so without this the ~10 MB of a
    100,000-account club's columns stay resident. Returns False where there is no glibc."""
    global _trim
    if _trim is None:
        try:
            import ctypes
            _trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _trim = False
    if not _trim:
        return False
    _trim(0)
    return True


_trim = None


__all__ = ["FuelColumns", "CompactFuelModel", "ClubColumns", "CompactClubModel", "card_key", "card_no_of",
           "sample_fuel_columns", "sample_club_columns", "foreign_stop_keys", "release_free_memory", "MAX_KEY_DIGITS",
           "StoredCards", "load_stored_cards", "load_card_datas", "ContractColumns", "FilledCards", "FilledStopList"]


# -- stored fuel-card rows straight into the columns ---------------------------------------------

@runtime_checkable
class StoredCards(Protocol):
    """Fuel-card (or stop-list) rows as the replica store holds them (``terminal.replica_store``):
    their MessagePack bytes in order, and the general path for one row. :meth:`FuelColumns.from_rows`
    given one reads the bytes with the native loader (:mod:`native._rowload`), no object per
    card; a row the loader does not take goes through :meth:`card_of`."""

    def datas(self) -> Iterable[bytes]:
        """Every row's bytes, in order (read once)."""
        ...

    def card_of(self, data: bytes) -> tuple[FuelCard, Iterable[tuple[int, LimitCounter]]]:
        """The (card, counters) of row ``data`` by the general path, or its refusal."""
        ...

    def row_of(self, data: bytes) -> Any:
        """Row ``data`` by the general path (a FuelCardRow, a StopListEntry...), or its refusal."""
        ...


def _mask_of(values: Iterable[int]) -> int:
    return sum(1 << int(v) for v in values if 0 <= int(v) < 64)


_ENUM_MASKS = {"kinds": _mask_of(CardKind), "statuses": _mask_of(CardStatus), "units": _mask_of(LimitUnit),
               "periods": _mask_of(Period), "scopes": _mask_of(Scope), "groups": _mask_of(ProductGroup)}


def _expiry_day(iso: bytes) -> int | None:
    """The day number of an ``expires_on`` as :mod:`wire.rows_bulk` reads it, or None."""
    from wire.rows_bulk import _date
    try:
        d = _date(iso.decode("ascii"))
    except UnicodeDecodeError:
        return None
    return None if d is None else day_number(d)


def load_stored_cards(cards: StoredCards, contract_pos: Mapping[int, int], product_pos: Mapping[str, int],
                      cols: FuelColumns) -> int:
    """Append ``cards`` to ``cols``' card and limit columns by the native loader; the rows it
    does not take (fleet controls, balance fields, anything unusual) by the general path.
    Returns how many went the general path. Raises ModelError as ``from_rows`` does, and
    whatever :meth:`StoredCards.card_of` raises for a row that is not a fuel-card row."""
    return load_card_datas(cards.datas(), cards.card_of, dict(contract_pos), dict(product_pos), cols)


def load_card_datas(datas: Iterable[bytes], card_of: Any, contracts: dict[int, int] | ContractColumns,
                    product_pos: dict[str, int], cols: FuelColumns, day_of: dict | None = None) -> int:
    """:func:`load_stored_cards` of rows' bytes ``datas``, ``card_of(data)`` their general path
    ((card, counters), or its refusal); ``contracts`` the contracts' positions (a dict, or
    rising :class:`ContractColumns`: looked up in their ids); ``day_of`` a cache of expiry
    days kept from call to call (a snapshot's parts loaded one by one)."""
    from ._evaluator import _fill_card_columns
    from ._rowload import load_fuel_cards

    ids = None
    if isinstance(contracts, ContractColumns):
        ids = contracts.arrays["ct_id"] if contracts.rising else None
        contract_pos: dict[int, int] = {} if contracts.rising else contracts.pos
    else:
        contract_pos = contracts
    made: list[dict[int, int]] = []

    def fill_slow(row: tuple[FuelCard, Iterable[tuple[int, LimitCounter]]]) -> None:
        if ids is not None and not made:  # the general path's positions, made once if ever needed
            made.append(contracts.pos)  # type: ignore[union-attr]
        _fill_card_columns((row,), made[0] if made else contract_pos, product_pos, cols)

    n_slow: int = load_fuel_cards(datas, contract_pos, product_pos, cols, card_of, fill_slow, _expiry_day,
                                  {} if day_of is None else day_of, max_amount=MAX_AMOUNT_KOP, no_period=NO_PERIOD,
                                  max_groups=len(ProductGroup), contract_ids=ids, **_ENUM_MASKS)
    return n_slow


# -- columns filled while a snapshot is staged (terminal.provision.EagerColumns) -------------------

class _Filled:
    """What a table filled into columns shares: it stands where :class:`StoredCards` goes
    (``terminal.replica``'s build takes it as it takes the store's rows), with its rows
    already read; ``noting(hook)`` calls ``hook`` on the rows kept as objects (those with the
    balance rule's fields: the only rows the hook notes anything of)."""

    table: Any = None
    noted: list[Any]

    def datas(self) -> Iterable[bytes]:
        """Not read again: the rows are in the columns."""
        raise ModelError(f"the {self.table} rows are already in columns")

    def card_of(self, data: bytes) -> Any:
        """Not read again (see :meth:`datas`)."""
        raise ModelError(f"the {self.table} rows are already in columns")

    def row_of(self, data: bytes) -> Any:
        """Not read again (see :meth:`datas`)."""
        raise ModelError(f"the {self.table} rows are already in columns")

    def noting(self, hook: Any) -> "_Filled":
        """These rows, ``hook(row)`` called on each row kept as an object."""
        for row in self.noted:
            hook(row)
        return self


class ContractColumns(_Filled):
    """The contract columns of :class:`FuelColumns` (``CONTRACT_FIELDS``), their time zones and
    each contract's position, filled a batch of contracts at a time (the parts of a snapshot
    as they are staged) with the checks :meth:`FuelColumns.from_rows` makes."""

    def __init__(self, table: Any = None, *, rising: bool = False) -> None:
        self.table = table
        self.noted = []
        self.tz_pos: dict[str, int] = {}
        #: ``rising``: the contracts come in rising id order (anything else is refused), their
        #: positions are found in ``ct_id`` and no dict is kept (no Python int per contract
        #: held while a snapshot is received); :attr:`pos` is then made when asked
        self.rising = rising
        self._pos: dict[int, int] | None = None if rising else {}
        self.arrays: dict[str, array] = {n: array(code) for n, code in FuelColumns.CONTRACT_FIELDS}

    @property
    def pos(self) -> dict[int, int]:
        """Each contract's position, by id."""
        if self._pos is None:
            return {cid: i for i, cid in enumerate(self.arrays["ct_id"])}
        return self._pos

    def drop_positions(self) -> None:
        """Forget :attr:`pos` (made again when asked): no longer needed once the cards have theirs."""
        if self._pos is not None:
            self._pos = None

    def add(self, contracts: Iterable[Contract]) -> None:
        """Append ``contracts``. Raises ModelError (more than three chosen stations, a contract
        twice) and, if ``rising``, ValueError for a contract whose id does not rise."""
        a = self.arrays
        ct_id, ct_tz, ct_region, ct_tariff = a["ct_id"], a["ct_tz"], a["ct_region"], a["ct_tariff"]
        ct_balance, ct_credit, ct_nchosen, ct_chosen = a["ct_balance"], a["ct_credit"], a["ct_nchosen"], a["ct_chosen"]
        tz_pos, contract_pos = self.tz_pos, self._pos
        for c in contracts:
            ids = tuple(c.chosen_station_ids)
            if len(ids) > 3:
                raise ModelError(f"contract {c.contract_id} chose more than three stations")
            if contract_pos is None:
                if ct_id and not c.contract_id > ct_id[-1]:
                    if c.contract_id == ct_id[-1]:
                        raise ModelError(f"duplicate contract {c.contract_id!r}")
                    raise ValueError("the contracts do not come in rising id order")
            elif c.contract_id in contract_pos:
                raise ModelError(f"duplicate contract {c.contract_id!r}")
            else:
                contract_pos[c.contract_id] = len(ct_id)
            ct_id.append(c.contract_id)
            ct_tz.append(tz_pos.setdefault(c.tz, len(tz_pos)))
            ct_region.append(c.home_region)
            ct_tariff.append(int(c.tariff))
            ct_balance.append(c.balance_kop)
            ct_credit.append(c.credit_line_kop)
            ct_nchosen.append(len(ids))
            ct_chosen.extend(ids + (0,) * (3 - len(ids)))


class FilledCards(_Filled):
    """Fuel cards loaded into the card, limit and control columns of ``cols`` (an otherwise
    empty :class:`FuelColumns`) on the positions of ``contracts`` and of the products
    ``product_codes`` (in order): :meth:`FuelColumns.from_rows` takes these columns as they are."""

    NAMES = tuple(n for n, _ in FuelColumns.ARRAYS if not n.startswith(("ct_", "stop_")))

    def __init__(self, table: Any, contracts: ContractColumns, product_codes: tuple[str, ...]) -> None:
        self.table = table
        self.noted = []
        self.contracts = contracts
        self.product_codes = product_codes
        self.cols = FuelColumns()
        self.day_of: dict = {}


class FilledStopList(_Filled):
    """A stop list loaded into its keys (unsorted; ``from_rows`` sorts them) and its numbers
    without one."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.noted = []
        self.keys = array("q")
        self.other: set[str] = set()
