# cython: language_level=3
"""The native (Cython) evaluator: the rules of authz.fuel and authz.club on flat tables.

Same inputs, same outputs as the reference evaluator (authz.reference); the tables come
from native.tables. The batch calls release the GIL and make no Python object per
decision. Reading order: helpers on integers (calendar, money), then the fuel evaluator,
then the club evaluator. Each rule cites the reference function it mirrors.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject, Py_INCREF
from libc.stdint cimport int8_t, int32_t, int64_t

from authz.batch import ClubQuoteBatchResult, FuelBatchResult
from authz.club_model import (KOP_PER_POINT, MAX_SALE_KOP, AccountState, ClubCommit, ClubPayment,
                              ClubQuote, ClubReturn, ClubReturnResult, ClubSale, ClubTopUp,
                              ClubTopUpResult, PointLot, SaleLine)
from authz.errors import RequestError
from authz.fuel_model import FuelCompletion, FuelDecision, FuelRequest, LimitCounter, mask_card_no
from authz.localtime import MAX_UTC_S as _MAX_UTC_S
from authz.money import MAX_AMOUNT_KOP as _MAX_AMOUNT_KOP, MAX_VOLUME_ML as _MAX_VOLUME_ML
from authz.reasons import Reason

from .tables import ClubTables, FuelTables

cdef int64_t MAX_VOLUME = _MAX_VOLUME_ML
cdef int64_t MAX_AMOUNT = _MAX_AMOUNT_KOP
cdef int64_t MAX_SALE = MAX_SALE_KOP
cdef int64_t MAX_UTC = _MAX_UTC_S
cdef int64_t MAX_ID = 2**63 - 1

# Reason values (authz.reasons.Reason)
DEF R_OK = 0
DEF R_LIMIT = 1
DEF R_BALANCE = 2
DEF R_LIMIT_EXHAUSTED = 3
DEF R_BALANCE_EXHAUSTED = 4
DEF R_STOP_LIST = 5
DEF R_CARD_BLOCKED = 6
DEF R_CARD_EXPIRED = 7
DEF R_PRODUCT_NOT_ALLOWED = 8
DEF R_PRODUCT_NOT_SOLD = 9
DEF R_CARD_NOT_ACTIVATED = 10
DEF R_BALANCE_CAP = 11
DEF R_TURNOVER_CAP = 12
DEF R_INSUFFICIENT_POINTS = 13
DEF R_REDEMPTION_CAP = 14
DEF R_INSUFFICIENT_FUNDS = 15
DEF R_PRESET_TOO_SMALL = 16

DEF UNIT_ML = 1
DEF PERIOD_TXN = 0
DEF PERIOD_DAY = 1
DEF PERIOD_WEEK = 2
DEF PERIOD_MONTH = 3
DEF SCOPE_GROUP = 1
DEF SCOPE_PRODUCT = 2
DEF GROUP_FUEL = 0
DEF WHERE_HOME = 0
DEF WHERE_CHOSEN = 1
DEF KIND_KOP = 0
DEF BLOCKED = 1
DEF N_TARIFFS = 6

cdef tuple REASONS = tuple(Reason(i) for i in range(len(Reason)))


# ---------------------------------------------------------------- fast result objects

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member
    object PyType_GenericAlloc(type t, Py_ssize_t n)

cdef extern from *:
    void __builtin_prefetch(const void* addr) noexcept nogil


cdef class _Layout:
    """Where each field of a frozen slots dataclass lives inside its instances."""
    cdef type cls
    cdef Py_ssize_t offsets[16]
    cdef Py_ssize_t n

    def __init__(self, type cls):
        from dataclasses import fields
        names = [f.name for f in fields(cls)]
        if len(names) > 16:
            raise TypeError(f"{cls.__name__} has more than 16 fields")
        self.cls = cls
        self.n = len(names)
        for i, name in enumerate(names):
            descr = cls.__dict__[name]
            if type(descr).__name__ != "member_descriptor":
                raise TypeError(f"{cls.__name__}.{name} is not a slot")
            self.offsets[i] = (<PyMemberDescrObject*><PyObject*>descr).d_member.offset


cdef object _build(_Layout layout, tuple values):
    """An instance of a frozen slots dataclass made without its __init__: its slots are
    filled directly (the frozen __init__ sets each field through object.__setattr__, which
    cost more than the decision itself). ``values`` are the constructor's arguments in field
    order, exactly what the reference passes; the differential tests compare the results."""
    cdef object o = PyType_GenericAlloc(layout.cls, 0)
    cdef Py_ssize_t i
    cdef object v
    for i in range(layout.n):
        v = values[i]
        Py_INCREF(v)
        (<PyObject**>((<char*><PyObject*>o) + layout.offsets[i]))[0] = <PyObject*>v
    return o


cdef inline _check_type(obj, type cls):
    if not isinstance(obj, cls):
        raise RequestError(f"expected a {cls.__name__}, got {type(obj).__name__}")


cdef _Layout F_DECISION = _Layout(FuelDecision)
cdef _Layout F_QUOTE = _Layout(ClubQuote)


# ---------------------------------------------------------------- integers: calendar, money

cdef inline int64_t floordiv(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef inline void civil_from_days(int64_t z, int64_t* y, int64_t* m, int64_t* d) noexcept nogil:
    """Year, month, day of day number z (days since 1970-01-01), proleptic Gregorian."""
    z += 719468
    cdef int64_t era = floordiv(z, 146097)
    cdef int64_t doe = z - era * 146097
    cdef int64_t yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    cdef int64_t doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    cdef int64_t mp = (5 * doy + 2) // 153
    d[0] = doy - (153 * mp + 2) // 5 + 1
    m[0] = mp + 3 if mp < 10 else mp - 9
    y[0] = yoe + era * 400 + (1 if m[0] <= 2 else 0)


cdef inline int64_t days_from_civil(int64_t y, int64_t m, int64_t d) noexcept nogil:
    """Day number (since 1970-01-01) of a proleptic Gregorian date."""
    if m <= 2:
        y -= 1
    cdef int64_t era = floordiv(y, 400)
    cdef int64_t yoe = y - era * 400
    cdef int64_t mp = m - 3 if m > 2 else m + 9
    cdef int64_t doy = (153 * mp + 2) // 5 + d - 1
    cdef int64_t doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef inline int64_t days_in_month(int64_t y, int64_t m) noexcept nogil:
    if m == 2:
        return 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    return 30 if m in (4, 6, 9, 11) else 31


cdef inline int64_t add_months_utc(int64_t t, int64_t months) noexcept nogil:
    """authz.localtime.add_months_utc: calendar months in UTC, day clamped to month end."""
    cdef int64_t day = floordiv(t, 86400)
    cdef int64_t secs = t - day * 86400
    cdef int64_t y, m, d
    civil_from_days(day, &y, &m, &d)
    m = m - 1 + months
    y += floordiv(m, 12)
    m = m - floordiv(m, 12) * 12 + 1
    if d > days_in_month(y, m):
        d = days_in_month(y, m)
    return days_from_civil(y, m, d) * 86400 + secs


cdef inline int64_t week_start(int64_t day) noexcept nogil:
    """The Monday of the week of day number ``day`` (1970-01-01 was a Thursday)."""
    return day - (day + 3 - floordiv(day + 3, 7) * 7)


cdef inline int64_t month_start(int64_t day) noexcept nogil:
    cdef int64_t y, m, d
    civil_from_days(day, &y, &m, &d)
    return day - (d - 1)


cdef inline int64_t month_index(int64_t day) noexcept nogil:
    """Months since January 1970 of day number ``day``."""
    cdef int64_t y, m, d
    civil_from_days(day, &y, &m, &d)
    return (y - 1970) * 12 + m - 1


cdef inline int64_t max_volume_for_amount(int64_t amount, int64_t price) noexcept nogil:
    """authz.money.max_volume_for_amount."""
    if amount < 0:
        return 0
    if price == 0:
        return MAX_VOLUME
    cdef int64_t v = (1000 * amount + 499) // price
    return v if v < MAX_VOLUME else MAX_VOLUME


cdef inline int64_t amount_for_volume(int64_t volume, int64_t price) noexcept nogil:
    return (volume * price + 500) // 1000


cdef class _Zones:
    """Time-zone transition tables (native.tables.TzTables) with a last-hit cache per zone."""
    cdef const int32_t[::1] first
    cdef const int64_t[::1] utc
    cdef const int64_t[::1] offset
    cdef int32_t[::1] hit

    def __init__(self, tz):
        self.first = tz.first
        self.utc = tz.utc
        self.offset = tz.offset
        from array import array
        n_zones = len(tz.first) - 1
        self.hit = array("i", [tz.first[k] for k in range(n_zones)] or [0])

    cdef inline int64_t local_day(self, int32_t z, int64_t t) noexcept nogil:
        """Local day number at UTC second t in zone z (authz.localtime.local_date)."""
        cdef int32_t lo = self.first[z], hi = self.first[z + 1], k = self.hit[z], mid
        if not (self.utc[k] <= t and (k + 1 == hi or t < self.utc[k + 1])):
            while hi - lo > 1:  # largest k with utc[k] <= t; utc[first[z]] is -2**62
                mid = (lo + hi) >> 1
                if self.utc[mid] <= t:
                    lo = mid
                else:
                    hi = mid
            k = lo
            self.hit[z] = k
        return floordiv(t + self.offset[k], 86400)


# ---------------------------------------------------------------- fuel

cdef struct CardRec:
    int32_t contract
    int32_t expires
    int32_t groups
    int32_t limit_start
    int32_t limit_count
    int8_t status
    int8_t stop


cdef struct LimitRec:
    int64_t id
    int64_t amount
    int64_t spent
    int32_t pstart
    int32_t scope_value
    int8_t unit
    int8_t period
    int8_t scope


cdef struct ContractRec:
    int64_t balance
    int64_t credit
    int32_t tz
    int32_t region
    int32_t tariff
    int32_t chosen[3]


cdef struct FuelOut:
    int8_t reason
    int64_t volume
    int64_t amount
    int64_t price
    int64_t list_price
    int64_t binding


cdef class NativeFuelEvaluator:
    """Fuel decisions from the compiled tables of a FuelModel; the state (balances, limit
    counters) lives in the tables and is changed by ``complete``."""

    cdef readonly object model
    cdef readonly str name
    cdef object _t
    cdef _Zones zones
    cdef int32_t n_cards, n_stations, n_products
    cdef const int8_t[::1] prod_group
    cdef const int32_t[::1] st_region, st_groups
    cdef const int64_t[::1] st_max_fill, st_price
    cdef const int32_t[::1] disc_start, disc_count
    cdef const int8_t[::1] disc_where, disc_kind
    cdef const int64_t[::1] disc_value
    # cards, limits and contracts as arrays of structs: one decision reads a few cache
    # lines instead of one line per field (measured: benchmarks.evaluator)
    cdef CardRec* cards
    cdef LimitRec* lims
    cdef ContractRec* cts

    def __cinit__(self):
        self.cards = NULL
        self.lims = NULL
        self.cts = NULL

    def __dealloc__(self):
        PyMem_Free(self.cards)
        PyMem_Free(self.lims)
        PyMem_Free(self.cts)

    def __init__(self, model):
        t = FuelTables(model)
        self.model = model
        self.name = "native"
        self._t = t
        self.zones = _Zones(t.tz)
        self.n_cards, self.n_stations, self.n_products = len(model.cards), len(model.stations), len(model.products)
        self.prod_group = t.prod_group
        self.st_region, self.st_groups, self.st_max_fill, self.st_price = t.st_region, t.st_groups, t.st_max_fill, t.st_price
        self.disc_start, self.disc_count = t.disc_start, t.disc_count
        self.disc_where, self.disc_kind, self.disc_value = t.disc_where, t.disc_kind, t.disc_value
        self._pack(t)
        # the per-field arrays were only the compile step's output: keep the zones only
        self._t = None

    cdef void _pack(self, t) except *:
        """Copy the compile step's per-field arrays into the struct arrays."""
        cdef Py_ssize_t i, n_cards = len(t.card_contract), n_lims = len(t.lim_id), n_cts = len(t.ct_tz)
        self.cards = <CardRec*>PyMem_Malloc(max(n_cards, 1) * sizeof(CardRec))
        self.lims = <LimitRec*>PyMem_Malloc(max(n_lims, 1) * sizeof(LimitRec))
        self.cts = <ContractRec*>PyMem_Malloc(max(n_cts, 1) * sizeof(ContractRec))
        if self.cards == NULL or self.lims == NULL or self.cts == NULL:
            raise MemoryError("no memory for the fuel tables")
        cdef const int32_t[::1] contract = t.card_contract, expires = t.card_expires, groups = t.card_groups
        cdef const int32_t[::1] lstart = t.card_limit_start, lcount = t.card_limit_count
        cdef const int8_t[::1] status = t.card_status, stop = t.card_stop
        for i in range(n_cards):
            self.cards[i].contract = contract[i]
            self.cards[i].expires = expires[i]
            self.cards[i].groups = groups[i]
            self.cards[i].limit_start = lstart[i]
            self.cards[i].limit_count = lcount[i]
            self.cards[i].status = status[i]
            self.cards[i].stop = stop[i]
        cdef const int64_t[::1] lid = t.lim_id, amount = t.lim_amount, spent = t.lim_spent
        cdef const int32_t[::1] pstart = t.lim_pstart, svalue = t.lim_scope_value
        cdef const int8_t[::1] unit = t.lim_unit, period = t.lim_period, scope = t.lim_scope
        for i in range(n_lims):
            self.lims[i].id = lid[i]
            self.lims[i].amount = amount[i]
            self.lims[i].spent = spent[i]
            self.lims[i].pstart = pstart[i]
            self.lims[i].scope_value = svalue[i]
            self.lims[i].unit = unit[i]
            self.lims[i].period = period[i]
            self.lims[i].scope = scope[i]
        cdef const int32_t[::1] tz = t.ct_tz, region = t.ct_region, tariff = t.ct_tariff, chosen = t.ct_chosen
        cdef const int64_t[::1] balance = t.ct_balance, credit = t.ct_credit
        for i in range(n_cts):
            self.cts[i].balance = balance[i]
            self.cts[i].credit = credit[i]
            self.cts[i].tz = tz[i]
            self.cts[i].region = region[i]
            self.cts[i].tariff = tariff[i]
            self.cts[i].chosen[0] = chosen[3 * i]
            self.cts[i].chosen[1] = chosen[3 * i + 1]
            self.cts[i].chosen[2] = chosen[3 * i + 2]

    # -- the rules (authz.fuel) --

    cdef inline int64_t _unit_price(self, int32_t ct, int32_t s, int32_t p, int64_t lp) noexcept nogil:
        """authz.fuel.unit_price: list price less the largest applicable tariff discount."""
        cdef int32_t key = self.cts[ct].tariff * self.n_products + p, k, j
        cdef int64_t best = 0, off
        cdef bint chosen
        for k in range(self.disc_start[key], self.disc_start[key] + self.disc_count[key]):
            if self.disc_where[k] == WHERE_HOME and self.st_region[s] != self.cts[ct].region:
                continue
            if self.disc_where[k] == WHERE_CHOSEN:
                chosen = False
                for j in range(3):
                    if self.cts[ct].chosen[j] == s:
                        chosen = True
                if not chosen:
                    continue
            if self.disc_kind[k] == KIND_KOP:
                off = self.disc_value[k]
            else:
                off = (lp * self.disc_value[k] + 5000) // 10000
            if off > best:
                best = off
        return lp - best if lp > best else 0

    cdef inline bint _covers(self, int32_t k, int32_t p) noexcept nogil:
        """authz.fuel_model.Limit.covers."""
        if self.lims[k].unit == UNIT_ML and self.prod_group[p] != GROUP_FUEL:
            return False
        if self.lims[k].scope == SCOPE_GROUP:
            return self.lims[k].scope_value == self.prod_group[p]
        if self.lims[k].scope == SCOPE_PRODUCT:
            return self.lims[k].scope_value == p
        return True

    cdef inline int64_t _period_start(self, int8_t period, int64_t today) noexcept nogil:
        """authz.fuel.period_start."""
        if period == PERIOD_DAY:
            return today
        if period == PERIOD_WEEK:
            return week_start(today)
        if period == PERIOD_MONTH:
            return month_start(today)
        return 0

    cdef void _decide(self, int32_t c, int32_t s, int32_t p, int64_t now, int64_t pv, int64_t pa,
                      FuelOut* o) noexcept nogil:
        """authz.fuel.authorize, on positions already checked."""
        cdef int32_t ct, k
        cdef int64_t today, lp, price, volume, fits, left, spent, amount, start, pstart_week, pstart_month
        cdef int8_t reason = R_OK, period
        cdef int8_t g = self.prod_group[p]
        o.volume = 0
        o.amount = 0
        o.price = 0
        o.list_price = 0
        o.binding = -1
        if self.cards[c].stop:
            o.reason = R_STOP_LIST
            return
        if self.cards[c].status == BLOCKED:
            o.reason = R_CARD_BLOCKED
            return
        ct = self.cards[c].contract
        today = self.zones.local_day(self.cts[ct].tz, now)
        if today > self.cards[c].expires:
            o.reason = R_CARD_EXPIRED
            return
        if not (self.cards[c].groups >> g) & 1:
            o.reason = R_PRODUCT_NOT_ALLOWED
            return
        lp = self.st_price[s * self.n_products + p]
        if not (self.st_groups[s] >> g) & 1 or lp < 0:
            o.reason = R_PRODUCT_NOT_SOLD
            return
        price = self._unit_price(ct, s, p, lp)
        if pv > 0:
            volume = pv
        elif pa > 0:
            volume = max_volume_for_amount(pa, price)
        else:
            volume = self.st_max_fill[s]
        # A limit or the balance binds exactly when the amount of the volume so far is more
        # than what it has left: checked with a multiplication, divided only when it binds.
        amount = amount_for_volume(volume, price)
        pstart_week = pstart_month = -1
        for k in range(self.cards[c].limit_start, self.cards[c].limit_start + self.cards[c].limit_count):
            if not self._covers(k, p):
                continue
            spent = 0
            period = self.lims[k].period
            if period != PERIOD_TXN:
                if period == PERIOD_DAY:
                    start = today
                elif period == PERIOD_WEEK:
                    if pstart_week < 0:
                        pstart_week = week_start(today)
                    start = pstart_week
                elif period == PERIOD_MONTH:
                    if pstart_month < 0:
                        pstart_month = month_start(today)
                    start = pstart_month
                else:
                    start = 0
                if self.lims[k].pstart >= start:
                    spent = self.lims[k].spent
            left = self.lims[k].amount - spent
            if self.lims[k].unit == UNIT_ML:
                fits = left if left > 0 else 0
            elif amount > left:
                fits = max_volume_for_amount(left, price)
            else:
                continue
            if fits < volume:
                volume = fits
                amount = amount_for_volume(volume, price)
                reason = R_LIMIT
                o.binding = self.lims[k].id
        left = self.cts[ct].balance + self.cts[ct].credit
        if amount > left:
            fits = max_volume_for_amount(left, price)
            if fits < volume:
                volume = fits
                amount = amount_for_volume(volume, price)
                reason = R_BALANCE
                o.binding = -1
        if volume == 0:
            reason = R_PRESET_TOO_SMALL if reason == R_OK else (
                R_LIMIT_EXHAUSTED if reason == R_LIMIT else R_BALANCE_EXHAUSTED)
        o.reason = reason
        o.volume = volume
        o.amount = amount
        o.price = price
        o.list_price = lp

    # -- single calls --

    cdef tuple _positions(self, req):
        """Check a FuelRequest as authz.fuel._resolve does; its card, station, product positions."""
        if not isinstance(req, FuelRequest):
            raise RequestError(f"expected a FuelRequest, got {type(req).__name__}")
        m = self.model
        if type(req.card_no) is not str:
            raise RequestError(f"card_no must be text, got {type(req.card_no).__name__}")
        if type(req.station_id) is not int:
            raise RequestError(f"station_id must be a whole number, got {req.station_id!r}")
        if type(req.product) is not str:
            raise RequestError(f"product must be a product code, got {req.product!r}")
        c = m.card_index.get(req.card_no)
        if c is None:
            raise RequestError(f"unknown card {mask_card_no(req.card_no)}")
        s = m.station_index.get(req.station_id)
        if s is None:
            raise RequestError(f"unknown station {req.station_id!r}")
        p = m.product_index.get(req.product)
        if p is None:
            raise RequestError(f"unknown product {req.product!r}")
        now = req.now_utc_s
        if type(now) is not int or not 0 <= now <= MAX_UTC:
            raise RequestError(f"time {now!r} is outside 1970..2200")
        pv, pa = req.preset_volume_ml, req.preset_amount_kop
        if pv is not None and pa is not None:
            raise RequestError("give a volume preset or an amount preset, not both")
        if pv is not None and (type(pv) is not int or not 1 <= pv <= MAX_VOLUME):
            raise RequestError(f"preset_volume_ml must be a whole number in 1..{MAX_VOLUME}, got {pv!r}")
        if pa is not None and (type(pa) is not int or not 1 <= pa <= MAX_AMOUNT):
            raise RequestError(f"preset_amount_kop must be a whole number in 1..{MAX_AMOUNT}, got {pa!r}")
        return c, s, p, now, pv or 0, pa or 0

    def authorize(self, req):
        """The largest volume and amount ``req`` may dispense, with the binding reason."""
        cdef FuelOut o
        c, s, p, now, pv, pa = self._positions(req)
        self._decide(c, s, p, now, pv, pa, &o)
        return _build(F_DECISION, (REASONS[o.reason], o.volume, o.amount, o.price,
                      o.list_price, None if o.binding == -1 else o.binding))

    def complete(self, req, decision, delivered_volume_ml):
        """Charge a delivery under ``decision`` and apply it to balances and counters
        (authz.fuel.complete)."""
        cdef int32_t c, p, ct, k
        cdef int64_t today, start, amount, delivered
        c, _s, p, now, _pv, _pa = self._positions(req)
        if not decision.approved:
            raise RequestError(f"cannot complete a declined authorization (reason {decision.reason.name})")
        if type(delivered_volume_ml) is not int or not 0 <= delivered_volume_ml <= decision.volume_ml:
            raise RequestError(f"delivered volume {delivered_volume_ml!r} ml is outside "
                               f"0..{decision.volume_ml} ml authorized")
        delivered = delivered_volume_ml
        ct = self.cards[c].contract
        today = self.zones.local_day(self.cts[ct].tz, now)
        amount = amount_for_volume(delivered, decision.unit_price_kop_per_l)
        after = []
        for k in range(self.cards[c].limit_start, self.cards[c].limit_start + self.cards[c].limit_count):
            if self.lims[k].period == PERIOD_TXN or not self._covers(k, p):
                continue
            start = self._period_start(self.lims[k].period, today)
            if self.lims[k].pstart < start:
                self.lims[k].pstart = start
                self.lims[k].spent = 0
            self.lims[k].spent += delivered if self.lims[k].unit == UNIT_ML else amount
            after.append((self.lims[k].id, LimitCounter(self.lims[k].spent, self.lims[k].pstart)))
        self.cts[ct].balance -= amount
        return FuelCompletion(delivered, amount, tuple(after), self.cts[ct].balance,
                              decision.volume_ml - delivered, decision.amount_kop - amount)

    # -- batch --

    def authorize_batch(self, batch):
        """Decisions for every request of a FuelBatch, without the GIL and without a Python
        object per decision. Every request is checked first; a bad one is a RequestError
        naming its position, and nothing is decided."""
        cdef Py_ssize_t n = len(batch), i, bad = -1
        cdef const int32_t[::1] bc = batch.card, bs = batch.station, bp = batch.product
        cdef const int64_t[::1] bn = batch.now_utc_s, bv = batch.preset_volume_ml, ba = batch.preset_amount_kop
        out = FuelBatchResult(n)
        cdef int8_t[::1] r_reason = out.reason
        cdef int64_t[::1] r_vol = out.volume_ml, r_amt = out.amount_kop, r_price = out.unit_price_kop_per_l
        cdef int64_t[::1] r_bind = out.binding_limit_id
        cdef FuelOut o
        cdef CardRec* ahead
        if not (len(bs) == len(bp) == len(bn) == len(bv) == len(ba) == n):
            raise RequestError("batch arrays differ in length")
        with nogil:
            for i in range(n):
                if not (0 <= bc[i] < self.n_cards and 0 <= bs[i] < self.n_stations
                        and 0 <= bp[i] < self.n_products and 0 <= bn[i] <= MAX_UTC
                        and 0 <= bv[i] <= MAX_VOLUME and 0 <= ba[i] <= MAX_AMOUNT
                        and (bv[i] == 0 or ba[i] == 0)):
                    bad = i
                    break
            if bad < 0:
                for i in range(n):
                    # A decision waits on three dependent cache misses (card, then contract
                    # and limits); fetching them a few requests ahead overlaps the waits.
                    if i + 16 < n:
                        __builtin_prefetch(&self.cards[bc[i + 16]])
                    if i + 8 < n:
                        ahead = &self.cards[bc[i + 8]]
                        __builtin_prefetch(&self.cts[ahead.contract])
                        __builtin_prefetch(&self.lims[ahead.limit_start])
                    self._decide(bc[i], bs[i], bp[i], bn[i], bv[i], ba[i], &o)
                    r_reason[i] = o.reason
                    r_vol[i] = o.volume
                    r_amt[i] = o.amount
                    r_price[i] = o.price
                    r_bind[i] = o.binding
        if bad >= 0:
            raise RequestError(f"request {bad}: a position, time or preset is out of range "
                               f"(card {bc[bad]}, station {bs[bad]}, product {bp[bad]}, time {bn[bad]}, "
                               f"presets {bv[bad]} ml / {ba[bad]} kop)")
        return out

    def touch_batch(self, batch):
        """Read the same table memory a batch decision reads, and decide nothing: the
        machine's floor for ``authorize_batch`` (benchmarks.evaluator compares the two)."""
        cdef Py_ssize_t n = len(batch), i
        cdef const int32_t[::1] bc = batch.card, bs = batch.station, bp = batch.product
        cdef const int64_t[::1] bn = batch.now_utc_s
        cdef int64_t acc = 0
        cdef int32_t c, ct, k
        with nogil:
            for i in range(n):
                c = bc[i]
                ct = self.cards[c].contract
                acc += bn[i] + self.cards[c].stop + self.cards[c].status + self.cards[c].expires \
                    + self.cards[c].groups + self.cts[ct].tz + self.cts[ct].balance + self.cts[ct].credit \
                    + self.cts[ct].tariff + self.st_price[bs[i] * self.n_products + bp[i]] + self.prod_group[bp[i]]
                for k in range(self.cards[c].limit_start, self.cards[c].limit_start + self.cards[c].limit_count):
                    acc += self.lims[k].amount + self.lims[k].spent + self.lims[k].pstart + self.lims[k].unit
        return acc

    def balance_kop(self, contract_id):
        """The contract's balance now (after local completions)."""
        return self.cts[<Py_ssize_t>self.model.contract_index[contract_id]].balance

    def counter(self, card_no, limit_id):
        """The card limit's counter now, or None when it never counted anything."""
        cdef int32_t c = self.model.card_index[card_no], k
        for k in range(self.cards[c].limit_start, self.cards[c].limit_start + self.cards[c].limit_count):
            if self.lims[k].id == limit_id:
                if self.lims[k].pstart == -2**31:
                    return None
                return LimitCounter(self.lims[k].spent, self.lims[k].pstart)
        return None


