"""The compile step: a model (authz) turned into the flat typed arrays the native evaluator
reads. Positions are the model's tuple positions, so batches mean the same to both
evaluators. Nothing here decides anything. Both models go through their columnar form first
(:mod:`native.compact`); here are the small tables (products, stations, discounts, zones; the
club rules), the evaluator packs the large ones from the columns."""

from __future__ import annotations

from array import array

from authz.club import accrual_rate_bp
from authz.club_model import ClubCardKind, ClubModel, ClubRules, ClubStatus
from authz.errors import ModelError
from authz.fuel_model import (CardKind, CardStatus, DiscountKind, DiscountWhere, FuelModel, LimitUnit,
                              OnBreach, Period, ProductGroup, Scope, StationScope, Tariff)

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
    """The small club tables (the rules) as arrays: category flags, the channel x method
    accrual-rate matrix (the first-match rule table evaluated once), caps per card kind, the
    rules' time zone; and the name -> position dicts of categories, channels and methods.
    Accounts, cards and point lots are large: the evaluator packs them straight from the
    columns (:class:`native.compact.ClubColumns`) into arrays of C structs.

    The rules are checked exactly as a ClubModel checks them (through a ClubModel of the
    rules alone)."""

    def __init__(self, rules: ClubRules) -> None:
        small = ClubModel(rules=rules, accounts=(), cards=())
        r = self.rules = rules
        self.category_index, self.channel_index = small.category_index, small.channel_index
        self.method_index = small.method_index
        self.tz = TzTables()
        self.tz_index = self.tz.add(r.tz)
        self.cat_accrues = array("b", [int(c.accrues) for c in r.categories])
        self.cat_redeemable = array("b", [int(c.redeemable) for c in r.categories])
        self.n_methods = len(r.payment_methods)
        self.rate = array("q", [accrual_rate_bp(small, ch, me) for ch in r.channels for me in r.payment_methods])
        self.cap_balance = array("q", [r.caps[k].balance_cap_kop for k in ClubCardKind])
        self.cap_turnover = array("q", [r.caps[k].turnover_cap_kop for k in ClubCardKind])


# Values the .pyx relies on; checked here so a renumbered enum fails at import, not silently.
assert (int(ProductGroup.FUEL), int(LimitUnit.MILLILITRES), int(Scope.GROUP), int(Scope.PRODUCT)) == (0, 1, 1, 2)
assert (int(DiscountWhere.HOME_REGION), int(DiscountWhere.CHOSEN_STATIONS), int(DiscountKind.KOP_PER_L)) == (0, 1, 0)
assert (int(CardStatus.BLOCKED), int(ClubStatus.BLOCKED), int(CardKind.VIRTUAL)) == (1, 1, 1)
assert [int(k) for k in ClubCardKind] == [0, 1] and [int(s) for s in ClubStatus] == [0, 1]
assert len(CardStatus) == 2 and len(CardKind) == 2 and len(Scope) == 3
assert [int(u) for u in LimitUnit] == [0, 1, 2] and [int(b) for b in OnBreach] == [0, 1]
assert [int(s) for s in StationScope] == [0, 1, 2]
assert [int(p) for p in Period] == [0, 1, 2, 3, 4, 5, 6] and max(int(g) for g in ProductGroup) < 8  # a group mask is a byte
