"""The compile step: a model (authz) turned into the flat typed arrays the native evaluator
reads. Positions are the model's tuple positions, so batches mean the same to both
evaluators. Nothing here decides anything. The fuel model goes through its columnar form
first (:mod:`native.compact`); the club model is compiled here directly."""

from __future__ import annotations

from array import array

from authz.club import accrual_rate_bp
from authz.club_model import ClubCardKind, ClubModel, ClubStatus
from authz.errors import ModelError
from authz.fuel_model import (CardKind, CardStatus, DiscountKind, DiscountWhere, FuelModel, LimitUnit,
                              Period, ProductGroup, Scope, Tariff)

from .tz import transitions

#: A counter that never counted: its period started before any real period.
NO_PERIOD = -(2**31)


def _mask(groups) -> int:
    m = 0
    for g in groups:
        m |= 1 << int(g)
    return m


class TzTables:
    """Every zone's transitions, concatenated; zone ``k`` owns rows ``first[k]:first[k+1]``."""

    def __init__(self) -> None:
        self.names: dict[str, int] = {}
        self.first = array("i", [0])
        self.utc = array("q")
        self.offset = array("q")

    def add(self, name: str) -> int:
        """The index of zone ``name``, adding its rows the first time."""
        k = self.names.get(name)
        if k is None:
            k = self.names[name] = len(self.names)
            for start, off in transitions(name):
                self.utc.append(start)
                self.offset.append(off)
            self.first.append(len(self.utc))
        return k


class FuelTables:
    """The small fuel tables as arrays: products, stations and their prices, the discount
    table, time zones (see native/_evaluator.pyx for how each is read). Cards, limits and
    contracts are large: the evaluator packs them straight from the columns
    (:class:`native.compact.FuelColumns`) into arrays of C structs.

    Products, stations and discounts are checked exactly as a FuelModel checks them (through
    a FuelModel of those tables alone); a zone name is checked when its table is built.
    """

    def __init__(self, cols) -> None:
        small = FuelModel(products=cols.products, stations=cols.stations, contracts=(), cards=(),
                          discounts=cols.discounts)
        self.products, self.stations, self.discounts = small.products, small.stations, small.discounts
        self.product_index, self.station_index = small.product_index, small.station_index
        self.tz = TzTables()
        for name in cols.tz_names:
            self.tz.add(name)
        if len(self.tz.names) != len(cols.tz_names):
            raise ModelError("a time zone is named twice in tz_names")
        m = small
        np_ = len(m.products)
        self.n_products = np_
        self.prod_group = array("b", [int(p.group) for p in m.products])

        self.st_region = array("i", [s.region for s in m.stations])
        self.st_groups = array("i", [_mask(s.groups) for s in m.stations])
        self.st_max_fill = array("q", [s.max_fill_ml for s in m.stations])
        self.st_price = array("q", [-1]) * (len(m.stations) * np_)
        for si, s in enumerate(m.stations):
            for code, price in s.prices_kop_per_l.items():
                self.st_price[si * np_ + m.product_index[code]] = price

        n_keys = len(Tariff) * np_
        self.disc_start = array("i", [0]) * n_keys
        self.disc_count = array("i", [0]) * n_keys
        self.disc_where = array("b")
        self.disc_kind = array("b")
        self.disc_value = array("q")
        for key in range(n_keys):
            rules = m.discount_index.get((Tariff(key // np_), m.products[key % np_].code), ())
            self.disc_start[key] = len(self.disc_value)
            self.disc_count[key] = len(rules)
            for r in rules:
                self.disc_where.append(int(r.where))
                self.disc_kind.append(int(r.kind))
                self.disc_value.append(r.value)


class ClubTables:
    """The club model as arrays; lots live in a pool of linked lists, one list per account,
    ordered oldest first (by expiry, then id)."""

    def __init__(self, m: ClubModel) -> None:
        r = m.rules
        self.tz = TzTables()
        self.tz_index = self.tz.add(r.tz)
        self.cat_accrues = array("b", [int(c.accrues) for c in r.categories])
        self.cat_redeemable = array("b", [int(c.redeemable) for c in r.categories])
        self.n_methods = len(r.payment_methods)
        self.rate = array("q", [accrual_rate_bp(m, ch, me) for ch in r.channels for me in r.payment_methods])
        self.cap_balance = array("q", [r.caps[k].balance_cap_kop for k in ClubCardKind])
        self.cap_turnover = array("q", [r.caps[k].turnover_cap_kop for k in ClubCardKind])
        self.card_account = array("i", [m.account_index[c.account_id] for c in m.cards])
        self.card_status = array("b", [int(c.status) for c in m.cards])
        self.acc_kind = array("b", [int(a.kind) for a in m.accounts])
        self.acc_activated = array("b", [int(a.activated) for a in m.accounts])
        self.acc_status = array("b", [int(a.status) for a in m.accounts])
        self.acc_balance = array("q", [a.balance_kop for a in m.accounts])
        self.acc_tmonth = array("i", [a.turnover_month for a in m.accounts])
        self.acc_turnover = array("q", [a.turnover_kop for a in m.accounts])
        self.acc_first_lot = array("i", [-1]) * len(m.accounts)
        lots = [(a_i, lot) for a_i, a in enumerate(m.accounts)
                for lot in sorted(a.lots, key=lambda x: (x.expires_at_s, x.lot_id))]
        n = len(lots)
        cap = max(16, 2 * n)
        self.lot_id = array("q", [0]) * cap
        self.lot_points = array("q", [0]) * cap
        self.lot_matures = array("q", [0]) * cap
        self.lot_expires = array("q", [0]) * cap
        self.lot_next = array("i", [-1]) * cap
        last: dict[int, int] = {}
        for k, (a_i, lot) in enumerate(lots):
            self.lot_id[k], self.lot_points[k] = lot.lot_id, lot.points
            self.lot_matures[k], self.lot_expires[k] = lot.matures_at_s, lot.expires_at_s
            if a_i in last:
                self.lot_next[last[a_i]] = k
            else:
                self.acc_first_lot[a_i] = k
            last[a_i] = k
        # free slots n..cap-1 are chained into the free list
        for k in range(n, cap - 1):
            self.lot_next[k] = k + 1
        self.free_lot = n if n < cap else -1


# Values the .pyx relies on; checked here so a renumbered enum fails at import, not silently.
assert (int(ProductGroup.FUEL), int(LimitUnit.MILLILITRES), int(Scope.GROUP), int(Scope.PRODUCT)) == (0, 1, 1, 2)
assert (int(DiscountWhere.HOME_REGION), int(DiscountWhere.CHOSEN_STATIONS), int(DiscountKind.KOP_PER_L)) == (0, 1, 0)
assert (int(CardStatus.BLOCKED), int(ClubStatus.BLOCKED), int(CardKind.VIRTUAL)) == (1, 1, 1)
assert len(CardStatus) == 2 and len(CardKind) == 2 and len(LimitUnit) == 2 and len(Scope) == 3
assert [int(p) for p in Period] == [0, 1, 2, 3, 4] and max(int(g) for g in ProductGroup) < 8  # a group mask is a byte