# ---------------------------------------------------------------- club

cdef struct Totals:
    int64_t total
    int64_t accruing
    int64_t redeemable
    int64_t both


cdef struct QuoteOut:
    int8_t reason
    int64_t total
    int64_t spendable
    int64_t max_redeem
    int64_t accrual
    int64_t accrual_at_max
    int64_t balance


cdef inline int64_t accrual_points(Totals* t, int64_t points, int64_t rate) noexcept nogil:
    """authz.club.accrual_points."""
    cdef int64_t on_accruing = 0, num
    if points and t.redeemable:
        num = points * 100 * t.both
        on_accruing = num // t.redeemable + (1 if num % t.redeemable else 0)
    return (t.accruing - on_accruing) * rate // 1000000


cdef class NativeClubEvaluator:
    """Club decisions from the compiled tables of a ClubModel; accounts and their point lots
    (a pool of linked lists, oldest first) live in the tables."""

    cdef readonly object model
    cdef readonly str name
    cdef object _t
    cdef _Zones zones
    cdef int32_t tz, n_cards, n_cats, n_channels, n_methods
    cdef int64_t cap_bp, maturity_s, expiry_months
    cdef const int8_t[::1] cat_accrues, cat_redeemable
    cdef const int64_t[::1] rate, cap_balance, cap_turnover
    cdef const int32_t[::1] card_account
    cdef const int8_t[::1] card_status, acc_kind, acc_activated, acc_status
    cdef int64_t[::1] acc_balance, acc_turnover
    cdef int32_t[::1] acc_tmonth, acc_first_lot
    cdef int64_t[::1] lot_id, lot_points, lot_matures, lot_expires
    cdef int32_t[::1] lot_next
    cdef int32_t free_lot

    def __init__(self, model):
        t = ClubTables(model)
        r = model.rules
        self.model = model
        self.name = "native"
        self._t = t
        self.zones = _Zones(t.tz)
        self.tz = t.tz_index
        self.n_cards, self.n_cats = len(model.cards), len(r.categories)
        self.n_channels, self.n_methods = len(r.channels), len(r.payment_methods)
        self.cap_bp, self.maturity_s, self.expiry_months = r.redemption_cap_bp, r.maturity_s, r.expiry_months
        self.cat_accrues, self.cat_redeemable = t.cat_accrues, t.cat_redeemable
        self.rate, self.cap_balance, self.cap_turnover = t.rate, t.cap_balance, t.cap_turnover
        self.card_account, self.card_status = t.card_account, t.card_status
        self.acc_kind, self.acc_activated, self.acc_status = t.acc_kind, t.acc_activated, t.acc_status
        self.acc_balance, self.acc_turnover, self.acc_tmonth = t.acc_balance, t.acc_turnover, t.acc_tmonth
        self.acc_first_lot = t.acc_first_lot
        self._bind_lots()
        self.free_lot = t.free_lot

    def _bind_lots(self):
        t = self._t
        self.lot_id, self.lot_points, self.lot_matures = t.lot_id, t.lot_points, t.lot_matures
        self.lot_expires, self.lot_next = t.lot_expires, t.lot_next

    cdef void _reserve_lot(self) except *:
        """Make sure one free lot slot exists, doubling the pool when it is full."""
        if self.free_lot >= 0:
            return
        t = self._t
        n = len(t.lot_id)
        # release the views before the arrays grow (a buffer in use cannot be resized)
        self.lot_id = self.lot_points = self.lot_matures = self.lot_expires = None
        self.lot_next = None
        for name in ("lot_id", "lot_points", "lot_matures", "lot_expires"):
            getattr(t, name).extend([0] * n)
        t.lot_next.extend(range(n + 1, 2 * n + 1))
        t.lot_next[2 * n - 1] = -1
        self._bind_lots()
        self.free_lot = n

    # -- the rules (authz.club) --

    cdef inline bint _blocked(self, int32_t c) noexcept nogil:
        return self.card_status[c] == BLOCKED or self.acc_status[self.card_account[c]] == BLOCKED

    cdef inline int64_t _spendable(self, int32_t a, int64_t now) noexcept nogil:
        """authz.club.spendable_points."""
        cdef int64_t total = 0
        cdef int32_t k = self.acc_first_lot[a]
        while k >= 0:
            if self.lot_matures[k] <= now < self.lot_expires[k]:
                total += self.lot_points[k]
            k = self.lot_next[k]
        return total

    cdef inline int64_t _cap_points(self, Totals* t) noexcept nogil:
        """authz.club.redemption_cap_points."""
        return t.redeemable * self.cap_bp // 1000000

    cdef inline int64_t _turnover(self, int32_t a, int64_t month) noexcept nogil:
        return self.acc_turnover[a] if self.acc_tmonth[a] >= month else 0

    cdef void _quote(self, int32_t c, int64_t now, int64_t rate, Totals* t, QuoteOut* o) noexcept nogil:
        """authz.club.quote, on a checked request."""
        cdef int32_t a = self.card_account[c]
        cdef int64_t spendable, most
        o.total = t.total
        if self._blocked(c):
            o.reason = R_CARD_BLOCKED
            o.spendable = o.max_redeem = o.accrual = o.accrual_at_max = o.balance = 0
            return
        spendable = self._spendable(a, now)
        most = self._cap_points(t)
        if spendable < most:
            most = spendable
        o.reason = R_OK
        o.spendable = spendable
        o.max_redeem = most
        o.accrual = accrual_points(t, 0, rate)
        o.accrual_at_max = accrual_points(t, most, rate)
        o.balance = self.acc_balance[a]

    cdef void _unlink_empty(self, int32_t a):
        """Drop the account's lots that have no points left (authz.club._take_points)."""
        cdef int32_t k = self.acc_first_lot[a], prev = -1, nxt
        while k >= 0:
            nxt = self.lot_next[k]
            if self.lot_points[k] == 0:
                if prev < 0:
                    self.acc_first_lot[a] = nxt
                else:
                    self.lot_next[prev] = nxt
                self.lot_next[k] = self.free_lot
                self.free_lot = k
            else:
                prev = k
            k = nxt

    cdef int64_t _take(self, int32_t a, int64_t points, int64_t now, bint spendable_only,
                       bint has_first, int64_t first_lot, list used):
        """authz.club._take_points: take up to ``points`` oldest first (lots named
        ``first_lot`` before all others); returns what was taken."""
        cdef int64_t taken = 0, n
        cdef int32_t k
        cdef int pass_
        for pass_ in range(2 if has_first else 1):
            k = self.acc_first_lot[a]
            while k >= 0 and points > 0:
                if has_first and ((self.lot_id[k] == first_lot) != (pass_ == 0)):
                    k = self.lot_next[k]
                    continue
                if now < self.lot_expires[k] and not (spendable_only and now < self.lot_matures[k]):
                    n = points if points < self.lot_points[k] else self.lot_points[k]
                    if n:
                        self.lot_points[k] -= n
                        used.append((self.lot_id[k], n))
                        points -= n
                        taken += n
                k = self.lot_next[k]
        self._unlink_empty(a)
        return taken

    cdef void _add_lot(self, int32_t a, int64_t lot_id, int64_t points, int64_t matures, int64_t expires) except *:
        """authz.club._add_lot: insert keeping (expiry, id) order; after the last equal key."""
        self._reserve_lot()
        cdef int32_t k = self.free_lot, cur = self.acc_first_lot[a], prev = -1
        self.free_lot = self.lot_next[k]
        self.lot_id[k], self.lot_points[k], self.lot_matures[k], self.lot_expires[k] = lot_id, points, matures, expires
        while cur >= 0 and (self.lot_expires[cur] < expires or
                            (self.lot_expires[cur] == expires and self.lot_id[cur] <= lot_id)):
            prev = cur
            cur = self.lot_next[cur]
        self.lot_next[k] = cur
        if prev < 0:
            self.acc_first_lot[a] = k
        else:
            self.lot_next[prev] = k

    # -- checks of single requests (authz.club) --

    cdef int32_t _card(self, card_no) except -1:
        i = self.model.card_index.get(card_no) if isinstance(card_no, str) else None
        if i is None:
            raise RequestError(f"unknown club card {mask_card_no(card_no)}")
        return i

    cdef int64_t _int(self, str name, value, int64_t low, int64_t high) except? -1:
        if type(value) is not int or not low <= value <= high:
            raise RequestError(f"{name} must be a whole number in {low}..{high}, got {value!r}")
        return value

    cdef void _totals(self, sale, Totals* t) except *:
        cdef int64_t amt
        cdef Py_ssize_t ci
        lines = sale.lines
        if type(lines) is not tuple or not lines:
            raise RequestError("a sale needs at least one line")
        cats = self.model.category_index
        t.total = t.accruing = t.redeemable = t.both = 0
        n = 0
        for line in lines:
            n += 1
            if not isinstance(line, SaleLine):
                raise RequestError(f"line {n} is not a sale line: {type(line).__name__}")
            cat = line.category
            if type(cat) is not str:
                raise RequestError(f"line {n} category must be text, got {type(cat).__name__}")
            if not cat:
                raise RequestError(f"line {n} has no category")
            found = cats.get(cat)
            if found is None:
                raise RequestError(f"line {n} has unknown category {cat!r}")
            ci = found
            value = line.amount_kop
            if type(value) is not int or not 0 <= value <= MAX_SALE:
                self._int(f"line {n} amount_kop", value, 0, MAX_SALE)  # raises with the message
            amt = value
            t.total += amt
            if self.cat_accrues[ci]:
                t.accruing += amt
            if self.cat_redeemable[ci]:
                t.redeemable += amt
                if self.cat_accrues[ci]:
                    t.both += amt
        if t.total > MAX_SALE:
            raise RequestError(f"sale total {t.total} kop is over {MAX_SALE}")

    cdef int64_t _rate(self, channel, method) except -1:
        ch = self.model.channel_index.get(channel) if type(channel) is str else None
        if ch is None:
            raise RequestError(f"unknown channel {channel!r}")
        me = self.model.method_index.get(method) if type(method) is str else None
        if me is None:
            raise RequestError(f"unknown payment method {method!r}")
        return self.rate[<Py_ssize_t>ch * self.n_methods + <Py_ssize_t>me]

    cdef int64_t _month(self, int64_t now) noexcept nogil:
        return month_index(self.zones.local_day(self.tz, now))

    # -- single calls --

    def quote(self, sale):
        """What ``sale`` would give (changes nothing)."""
        cdef Totals t
        cdef QuoteOut o
        _check_type(sale, ClubSale)
        cdef int32_t c = self._card(sale.card_no)
        cdef int64_t now = self._int("now_utc_s", sale.now_utc_s, 0, MAX_UTC)
        self._totals(sale, &t)
        cdef int64_t rate = self._rate(sale.channel, sale.payment_method)
        self._quote(c, now, rate, &t, &o)
        return _build(F_QUOTE, (REASONS[o.reason], o.total, o.spendable, o.max_redeem,
                      o.accrual, o.accrual_at_max, o.balance,
                      o.reason == R_OK and self.acc_activated[self.card_account[c]] != 0))

    def commit(self, sale, payment, txn_id):
        """Commit ``sale`` with ``payment`` (authz.club.commit)."""
        cdef Totals t
        cdef int32_t a
        _check_type(sale, ClubSale)
        _check_type(payment, ClubPayment)
        cdef int32_t c = self._card(sale.card_no)
        cdef int64_t now = self._int("now_utc_s", sale.now_utc_s, 0, MAX_UTC)
        self._totals(sale, &t)
        cdef int64_t rate = self._rate(sale.channel, sale.payment_method)
        cdef int64_t tid = self._int("txn_id", txn_id, 0, MAX_ID)
        cdef int64_t points = self._int("points", payment.points, 0, MAX_SALE // 100)
        cdef int64_t from_card = self._int("card_balance_kop", payment.card_balance_kop, 0, MAX_SALE)
        cdef int64_t money = self._int("money_kop", payment.money_kop, 0, MAX_SALE)
        if points * 100 + from_card + money != t.total:
            raise RequestError(f"payments add up to {points * 100 + from_card + money} kop, "
                               f"the sale is {t.total} kop")
        a = self.card_account[c]
        cdef int64_t month = self._month(now)
        cdef int64_t turnover = self._turnover(a, month)
        cdef int reason = R_OK
        if self._blocked(c):
            reason = R_CARD_BLOCKED
        elif points > self._cap_points(&t):
            reason = R_REDEMPTION_CAP
        elif points > self._spendable(a, now):
            reason = R_INSUFFICIENT_POINTS
        elif from_card > 0:
            if not self.acc_activated[a]:
                reason = R_CARD_NOT_ACTIVATED
            elif from_card > self.acc_balance[a]:
                reason = R_INSUFFICIENT_FUNDS
            elif turnover + from_card > self.cap_turnover[self.acc_kind[a]]:
                reason = R_TURNOVER_CAP
        if reason != R_OK:
            return ClubCommit(REASONS[reason], 0, 0, (), None, self.acc_balance[a], turnover)
        used = []
        self._take(a, points, now, True, False, 0, used)
        cdef int64_t accrued = accrual_points(&t, points, rate)
        new_lot = None
        if accrued:
            new_lot = PointLot(tid, accrued, now + self.maturity_s, add_months_utc(now, self.expiry_months))
            self._add_lot(a, tid, accrued, new_lot.matures_at_s, new_lot.expires_at_s)
        self.acc_balance[a] -= from_card
        if month > self.acc_tmonth[a]:
            self.acc_tmonth[a] = month
        self.acc_turnover[a] = turnover + from_card
        return ClubCommit(REASONS[R_OK], accrued, points, tuple(used), new_lot, self.acc_balance[a],
                          self.acc_turnover[a])

    def return_sale(self, ret):
        """Return part or all of an earlier sale (authz.club.return_sale)."""
        _check_type(ret, ClubReturn)
        cdef int32_t c = self._card(ret.card_no)
        cdef int32_t a = self.card_account[c]
        cdef int64_t now = self._int("now_utc_s", ret.now_utc_s, 0, MAX_UTC)
        cdef int64_t rid = self._int("return_id", ret.return_id, 0, MAX_ID)
        cdef int64_t sid = self._int("sale_id", ret.sale_id, 0, MAX_ID)
        cdef int64_t whole = self._int("sale_total_kop", ret.sale_total_kop, 1, MAX_SALE)
        cdef int64_t share = self._int("returned_kop", ret.returned_kop, 1, whole)
        cdef int64_t accrued = self._int("sale_accrued_points", ret.sale_accrued_points, 0, whole)
        cdef int64_t redeemed = self._int("sale_redeemed_points", ret.sale_redeemed_points, 0, whole // 100)
        cdef int64_t card_part = self._int("sale_card_balance_kop", ret.sale_card_balance_kop, 0,
                                           whole - redeemed * 100)
        if self._blocked(c):
            return ClubReturnResult(REASONS[R_CARD_BLOCKED], 0, 0, 0, 0, 0, 0, self.acc_balance[a])
        cdef int64_t take = accrued * share // whole
        cdef int64_t give = redeemed * share // whole
        cdef int64_t refund_card = card_part * share // whole
        cdef int64_t refund_money = share - give * 100 - refund_card
        cdef int64_t taken = self._take(a, take, now, False, True, sid, [])
        cdef int64_t short = take - taken
        cdef int64_t charged = (refund_money + refund_card) // 100
        if short < charged:
            charged = short
        cdef int64_t from_money = charged * 100 if charged * 100 < refund_money else refund_money
        refund_money -= from_money
        refund_card -= charged * 100 - from_money
        cdef int64_t room = self.cap_balance[self.acc_kind[a]] - self.acc_balance[a]
        if room < 0:
            room = 0
        if refund_card > room:
            refund_money += refund_card - room
            refund_card = room
        if give:
            self._add_lot(a, rid, give, now, add_months_utc(now, self.expiry_months))
        self.acc_balance[a] += refund_card
        return ClubReturnResult(REASONS[R_OK], taken, charged, short - charged, give, refund_card,
                                refund_money, self.acc_balance[a])

    def top_up(self, req):
        """Put cash on a card within its caps (authz.club.top_up)."""
        _check_type(req, ClubTopUp)
        cdef int32_t c = self._card(req.card_no)
        cdef int32_t a = self.card_account[c]
        cdef int64_t now = self._int("now_utc_s", req.now_utc_s, 0, MAX_UTC)
        cdef int64_t amount = self._int("amount_kop", req.amount_kop, 1, MAX_SALE)
        cdef int64_t month = self._month(now)
        cdef int64_t turnover = self._turnover(a, month)
        cdef int reason = R_OK
        if self._blocked(c):
            reason = R_CARD_BLOCKED
        elif not self.acc_activated[a]:
            reason = R_CARD_NOT_ACTIVATED
        elif self.acc_balance[a] + amount > self.cap_balance[self.acc_kind[a]]:
            reason = R_BALANCE_CAP
        elif turnover + amount > self.cap_turnover[self.acc_kind[a]]:
            reason = R_TURNOVER_CAP
        if reason != R_OK:
            return ClubTopUpResult(REASONS[reason], self.acc_balance[a], turnover)
        self.acc_balance[a] += amount
        if month > self.acc_tmonth[a]:
            self.acc_tmonth[a] = month
        self.acc_turnover[a] = turnover + amount
        return ClubTopUpResult(REASONS[R_OK], self.acc_balance[a], self.acc_turnover[a])

    # -- batch --

    def quote_batch(self, batch):
        """Quotes for every sale of a ClubQuoteBatch, without the GIL and without a Python
        object per quote. Every sale is checked first; a bad one is a RequestError naming
        its position, and nothing is quoted."""
        cdef Py_ssize_t n = len(batch), i, k, bad = -1, n_lines
        cdef const int32_t[::1] bc = batch.card, bch = batch.channel, bme = batch.method
        cdef const int32_t[::1] bst = batch.line_start, bcnt = batch.line_count, lcat = batch.line_category
        cdef const int64_t[::1] bn = batch.now_utc_s, lamt = batch.line_amount_kop
        out = ClubQuoteBatchResult(n)
        cdef int8_t[::1] r_reason = out.reason
        cdef int64_t[::1] r_total = out.total_kop, r_spend = out.points_spendable
        cdef int64_t[::1] r_max = out.max_redeem_points, r_acc = out.accrual_points
        cdef int64_t[::1] r_accmax = out.accrual_points_at_max_redeem, r_bal = out.balance_kop
        cdef Totals t
        cdef QuoteOut o
        cdef int32_t cat
        if not (len(bch) == len(bme) == len(bst) == len(bcnt) == len(bn) == n) or len(lamt) != len(lcat):
            raise RequestError("batch arrays differ in length")
        n_lines = len(lcat)
        with nogil:
            for i in range(n):
                if not (0 <= bc[i] < self.n_cards and 0 <= bch[i] < self.n_channels
                        and 0 <= bme[i] < self.n_methods and 0 <= bn[i] <= MAX_UTC
                        and bcnt[i] > 0 and bst[i] >= 0 and bst[i] + bcnt[i] <= n_lines):
                    bad = i
                    break
                t.total = 0
                for k in range(bst[i], bst[i] + bcnt[i]):
                    if not (0 <= lcat[k] < self.n_cats and 0 <= lamt[k] <= MAX_SALE):
                        bad = i
                        break
                    t.total += lamt[k]
                if bad >= 0 or t.total > MAX_SALE:
                    bad = i
                    break
            if bad < 0:
                for i in range(n):
                    t.total = t.accruing = t.redeemable = t.both = 0
                    for k in range(bst[i], bst[i] + bcnt[i]):
                        cat = lcat[k]
                        t.total += lamt[k]
                        if self.cat_accrues[cat]:
                            t.accruing += lamt[k]
                        if self.cat_redeemable[cat]:
                            t.redeemable += lamt[k]
                            if self.cat_accrues[cat]:
                                t.both += lamt[k]
                    self._quote(bc[i], bn[i], self.rate[bch[i] * self.n_methods + bme[i]], &t, &o)
                    r_reason[i] = o.reason
                    r_total[i] = o.total
                    r_spend[i] = o.spendable
                    r_max[i] = o.max_redeem
                    r_acc[i] = o.accrual
                    r_accmax[i] = o.accrual_at_max
                    r_bal[i] = o.balance
        if bad >= 0:
            raise RequestError(f"sale {bad}: a position, time, line slice or amount is out of range")
        return out

    def account(self, account_id):
        """A copy of the account's state now (authz.club_model.AccountState)."""
        cdef int32_t a = self.model.account_index[account_id]
        cdef int32_t k = self.acc_first_lot[a]
        lots = []
        while k >= 0:
            lots.append(PointLot(self.lot_id[k], self.lot_points[k], self.lot_matures[k], self.lot_expires[k]))
            k = self.lot_next[k]
        return AccountState(self.acc_balance[a], self.acc_tmonth[a], self.acc_turnover[a], lots)
