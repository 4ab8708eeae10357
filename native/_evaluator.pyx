# cython: language_level=3
"""The native (Cython) evaluator: the rules of authz.fuel and authz.club on flat tables.

Same inputs, same outputs as the reference evaluator (authz.reference); the small tables
come from native.tables, the large ones are packed from columns (native.compact). The batch calls release the GIL and make no Python object per
decision. Reading order: helpers on integers (calendar, money), then the fuel evaluator,
then the club evaluator. Each rule cites the reference function it mirrors.
"""

from cpython cimport array as carray
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport PyObject, Py_INCREF
from cpython.object cimport Py_SIZE
from cpython.unicode cimport PyUnicode_1BYTE_KIND, PyUnicode_DATA, PyUnicode_GET_LENGTH, PyUnicode_KIND
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport qsort

from array import array as _pyarray
from datetime import date as _date

from authz.batch import ClubQuoteBatchResult, FuelBatchResult
from authz.club_model import (KOP_PER_POINT, MAX_SALE_KOP, AccountState, ClubAccount, ClubCard,
                              ClubCardKind, ClubCommit, ClubModel, ClubPayment, ClubQuote, ClubReturn,
                              ClubReturnResult, ClubSale, ClubState, ClubStatus, ClubTopUp, ClubTopUpResult,
                              PointLot, SaleLine)
from authz.errors import ModelError, RequestError
from authz.fuel import check_request, station_product_positions
from authz.fuel_model import (CardKind, CardStatus, Contract, FuelCard, FuelCompletion, FuelDecision,
                              FuelModel, FuelRequest, FuelState, Limit, LimitCounter, LimitUnit, OnBreach,
                              Period, ProductGroup, RuleException, Scope, StationScope, Tariff, TimeWindow,
                              check_card_rules, mask_card_no)
from authz.localtime import MAX_UTC_S as _MAX_UTC_S
from authz.money import MAX_AMOUNT_KOP as _MAX_AMOUNT_KOP, MAX_VOLUME_ML as _MAX_VOLUME_ML
from authz.reasons import Reason
from authz.localtime import zone
from authz.update import (ClubUpdate, FuelUpdate, check_club_update, check_fuel_update, merged_discounts, merged_products,
                          merged_stations)

from .compact import ClubColumns, CompactClubModel, CompactFuelModel, FuelColumns, _put_controls, card_no_of
from .tables import NO_PERIOD as _NO_PERIOD
from .tables import ClubTables, FuelTables, TzTables


cdef void* _grown(void* p, Py_ssize_t n, size_t item, str what) except NULL:
    """``p`` reallocated to ``n`` items of ``item`` bytes; ``MemoryError(what)`` (and ``p``
    untouched) when there is no memory. The one growth step of the fuel and club tables."""
    cdef void* q = PyMem_Realloc(p, n * item)
    if q == NULL:
        raise MemoryError(what)
    return q


cdef int64_t MAX_VOLUME = _MAX_VOLUME_ML
cdef int64_t MAX_AMOUNT = _MAX_AMOUNT_KOP
cdef int64_t MAX_SALE = MAX_SALE_KOP
cdef int64_t MAX_UTC = _MAX_UTC_S
cdef int64_t MAX_ID = 2**63 - 1

# templates for new arrays (cpython.array.clone)
cdef carray.array _Q = _pyarray("q")
cdef carray.array _I = _pyarray("i")
cdef carray.array _H = _pyarray("H")
cdef carray.array _B = _pyarray("b")
cdef carray.array _UB = _pyarray("B")

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
DEF R_STATION_NOT_ALLOWED = 17
DEF R_OUTSIDE_TIME_WINDOW = 18

DEF UNIT_ML = 1
DEF UNIT_PURCHASES = 2
DEF PERIOD_TXN = 0
DEF PERIOD_DAY = 1
DEF PERIOD_WEEK = 2
DEF PERIOD_MONTH = 3
DEF PERIOD_LIFETIME = 4
DEF PERIOD_QUARTER = 5
DEF PERIOD_YEAR = 6
DEF N_PERIODS = 7
DEF N_UNITS = 3
DEF ALERT = 1
DEF STATION_HOME = 1
DEF STATION_LISTED = 2
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
cdef object EXC_PRODUCT = RuleException(Reason.PRODUCT_NOT_ALLOWED)
cdef object EXC_STATION = RuleException(Reason.STATION_NOT_ALLOWED)
cdef object EXC_WINDOW = RuleException(Reason.OUTSIDE_TIME_WINDOW)
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


cdef inline int64_t quarter_start(int64_t day) noexcept nogil:
    """authz.localtime.quarter_start on day numbers."""
    cdef int64_t y, m, d
    civil_from_days(day, &y, &m, &d)
    return days_from_civil(y, (m - 1) // 3 * 3 + 1, 1)


cdef inline int64_t year_start(int64_t day) noexcept nogil:
    """authz.localtime.year_start on day numbers."""
    cdef int64_t y, m, d
    civil_from_days(day, &y, &m, &d)
    return days_from_civil(y, 1, 1)


cdef inline int64_t period_start(int8_t period, int64_t today) noexcept nogil:
    """authz.fuel.period_start: the local day the period containing ``today`` began."""
    if period == PERIOD_DAY:
        return today
    if period == PERIOD_WEEK:
        return week_start(today)
    if period == PERIOD_MONTH:
        return month_start(today)
    if period == PERIOD_QUARTER:
        return quarter_start(today)
    if period == PERIOD_YEAR:
        return year_start(today)
    return 0


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
        return floordiv(self.local_second(z, t), 86400)

    cdef inline int64_t local_second(self, int32_t z, int64_t t) noexcept nogil:
        """Seconds since 1970-01-01 00:00 local time at UTC second t in zone z."""
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
        return t + self.offset[k]


# ---------------------------------------------------------------- card-number keys, key index

cdef int64_t POW10[19]
cdef int _p
POW10[0] = 1
for _p in range(1, 19):
    POW10[_p] = POW10[_p - 1] * 10


cdef inline int64_t key_of(object s) noexcept:
    """native.compact.card_key in C: the int64 key of a card number ("1" and its digits, so
    leading zeros count), or 0 when it has none (not a str of 0..18 ASCII digits)."""
    if type(s) is not str:
        return 0
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(s), i
    if n > 18 or PyUnicode_KIND(s) != PyUnicode_1BYTE_KIND:
        return 0
    cdef const uint8_t* d = <const uint8_t*>PyUnicode_DATA(s)
    cdef int64_t v = 0
    for i in range(n):
        if d[i] < 48 or d[i] > 57:
            return 0
        v = v * 10 + (d[i] - 48)
    return POW10[n] + v


def _card_key(s):
    """key_of, for the tests (it must equal native.compact.card_key)."""
    return key_of(s)


cdef struct KeyPos:
    int64_t key
    int32_t pos


cdef int _cmp_keypos(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const KeyPos*>a).key, y = (<const KeyPos*>b).key
    return -1 if x < y else (1 if x > y else 0)


cdef int _cmp_i64(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const int64_t*>a)[0], y = (<const int64_t*>b)[0]
    return -1 if x < y else (1 if x > y else 0)


cdef class _KeyIndex:
    """Positions by int64 key. ``keys`` is in position order (with ``skip_zero``, 0 means "no
    key" and is not indexed). When the keys rise with the position (the usual replica: cards
    sorted by number) the index is the keys themselves; otherwise ``order`` lists the
    positions by key. A radix directory over the key range starts each binary search on a
    few keys, so a lookup reads about two cache lines. A repeated key is reported in
    ``duplicate`` (the owner raises).

    Memory (docs/sync.md, "Fourth pass"): rising keys whose directory buckets are at most
    2**32 keys wide are kept as 32-bit offsets within their bucket (``low``), half the int64
    array, which is then not referenced: a key is its bucket's base plus its offset (the
    bucket of a position is found in the directory). Other keys keep the int64 array."""

    cdef object _keys
    cdef const int64_t[::1] keys
    cdef int32_t* order
    cdef int32_t* dir
    cdef uint32_t* low
    cdef readonly Py_ssize_t n
    cdef int64_t kmin, kmax
    cdef int shift
    cdef uint64_t nb
    cdef readonly object duplicate

    def __cinit__(self):
        self.order = NULL
        self.dir = NULL
        self.low = NULL

    def __dealloc__(self):
        PyMem_Free(self.order)
        PyMem_Free(self.dir)
        PyMem_Free(self.low)

    def __init__(self, keys, bint skip_zero):
        cdef Py_ssize_t n_all = len(keys), i, m = 0, r
        cdef KeyPos* pairs = NULL
        cdef bint rising = True
        if n_all >= 2**31 - 1:
            raise ModelError(f"{n_all} rows are too many for one table")
        self._keys = keys
        self.keys = keys
        self.duplicate = None
        for i in range(n_all):
            if (skip_zero and self.keys[i] == 0) or (i > 0 and self.keys[i] <= self.keys[i - 1]):
                rising = False
                break
        if rising:
            self.n = n_all
        else:
            pairs = <KeyPos*>PyMem_Malloc(max(n_all, 1) * sizeof(KeyPos))
            if pairs == NULL:
                raise MemoryError("no memory for a key index")
            try:
                for i in range(n_all):
                    if not (skip_zero and self.keys[i] == 0):
                        pairs[m].key = self.keys[i]
                        pairs[m].pos = <int32_t>i
                        m += 1
                qsort(pairs, m, sizeof(KeyPos), _cmp_keypos)
                for i in range(1, m):
                    if pairs[i].key == pairs[i - 1].key:
                        self.duplicate = pairs[i].key
                        break
                self.order = <int32_t*>PyMem_Malloc(max(m, 1) * sizeof(int32_t))
                if self.order == NULL:
                    raise MemoryError("no memory for a key index")
                for i in range(m):
                    self.order[i] = pairs[i].pos
                self.n = m
            finally:
                PyMem_Free(pairs)
        # the directory: 2**lg buckets (about one per four keys) over [kmin, kmax]
        cdef int lg = 1, bits = 0
        while (<Py_ssize_t>1 << (lg + 1)) <= self.n // 4:
            lg += 1
        cdef uint64_t nb = (<uint64_t>1) << lg, b, span
        self.nb = nb
        self.dir = <int32_t*>PyMem_Malloc((nb + 1) * sizeof(int32_t))
        if self.dir == NULL:
            raise MemoryError("no memory for a key index")
        if self.n == 0:
            self.kmin, self.kmax, self.shift = 1, 0, 0
            for b in range(nb + 1):
                self.dir[b] = 0
            return
        self.kmin, self.kmax = self.at(0), self.at(self.n - 1)
        span = <uint64_t>self.kmax - <uint64_t>self.kmin
        while bits < 64 and (span >> bits) != 0:
            bits += 1
        self.shift = bits - lg if bits > lg else 0
        r = 0
        for b in range(nb + 1):
            while r < self.n and ((<uint64_t>self.at(r) - <uint64_t>self.kmin) >> self.shift) < b:
                r += 1
            self.dir[b] = <int32_t>r
        if rising and self.shift <= 32 and n_all == self.n:
            self._compact()

    cdef void _compact(self) except *:
        """Keep the (rising) keys as 32-bit offsets within their bucket and drop the array."""
        cdef Py_ssize_t r
        cdef uint64_t mask = ((<uint64_t>1) << self.shift) - 1
        self.low = <uint32_t*>PyMem_Malloc(max(self.n, 1) * sizeof(uint32_t))
        if self.low == NULL:
            raise MemoryError("no memory for a key index")
        for r in range(self.n):
            self.low[r] = <uint32_t>((<uint64_t>self.keys[r] - <uint64_t>self.kmin) & mask)
        self.keys = None
        self._keys = None

    cdef inline int64_t _low_key(self, Py_ssize_t r) noexcept nogil:
        """The key at rank ``r`` of a compact index (its bucket found in the directory)."""
        cdef Py_ssize_t lo = 0, hi = <Py_ssize_t>self.nb, mid  # the last bucket b with dir[b] <= r
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            if self.dir[mid] <= r:
                lo = mid
            else:
                hi = mid - 1
        return <int64_t>(<uint64_t>self.kmin + ((<uint64_t>lo) << self.shift) + self.low[r])

    cdef inline int64_t at(self, Py_ssize_t r) noexcept nogil:
        """The r-th smallest key."""
        if self.low != NULL:
            return self._low_key(r)
        return self.keys[r] if self.order == NULL else self.keys[self.order[r]]

    cdef inline int64_t key_at(self, Py_ssize_t i) noexcept nogil:
        """The key at position ``i`` (every position keyed: ``skip_zero`` found no 0)."""
        if self.low != NULL:
            return self._low_key(i)
        return self.keys[i]

    cdef Py_ssize_t find(self, int64_t k) noexcept nogil:
        """The position of key ``k``, or -1."""
        if k < self.kmin or k > self.kmax:
            return -1
        cdef uint64_t off = <uint64_t>k - <uint64_t>self.kmin
        cdef uint64_t b = off >> self.shift
        cdef Py_ssize_t lo = self.dir[b], hi = self.dir[b + 1], mid
        cdef int64_t v
        cdef uint32_t t, u
        if self.low != NULL:
            t = <uint32_t>(off - (b << self.shift))
            while lo < hi:
                mid = (lo + hi) >> 1
                u = self.low[mid]
                if u < t:
                    lo = mid + 1
                elif u > t:
                    hi = mid
                else:
                    return mid
            return -1
        while lo < hi:
            mid = (lo + hi) >> 1
            v = self.at(mid)
            if v < k:
                lo = mid + 1
            elif v > k:
                hi = mid
            else:
                return mid if self.order == NULL else self.order[mid]
        return -1

    def key_array(self):
        """The keys in position order as an int64 array: the one given (shared) or, for a
        compact index, a new one."""
        if self.low == NULL:
            return self._keys
        cdef carray.array out = carray.clone(_Q, self.n, False)
        cdef Py_ssize_t r = 0
        cdef uint64_t b
        for b in range(self.nb):
            while r < self.dir[b + 1]:
                out.data.as_longlongs[r] = <int64_t>(<uint64_t>self.kmin + (b << self.shift) + self.low[r])
                r += 1
        return out

    cdef size_t nbytes(self) noexcept:
        """Bytes of the index, its keys included."""
        return ((self.nb + 1) * sizeof(int32_t) + (self.n * sizeof(int32_t) if self.order != NULL else 0)
                + (self.n * sizeof(uint32_t) if self.low != NULL else self.keys.shape[0] * sizeof(int64_t)))


cdef class _CardNumbers:
    """Card number -> position for one table of cards, the one index of the fuel and the club
    evaluators: the packed key index of the numbers that have an int64 key (key_of), a dict
    of the others (``other_by_no`` / ``other_by_pos``), and the cards appended at run time
    (positions from ``base`` on: ``extra`` by key, ``keys_extra`` in position order). A
    ``str`` subclass is looked up by its text, as a dict of str would find it."""

    cdef readonly _KeyIndex packed
    cdef readonly dict other_by_no, other_by_pos
    cdef dict extra
    cdef object keys_extra
    cdef readonly Py_ssize_t base

    def __init__(self, cols, str what):
        """The index of ``cols.card_key`` and ``cols.card_other`` (fuel or club columns);
        ``what`` names the cards in errors ("card", "club card")."""
        cdef Py_ssize_t n = len(cols.card_key)
        self.packed = _KeyIndex(cols.card_key, True)
        if self.packed.duplicate is not None:
            raise ModelError(f"duplicate {what} {mask_card_no(card_no_of(self.packed.duplicate))}")
        self.other_by_pos = dict(cols.card_other)
        self.other_by_no = {no: i for i, no in self.other_by_pos.items()}
        if len(self.other_by_no) != len(self.other_by_pos):
            raise ModelError(f"duplicate {what} among the numbers without a key")
        if self.packed.n + len(self.other_by_pos) != n:
            raise ModelError(f"every {what} needs a key or a number in card_other, not both")
        for i, no in self.other_by_pos.items():
            if not 0 <= i < n or cols.card_key[i] != 0 or key_of(no):
                raise ModelError(f"card_other[{i}]: not a {what} without a key")
        self.base = n
        self.extra = {}
        self.keys_extra = _pyarray("q")

    cdef Py_ssize_t pos(self, card_no) except? -2:
        """The position of card ``card_no``, or -1 (anything but text is no card's number)."""
        if type(card_no) is not str:
            if not isinstance(card_no, str):
                return -1
            card_no = str.__str__(card_no)  # a str subclass: its text
        cdef int64_t k = key_of(card_no)
        if k:
            return self.pos_of_key(k)
        if self.other_by_no:
            return self.other_by_no.get(card_no, -1)
        return -1

    cdef Py_ssize_t pos_of_key(self, int64_t k):
        """The position of the card whose number has key ``k``, or -1."""
        cdef Py_ssize_t c = self.packed.find(k)
        if c < 0 and self.extra:
            return self.extra.get(k, -1)
        return c

    cdef inline int64_t key_at(self, Py_ssize_t i):
        """The key of the card at position ``i`` (0: its number is in ``other_by_pos``)."""
        if i < self.base:
            return self.packed.key_at(i)
        return self.keys_extra[i - self.base]

    cdef str number(self, Py_ssize_t i):
        """The number of the card at position ``i``."""
        cdef int64_t k = self.key_at(i)
        return card_no_of(k) if k else self.other_by_pos[i]

    cdef void append(self, str no, Py_ssize_t pos) except *:
        """Index card ``no`` at ``pos``, the next position after the last card."""
        k = key_of(no)
        self.keys_extra.append(k)
        if k:
            self.extra[k] = pos
        else:
            self.other_by_no[no] = pos
            self.other_by_pos[pos] = no

    cdef size_t nbytes(self) noexcept:
        """Bytes of the packed index, its keys included."""
        return self.packed.nbytes()


def _merge_keys(a, b):
    """The keys of ``a`` and ``b`` (arrays of int64, any order) sorted, each once."""
    cdef Py_ssize_t na = len(a), nb = len(b), i, m = 0
    cdef carray.array out = carray.clone(_Q, na + nb, False)
    cdef const int64_t[::1] va = a, vb = b
    cdef int64_t* o = <int64_t*>out.data.as_longlongs
    cdef bint rising = True
    for i in range(na):
        o[i] = va[i]
    for i in range(nb):
        o[na + i] = vb[i]
    with nogil:
        for i in range(1, na + nb):
            if o[i] <= o[i - 1]:
                rising = False
                break
        if not rising:
            qsort(o, na + nb, sizeof(int64_t), _cmp_i64)
        for i in range(na + nb):
            if m == 0 or o[i] != o[m - 1]:
                o[m] = o[i]
                m += 1
    carray.resize(out, m)
    return out


def _key_run(int64_t first, Py_ssize_t n):
    """The int64 array first, first + 1, ..., first + n - 1."""
    cdef carray.array out = carray.clone(_Q, max(n, 0), False)
    cdef int64_t* o = <int64_t*>out.data.as_voidptr
    cdef Py_ssize_t i
    for i in range(n):
        o[i] = first + i
    return out


# ---------------------------------------------------------------- fuel

cdef struct CardRec:
    int32_t contract
    int32_t expires
    int32_t limit_start
    uint16_t limit_count
    uint8_t groups
    uint8_t flags        # F_BLOCKED | F_STOP | F_VIRTUAL | F_ALERTS | F_CONTROLS


DEF F_BLOCKED = 1
DEF F_STOP = 2
DEF F_VIRTUAL = 4
DEF F_ALERTS = 8     # the card has a limit that alerts instead of declining
DEF F_CONTROLS = 16  # the card has controls: ``ctl[card]`` is their RuleRec (16-byte cards:
                     # a card record never straddles two cache lines; only these read ``ctl``)


cdef struct RuleRec:
    # A card's controls (authz.fuel.broken_controls), shared by the cards that have the same
    # ones: rows of the rule tables (product positions, windows, station positions).
    int32_t prod_start
    int32_t prod_count   # 0: every product of the card's groups
    int32_t win_start
    int32_t win_count    # 0: any time
    int32_t st_start
    int32_t st_count
    int8_t scope         # StationScope
    int8_t on_breach     # OnBreach


cdef struct WinRec:
    int16_t start
    int16_t end
    uint8_t days         # bit d: weekday d (0 Monday)


cdef struct LimitDef:
    # What a limit is; cards share them (a network has few distinct limits).
    int64_t id
    int64_t amount
    int32_t scope_value
    int8_t unit
    int8_t period
    int8_t scope
    int8_t on_breach


cdef struct LimitRec:
    # One card's limit: its definition and its counter.
    int64_t spent
    int32_t pstart
    int32_t def_


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
    int32_t n_exc        # exceptions of the answer (alerting rules it breaks)
    uint8_t ctl_exc      # of them, the controls: 1 product, 2 station, 4 time window
    int64_t* exc_id      # when not NULL: the limit exceptions' ids and reasons, in card order
    int8_t* exc_reason


cdef inline bint _holds(const int32_t* rows, int32_t start, int32_t count, int32_t v) noexcept nogil:
    """Is ``v`` one of ``rows[start:start + count]``?"""
    cdef int32_t k
    for k in range(start, start + count):
        if rows[k] == v:
            return True
    return False


cdef inline bint window_contains(const WinRec* w, int64_t weekday, int64_t minute) noexcept nogil:
    """authz.fuel_model.TimeWindow.contains."""
    if w.start < w.end:
        return (w.days >> weekday) & 1 and w.start <= minute < w.end
    return ((w.days >> weekday) & 1 and minute >= w.start) or \
        ((w.days >> ((weekday + 6) % 7)) & 1 and minute < w.end)


cdef extern from *:
    """
    static inline uint64_t edgepos_mix64(uint64_t x) {
        x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 27; x *= 0x94d049bb133111ebULL;
        return x ^ (x >> 31);
    }
    """
    uint64_t edgepos_mix64(uint64_t x) noexcept nogil


cdef inline uint64_t _def_hash(const LimitDef* d) noexcept nogil:
    return edgepos_mix64(<uint64_t>d.id ^ edgepos_mix64(<uint64_t>d.amount ^ edgepos_mix64(
        ((<uint64_t><uint32_t>d.scope_value) << 24) | ((<uint64_t><uint8_t>d.unit) << 16)
        | ((<uint64_t><uint8_t>d.period) << 8) | <uint8_t>d.scope | ((<uint64_t><uint8_t>d.on_breach) << 56))))


cdef inline bint _def_eq(const LimitDef* a, const LimitDef* b) noexcept nogil:
    return (a.id == b.id and a.amount == b.amount and a.scope_value == b.scope_value and a.unit == b.unit
            and a.period == b.period and a.scope == b.scope and a.on_breach == b.on_breach)


cdef int _EPOCH_ORDINAL = _date(1970, 1, 1).toordinal()
cdef int N_GROUPS = len(ProductGroup)
cdef int64_t NO_PERIOD_ = _NO_PERIOD
cdef tuple GROUP_SETS = tuple(frozenset(g for g in ProductGroup if m >> int(g) & 1) for m in range(1 << len(ProductGroup)))


#: The controls of a card that has none: (product codes or None, windows as (days mask, start,
#: end), station scope, station ids, on breach). Rule 0 of every evaluator.
cdef tuple NO_CONTROLS = (None, (), 0, (), 0)


cdef inline int _days_mask(days) except -1:
    cdef int m = 0
    for d in days:
        if type(d) is not int or not 0 <= d < 8:
            return 256  # not a weekday: check_card_rules names it
        m |= 1 << d
    return m


cdef tuple _controls_key(card):
    """The controls of FuelCard ``card`` as a rule key (see NO_CONTROLS)."""
    products = None if card.products is None else tuple(sorted(card.products))
    return (products, tuple([(_days_mask(w.days), w.start_min, w.end_min) for w in card.windows]),
            int(card.station_scope), tuple(sorted(card.station_ids)), int(card.on_breach))


cdef object _controls_card(str no, int groups, tuple key):
    """A FuelCard with only the groups and the controls of rule ``key`` (to check them with
    check_card_rules, and for card_at)."""
    products, windows, scope, stations, on_breach = key
    try:
        return FuelCard(no, 0, _date(1970, 1, 1), GROUP_SETS[groups], (),
                        products=None if products is None else frozenset(products),
                        windows=tuple([TimeWindow(frozenset([d for d in range(9) if m >> d & 1]), a, b)
                                       for m, a, b in windows]),
                        station_scope=StationScope(scope), station_ids=frozenset(stations),
                        on_breach=OnBreach(on_breach))
    except ValueError as exc:
        raise ModelError(f"card {mask_card_no(no)}: station restriction or on-breach out of range ({exc})") from None


cdef class NativeFuelEvaluator:
    """Fuel decisions from the packed tables of a FuelModel or of FuelColumns (the compact
    replica, native.compact); the state (balances, limit counters) lives in the tables and is
    changed by ``complete``."""

    cdef object _model
    cdef readonly str name
    cdef _Zones zones
    cdef int32_t n_cards, n_stations, n_products, n_contracts, n_defs
    cdef readonly tuple products, stations, discounts, tz_names
    cdef readonly dict product_index, station_index
    cdef const int8_t[::1] prod_group
    cdef const int32_t[::1] st_region, st_groups
    cdef const int64_t[::1] st_max_fill, st_price
    cdef const int32_t[::1] disc_start, disc_count
    cdef const int8_t[::1] disc_where, disc_kind
    cdef const int64_t[::1] disc_value
    # cards, limits and contracts as arrays of structs: one decision reads a few cache
    # lines instead of one line per field (measured: benchmarks.evaluator)
    cdef CardRec* cards
    cdef int32_t* ctl    # per card: its controls' RuleRec (0: none), read when F_CONTROLS
    cdef LimitRec* lims
    cdef LimitDef* ldefs
    cdef ContractRec* cts
    cdef Py_ssize_t n_lims
    # the cards' controls: rules shared by the cards with the same ones (rule 0: none), and
    # their rows; ``_rule_keys[i]`` is rule i as a key (NO_CONTROLS), ``_rule_index`` its inverse
    cdef RuleRec* rules
    cdef int32_t* rule_prod
    cdef WinRec* rule_win
    cdef int32_t* rule_st
    cdef int32_t n_rules
    cdef list _rule_keys
    cdef dict _rule_index
    cdef set _rule_checked
    # numbers -> positions: int64 keys (native.compact.card_key); numbers without a key in dicts
    cdef _CardNumbers numbers
    cdef _KeyIndex ct_ix, stop_ix
    cdef frozenset stop_other
    cdef dict stop_changes  # card number -> on the list or not, changed at run time (host deltas)
    cdef list _limit_objs
    # run-time upserts (apply): room allocated, and the contracts appended since the tables
    # were packed (positions from ct_base on), whose ids the packed index does not hold (the
    # cards appended are in ``numbers``)
    cdef Py_ssize_t card_cap, lim_cap, ct_cap, def_cap, ct_base
    cdef dict ct_extra, def_index
    cdef object ct_ids_extra

    def __cinit__(self):
        self.cards = NULL
        self.ctl = NULL
        self.lims = NULL
        self.ldefs = NULL
        self.cts = NULL
        self.rules = NULL
        self.rule_prod = NULL
        self.rule_win = NULL
        self.rule_st = NULL

    def __dealloc__(self):
        PyMem_Free(self.cards)
        PyMem_Free(self.ctl)
        PyMem_Free(self.lims)
        PyMem_Free(self.ldefs)
        PyMem_Free(self.cts)
        self._free_rules()

    cdef inline void _set_controls(self, Py_ssize_t i, int32_t rule) noexcept:
        """Card ``i`` has the controls of rule ``rule`` (0: none)."""
        self.ctl[i] = rule
        if rule:
            self.cards[i].flags |= F_CONTROLS
        else:
            self.cards[i].flags &= ~F_CONTROLS

    cdef void _free_rules(self) noexcept:
        PyMem_Free(self.rules)
        PyMem_Free(self.rule_prod)
        PyMem_Free(self.rule_win)
        PyMem_Free(self.rule_st)
        self.rules = NULL
        self.rule_prod = NULL
        self.rule_win = NULL
        self.rule_st = NULL

    def __init__(self, source):
        """``source``: a FuelModel, or FuelColumns (the compact replica). The columns are
        copied into the packed tables; their card_key, ct_id and stop_keys arrays stay
        referenced as the indexes unless an index keeps them compact (``_KeyIndex``), so drop
        the columns once the evaluator is built."""
        if isinstance(source, FuelModel):
            cols = FuelColumns.from_model(source)
            self._model = source
        elif isinstance(source, FuelColumns):
            cols = source
            self._model = None
        else:
            raise TypeError(f"a fuel evaluator needs a FuelModel or FuelColumns, got {type(source).__name__}")
        self.name = "native"
        t = FuelTables(cols)
        self.zones = _Zones(t.tz)
        self.products, self.stations, self.discounts, self.tz_names = t.products, t.stations, t.discounts, cols.tz_names
        self.product_index, self.station_index = t.product_index, t.station_index
        self.n_stations, self.n_products = len(self.stations), len(self.products)
        self.prod_group = t.prod_group
        self.st_region, self.st_groups, self.st_max_fill, self.st_price = t.st_region, t.st_groups, t.st_max_fill, t.st_price
        self.disc_start, self.disc_count = t.disc_start, t.disc_count
        self.disc_where, self.disc_kind, self.disc_value = t.disc_where, t.disc_kind, t.disc_value
        self._pack_contracts(cols)
        self._pack_cards(cols)
        self._pack_limits(cols)
        self._pack_controls(cols)
        self._pack_stop_list(cols)
        self._limit_objs = [None] * self.n_defs
        self.card_cap = self.n_cards
        self.ct_cap = self.ct_base = self.n_contracts
        self.lim_cap, self.def_cap = self.n_lims, self.n_defs
        self.ct_extra, self.def_index = {}, None
        self.ct_ids_extra = _pyarray("q")

    @property
    def model(self):
        """The FuelModel decided on: the one this evaluator was built from, or (built from
        columns) a :class:`native.compact.CompactFuelModel` view over its tables."""
        return self._model if self._model is not None else CompactFuelModel(self)

    # -- packing (the columns' checks are those of FuelModel._validate, on positions) --

    cdef str _card_name(self, cols, Py_ssize_t i):
        return mask_card_no(cols.card_no(i))

    cdef void _pack_contracts(self, cols) except *:
        cdef Py_ssize_t n = len(cols.ct_id), i, k
        if not (len(cols.ct_tz) == len(cols.ct_region) == len(cols.ct_tariff) == len(cols.ct_balance)
                == len(cols.ct_credit) == len(cols.ct_nchosen) == n and len(cols.ct_chosen) == 3 * n):
            raise ModelError("contract columns differ in length")
        cdef const int64_t[::1] cid = cols.ct_id, balance = cols.ct_balance, credit = cols.ct_credit
        cdef const int64_t[::1] chosen = cols.ct_chosen
        cdef const uint16_t[::1] tz = cols.ct_tz
        cdef const int32_t[::1] region = cols.ct_region
        cdef const int8_t[::1] tariff = cols.ct_tariff, nchosen = cols.ct_nchosen
        cdef Py_ssize_t n_tz = len(self.tz_names)
        self.ct_ix = _KeyIndex(cols.ct_id, False)
        if self.ct_ix.duplicate is not None:
            raise ModelError(f"duplicate contract {self.ct_ix.duplicate!r}")
        self.n_contracts = <int32_t>n
        self.cts = <ContractRec*>PyMem_Malloc(max(n, 1) * sizeof(ContractRec))
        if self.cts == NULL:
            raise MemoryError("no memory for the fuel tables")
        st = self.station_index
        for i in range(n):
            if tz[i] >= n_tz:
                raise ModelError(f"contract {cid[i]}: time zone {tz[i]} is not in tz_names")
            if not 0 <= tariff[i] < N_TARIFFS:
                raise ModelError(f"contract {cid[i]}: unknown tariff {tariff[i]}")
            if not (-MAX_AMOUNT <= balance[i] <= MAX_AMOUNT and 0 <= credit[i] <= MAX_AMOUNT):
                raise ModelError(f"contract {cid[i]} balance or credit line out of range")
            if not 0 <= nchosen[i] <= 3:
                raise ModelError(f"contract {cid[i]} chose more than three stations")
            self.cts[i].balance = balance[i]
            self.cts[i].credit = credit[i]
            self.cts[i].tz = tz[i]
            self.cts[i].region = region[i]
            self.cts[i].tariff = tariff[i]
            for k in range(3):
                self.cts[i].chosen[k] = -1
            for k in range(nchosen[i]):
                pos = st.get(chosen[3 * i + k])
                if pos is None:
                    raise ModelError(f"contract {cid[i]} chose unknown station {chosen[3 * i + k]}")
                self.cts[i].chosen[k] = pos

    cdef void _pack_cards(self, cols) except *:
        cdef Py_ssize_t n = len(cols.card_key), i, total = 0
        if not (len(cols.card_contract) == len(cols.card_kind) == len(cols.card_status) == len(cols.card_expires)
                == len(cols.card_groups) == len(cols.card_nlimits) == n):
            raise ModelError("card columns differ in length")
        cdef const int32_t[::1] contract = cols.card_contract, expires = cols.card_expires
        cdef const int8_t[::1] kind = cols.card_kind, status = cols.card_status
        cdef const uint8_t[::1] groups = cols.card_groups
        cdef const uint16_t[::1] nlim = cols.card_nlimits
        self.numbers = _CardNumbers(cols, "card")
        self.n_cards = <int32_t>n
        self.cards = <CardRec*>PyMem_Malloc(max(n, 1) * sizeof(CardRec))
        self.ctl = <int32_t*>PyMem_Calloc(max(n, 1), sizeof(int32_t))
        if self.cards == NULL or self.ctl == NULL:
            raise MemoryError("no memory for the fuel tables")
        for i in range(n):
            if not 0 <= contract[i] < self.n_contracts:
                raise ModelError(f"card {self._card_name(cols, i)} of unknown contract (position {contract[i]})")
            if not (0 <= status[i] <= 1 and 0 <= kind[i] <= 1 and groups[i] >> N_GROUPS == 0):
                raise ModelError(f"card {self._card_name(cols, i)}: status, kind or groups out of range")
            self.cards[i].contract = contract[i]
            self.cards[i].expires = expires[i]
            self.cards[i].limit_start = <int32_t>total
            self.cards[i].limit_count = nlim[i]
            self.cards[i].groups = groups[i]
            self.cards[i].flags = (F_BLOCKED if status[i] == BLOCKED else 0) | (F_VIRTUAL if kind[i] else 0)
            total += nlim[i]
            if total >= 2**31 - 1:
                raise ModelError("too many limits for one table")
        if total != len(cols.lim_id):
            raise ModelError(f"card_nlimits adds up to {total}, but there are {len(cols.lim_id)} limit rows")

    cdef void _pack_limits(self, cols) except *:
        cdef Py_ssize_t n = len(cols.lim_id), i, r, r2, cap = 64, slot
        if not (len(cols.lim_unit) == len(cols.lim_period) == len(cols.lim_scope) == len(cols.lim_amount)
                == len(cols.lim_scope_value) == len(cols.lim_spent) == len(cols.lim_pstart) == n):
            raise ModelError("limit columns differ in length")
        cdef const int64_t[::1] lid = cols.lim_id, amount = cols.lim_amount, spent = cols.lim_spent
        cdef const int32_t[::1] svalue = cols.lim_scope_value, pstart = cols.lim_pstart
        cdef const int8_t[::1] unit = cols.lim_unit, period = cols.lim_period, scope = cols.lim_scope
        cdef const int8_t[::1] on_breach = cols.lim_on_breach if len(cols.lim_on_breach) else carray.clone(_B, max(n, 1), True)
        if len(cols.lim_on_breach) not in (0, n):
            raise ModelError("limit columns differ in length")
        cdef LimitDef d
        cdef LimitDef* grown
        cdef uint32_t* table = NULL
        cdef uint32_t* bigger
        cdef uint64_t mask = 127, h
        self.n_lims = n
        self.lims = <LimitRec*>PyMem_Malloc(max(n, 1) * sizeof(LimitRec))
        self.ldefs = <LimitDef*>PyMem_Malloc(cap * sizeof(LimitDef))
        table = <uint32_t*>PyMem_Calloc(mask + 1, sizeof(uint32_t))
        if self.lims == NULL or self.ldefs == NULL or table == NULL:
            PyMem_Free(table)
            raise MemoryError("no memory for the fuel tables")
        self.n_defs = 0
        try:
            for i in range(self.n_cards):
                for r in range(self.cards[i].limit_start, self.cards[i].limit_start + self.cards[i].limit_count):
                    if not (0 <= unit[r] < N_UNITS and 0 <= period[r] < N_PERIODS and 0 <= scope[r] <= 2
                            and 0 <= on_breach[r] <= ALERT):
                        raise ModelError(f"limit {lid[r]} of card {self._card_name(cols, i)}: unit, period, scope "
                                         "or on-breach out of range")
                    if unit[r] == UNIT_PURCHASES and period[r] == PERIOD_TXN:
                        raise ModelError(f"limit {lid[r]} counts purchases per transaction: give it a period")
                    if not 0 <= amount[r] <= MAX_AMOUNT:
                        raise ModelError(f"limit {lid[r]} amount out of range: {amount[r]}")
                    if scope[r] == SCOPE_GROUP and not 0 <= svalue[r] < N_GROUPS:
                        raise ModelError(f"limit {lid[r]} has scope GROUP but no group")
                    if scope[r] == SCOPE_PRODUCT and not 0 <= svalue[r] < self.n_products:
                        raise ModelError(f"limit {lid[r]} names an unknown product (position {svalue[r]})")
                    for r2 in range(self.cards[i].limit_start, r):
                        if lid[r2] == lid[r]:
                            raise ModelError(f"card {self._card_name(cols, i)} repeats limit id {lid[r]}")
                    d.id, d.amount, d.unit, d.period, d.scope = lid[r], amount[r], unit[r], period[r], scope[r]
                    d.on_breach = on_breach[r]
                    if d.on_breach == ALERT:
                        self.cards[i].flags |= F_ALERTS
                    d.scope_value = svalue[r] if scope[r] != 0 else -1
                    # intern the definition: open addressing, slots hold def index + 1
                    h = _def_hash(&d) & mask
                    while table[h] != 0 and not _def_eq(&self.ldefs[table[h] - 1], &d):
                        h = (h + 1) & mask
                    if table[h] == 0:
                        if self.n_defs == cap:
                            cap *= 2
                            grown = <LimitDef*>PyMem_Realloc(self.ldefs, cap * sizeof(LimitDef))
                            if grown == NULL:
                                raise MemoryError("no memory for the fuel tables")
                            self.ldefs = grown
                        self.ldefs[self.n_defs] = d
                        self.n_defs += 1
                        table[h] = self.n_defs
                        if <uint64_t>self.n_defs * 2 > mask:  # keep the table at most half full
                            bigger = <uint32_t*>PyMem_Calloc(2 * (mask + 1), sizeof(uint32_t))
                            if bigger == NULL:
                                raise MemoryError("no memory for the fuel tables")
                            mask = 2 * mask + 1
                            for slot in range(self.n_defs):
                                h = _def_hash(&self.ldefs[slot]) & mask
                                while bigger[h] != 0:
                                    h = (h + 1) & mask
                                bigger[h] = <uint32_t>(slot + 1)
                            PyMem_Free(table)
                            table = bigger
                        self.lims[r].def_ = self.n_defs - 1
                    else:
                        self.lims[r].def_ = <int32_t>(table[h] - 1)
                    self.lims[r].spent = spent[r]
                    self.lims[r].pstart = pstart[r]
        finally:
            PyMem_Free(table)
        grown = <LimitDef*>PyMem_Realloc(self.ldefs, max(self.n_defs, 1) * sizeof(LimitDef))
        if grown != NULL:
            self.ldefs = grown

    cdef void _pack_controls(self, cols) except *:
        """The cards' controls from the control columns: each distinct one checked (as
        check_card_rules checks a card) and interned as a rule."""
        cdef Py_ssize_t n = self.n_cards, i, k, p = 0, w = 0, q = 0, n_p, n_w, n_s
        self._rule_keys, self._rule_index, self._rule_checked = [NO_CONTROLS], {NO_CONTROLS: 0}, set()
        per_card = (cols.card_nproducts, cols.card_nwindows, cols.card_scope, cols.card_nstations, cols.card_on_breach)
        if all(len(a) == 0 for a in per_card):
            if len(cols.cprod_pos) or len(cols.win_days) or len(cols.cst_id):
                raise ModelError("control rows without the cards' control columns")
            self._build_rules(self._rule_keys, self.product_index, self.station_index)
            return
        if not all(len(a) == n for a in per_card) or not len(cols.win_days) == len(cols.win_start) == len(cols.win_end):
            raise ModelError("control columns differ in length")
        cdef const uint16_t[::1] nprod = cols.card_nproducts, wstart = cols.win_start, wend = cols.win_end
        cdef const uint8_t[::1] nwin = cols.card_nwindows, nst = cols.card_nstations, wdays = cols.win_days
        cdef const int8_t[::1] scope = cols.card_scope, breach = cols.card_on_breach
        cdef const int32_t[::1] cprod = cols.cprod_pos
        cdef const int64_t[::1] cst = cols.cst_id
        cdef Py_ssize_t np_ = len(cprod), nw = len(wdays), ns = len(cst)
        for i in range(n):
            n_p, n_w, n_s = nprod[i], nwin[i], nst[i]
            if not (n_p or n_w or scope[i] or n_s or breach[i]):
                p += n_p
                continue
            if p + n_p > np_ or w + n_w > nw or q + n_s > ns:
                raise ModelError("the cards' control counts add up to more rows than there are")
            products = None
            if n_p:
                codes = []
                for k in range(p, p + n_p):
                    if not 0 <= cprod[k] < self.n_products:
                        raise ModelError(f"card {self._card_name(cols, i)} allows an unknown product (position {cprod[k]})")
                    codes.append(self.products[cprod[k]].code)
                products = tuple(sorted(codes))
            key = (products, tuple([(wdays[k], wstart[k], wend[k]) for k in range(w, w + n_w)]), scope[i],
                   tuple(sorted([cst[k] for k in range(q, q + n_s)])), breach[i])
            p, w, q = p + n_p, w + n_w, q + n_s
            self._set_controls(i, self._intern_rule(key, self.cards[i].groups, cols.card_no(i), self._rule_keys,
                                                    self._rule_index, self.product_index, self.products,
                                                    self.station_index, self._rule_checked))
        if p != np_ or w != nw or q != ns:
            raise ModelError("control rows that no card owns")
        self._build_rules(self._rule_keys, self.product_index, self.station_index)

    cdef int32_t _intern_rule(self, tuple key, int groups, str no, list keys, dict index, dict product_index,
                              tuple products, dict station_index, set checked) except -1:
        """The rule of ``key`` in ``keys``/``index`` (appended when new), checked for a card
        of ``groups`` against the given products and stations unless ``checked`` (the
        (key, groups) pairs already checked against them) holds it."""
        if key == NO_CONTROLS:
            return 0
        if (key, groups) not in checked:
            check_card_rules(_controls_card(no, groups, key), product_index, products, station_index)
            checked.add((key, groups))
        r = index.get(key)
        if r is None:
            if len(keys) >= 2**31 - 1:
                raise ModelError("too many distinct card controls")
            r = index[key] = len(keys)
            keys.append(key)
        return r

    cdef void _build_rules(self, list keys, dict product_index, dict station_index) except *:
        """The rule tables of ``keys`` (positions through the given indexes; a code or id they
        do not hold belongs to a rule no card uses any more, and is left out), replacing
        the tables only once all are made."""
        cdef Py_ssize_t n = len(keys), i, k, n_p = 0, n_w = 0, n_s = 0
        for key in keys:
            n_p += len(key[0]) if key[0] is not None else 0
            n_w += len(key[1])
            n_s += len(key[3])
        cdef RuleRec* rules = <RuleRec*>PyMem_Malloc(max(n, 1) * sizeof(RuleRec))
        cdef int32_t* prod = <int32_t*>PyMem_Malloc(max(n_p, 1) * sizeof(int32_t))
        cdef WinRec* win = <WinRec*>PyMem_Malloc(max(n_w, 1) * sizeof(WinRec))
        cdef int32_t* st = <int32_t*>PyMem_Malloc(max(n_s, 1) * sizeof(int32_t))
        if rules == NULL or prod == NULL or win == NULL or st == NULL:
            PyMem_Free(rules)
            PyMem_Free(prod)
            PyMem_Free(win)
            PyMem_Free(st)
            raise MemoryError("no memory for the fuel tables")
        n_p = n_w = n_s = 0
        for i in range(n):
            products, windows, scope, stations, on_breach = keys[i]
            rules[i].prod_start, rules[i].win_start, rules[i].st_start = n_p, n_w, n_s
            if products is not None:
                for code in products:
                    k = product_index.get(code, -1)
                    if k >= 0:
                        prod[n_p] = <int32_t>k
                        n_p += 1
                if n_p == rules[i].prod_start:  # none is sold any more: the rule is unused
                    prod[n_p] = -1
                    n_p += 1
            for m, a, b in windows:
                win[n_w].days, win[n_w].start, win[n_w].end = m, a, b
                n_w += 1
            for sid in stations:
                k = station_index.get(sid, -1)
                if k >= 0:
                    st[n_s] = <int32_t>k
                    n_s += 1
            rules[i].prod_count = <int32_t>(n_p - rules[i].prod_start)
            rules[i].win_count = <int32_t>(n_w - rules[i].win_start)
            rules[i].st_count = <int32_t>(n_s - rules[i].st_start)
            rules[i].scope, rules[i].on_breach = scope, on_breach
        self._free_rules()
        self.rules, self.rule_prod, self.rule_win, self.rule_st = rules, prod, win, st
        self.n_rules = <int32_t>n

    cdef void _pack_stop_list(self, cols) except *:
        """Flag the replica's cards on the stop list; keep the list (numbers of cards that are
        not, or not yet, in the replica) for ``on_stop_list``."""
        cdef Py_ssize_t i, c
        self.stop_ix = _KeyIndex(cols.stop_keys, False)
        if self.stop_ix.duplicate is not None:
            raise ModelError(f"stop list repeats {mask_card_no(card_no_of(self.stop_ix.duplicate))}")
        if self.stop_ix.n and self.stop_ix.kmin < 1:
            raise ModelError("stop_keys holds a key below 1")
        self.stop_other = frozenset(cols.stop_other)
        self.stop_changes = {}
        for i in range(self.stop_ix.n):
            c = self.numbers.pos_of_key(self.stop_ix.at(i))
            if c >= 0:
                self.cards[c].flags |= F_STOP
        for no in self.stop_other:
            c = self.numbers.pos(no)
            if c >= 0:
                self.cards[c].flags |= F_STOP

    # -- numbers and positions --

    cdef Py_ssize_t _card_pos(self, card_no) except? -2:
        """The position of card ``card_no``, or -1."""
        return self.numbers.pos(card_no)

    cdef Py_ssize_t _contract_pos(self, contract_id) except? -2:
        if type(contract_id) is float and contract_id.is_integer():
            contract_id = int(contract_id)  # as a dict keyed by int finds it
        if not isinstance(contract_id, int) or not -2**63 <= contract_id < 2**63:
            return -1
        cdef Py_ssize_t c = self.ct_ix.find(contract_id)
        if c < 0 and self.ct_extra:
            return self.ct_extra.get(contract_id, -1)
        return c

    @property
    def card_count(self):
        """Cards in the replica."""
        return self.n_cards

    @property
    def contract_count(self):
        """Contracts in the replica."""
        return self.n_contracts

    @property
    def limit_definitions(self):
        """Distinct limit definitions the cards share."""
        return self.n_defs

    def nbytes(self):
        """Bytes of the packed tables and indexes (the card_key, ct_id and stop_keys arrays
        included; the small station, price and discount tables not)."""
        return (self.n_cards * sizeof(CardRec) + self.n_lims * sizeof(LimitRec) + self.n_defs * sizeof(LimitDef)
                + self.n_contracts * sizeof(ContractRec) + self.n_rules * sizeof(RuleRec)
                + self.n_cards * sizeof(int32_t)
                + self.numbers.nbytes() + self.ct_ix.nbytes() + self.stop_ix.nbytes())

    def card_position(self, card_no):
        """The position of card ``card_no``, or None when the replica has no such card."""
        c = self._card_pos(card_no)
        return None if c < 0 else c

    def contract_position(self, contract_id):
        """The position of contract ``contract_id``, or None."""
        c = self._contract_pos(contract_id)
        return None if c < 0 else c

    def card_number(self, Py_ssize_t i):
        """The number of the card at position ``i``."""
        if not 0 <= i < self.n_cards:
            raise IndexError("card position out of range")
        return self.numbers.number(i)

    cdef object _limit(self, int32_t d):
        cdef LimitDef* ld
        lim = self._limit_objs[d]
        if lim is None:
            ld = &self.ldefs[d]
            lim = Limit(ld.id, LimitUnit(ld.unit), Period(ld.period), ld.amount, Scope(ld.scope),
                        group=ProductGroup(ld.scope_value) if ld.scope == SCOPE_GROUP else None,
                        product=self.products[ld.scope_value].code if ld.scope == SCOPE_PRODUCT else None,
                        on_breach=OnBreach(ld.on_breach))
            self._limit_objs[d] = lim
        return lim

    def card_at(self, Py_ssize_t i):
        """The card at position ``i`` as a FuelCard (made now)."""
        cdef int32_t k
        no = self.card_number(i)
        cdef CardRec* c = &self.cards[i]
        limits = tuple([self._limit(self.lims[k].def_) for k in range(c.limit_start, c.limit_start + c.limit_count)])
        ctl = _controls_card(no, c.groups, self._rule_keys[self.ctl[i]])
        return FuelCard(no, self._ct_id_at(c.contract), _date.fromordinal(_EPOCH_ORDINAL + c.expires),
                        GROUP_SETS[c.groups], limits, CardKind(1 if c.flags & F_VIRTUAL else 0),
                        CardStatus(1 if c.flags & F_BLOCKED else 0), ctl.products, ctl.windows, ctl.station_scope,
                        ctl.station_ids, ctl.on_breach)

    def contract_at(self, Py_ssize_t i):
        """The contract at position ``i`` as a Contract, with its balance now."""
        if not 0 <= i < self.n_contracts:
            raise IndexError("contract position out of range")
        cdef ContractRec* ct = &self.cts[i]
        return Contract(self._ct_id_at(i), self.tz_names[ct.tz], ct.region, Tariff(ct.tariff), ct.balance,
                        ct.credit, tuple([self.stations[ct.chosen[k]].station_id for k in range(3) if ct.chosen[k] >= 0]))

    def set_stop_listed(self, card_no, listed):
        """Put ``card_no`` on the stop list or take it off, now (a block or unblock from the
        host); decisions for that card change at once. Returns whether the card is one of this
        replica's (a number of another network is remembered for ``on_stop_list``)."""
        if type(card_no) is not str or not card_no:
            raise RequestError(f"card_no must be text, got {type(card_no).__name__}")
        cdef Py_ssize_t c = self._card_pos(card_no)
        if c >= 0:
            if listed:
                self.cards[c].flags |= F_STOP
            else:
                self.cards[c].flags &= ~F_STOP
        self.stop_changes[card_no] = bool(listed)
        return c >= 0

    def replace_stop_list(self, numbers):
        """The stop list becomes exactly ``numbers`` (a host snapshot of it), now: a new key
        index, every card's flag set anew, the run-time changes forgotten."""
        cdef Py_ssize_t i, c
        keys = _pyarray("q")
        other = set()
        for no in numbers:
            if type(no) is not str or not no:
                raise ModelError(f"a stop-list number must be text, got {no!r}")
            k = key_of(no)
            if k:
                keys.append(k)
            else:
                other.add(no)
        ix = _KeyIndex(_merge_keys(keys, _pyarray("q")), False)
        for i in range(self.n_cards):
            self.cards[i].flags &= ~F_STOP
        self.stop_ix, self.stop_other, self.stop_changes = ix, frozenset(other), {}
        for i in range(ix.n):
            c = self.numbers.pos_of_key(ix.at(i))
            if c >= 0:
                self.cards[c].flags |= F_STOP
        for no in self.stop_other:
            c = self.numbers.pos(no)
            if c >= 0:
                self.cards[c].flags |= F_STOP

    def on_stop_list(self, card_no):
        """Is ``card_no`` on the stop list (a card of this replica or not)?"""
        if self.stop_changes and card_no in self.stop_changes:
            return self.stop_changes[card_no]
        cdef int64_t k = key_of(card_no)
        if k:
            return self.stop_ix.find(k) >= 0
        try:
            return card_no in self.stop_other
        except TypeError:
            return False

    @property
    def stop_list_size(self):
        """Numbers on the stop list."""
        return self.stop_ix.n + len(self.stop_other)

    def stop_list_numbers(self):
        """Every number on the stop list now, each once, run-time changes (host deltas)
        included: the packed keys in order and then the others, less those a change took off,
        then the numbers a change put on that are not among them."""
        cdef Py_ssize_t i
        changes = self.stop_changes
        if not changes:
            for i in range(self.stop_ix.n):
                yield card_no_of(self.stop_ix.at(i))
            yield from self.stop_other
            return
        changes = dict(changes)  # as it is now: a change made while this is read is not half seen
        for i in range(self.stop_ix.n):
            no = card_no_of(self.stop_ix.at(i))
            if changes.get(no, True):
                yield no
        for no in self.stop_other:
            if changes.get(no, True):
                yield no
        for no, on in changes.items():
            if on and not self._stop_packed(no):
                yield no

    def _stop_packed(self, card_no):
        """Is ``card_no`` on the stop list the evaluator was built with (before run-time changes)?"""
        cdef int64_t k = key_of(card_no)
        if k:
            return self.stop_ix.find(k) >= 0
        return card_no in self.stop_other

    def counter_items(self):
        """((card_no, limit_id), LimitCounter) of every limit that has counted, card by card."""
        cdef Py_ssize_t i, k
        for i in range(self.n_cards):
            no = None
            for k in range(self.cards[i].limit_start, self.cards[i].limit_start + self.cards[i].limit_count):
                if self.lims[k].pstart != NO_PERIOD_:
                    if no is None:
                        no = self.card_number(i)
                    yield (no, self.ldefs[self.lims[k].def_].id), LimitCounter(self.lims[k].spent, self.lims[k].pstart)

    def columns(self):
        """The replica now (balances and counters with this site's completions) as
        FuelColumns: the columns it was built from, as long as nothing was completed."""
        return self._columns(None, None)

    def _columns(self, skip_cards, skip_contracts):
        """The columns of every card and contract but those whose position is set in the
        byte masks ``skip_cards`` / ``skip_contracts`` (None: skip none)."""
        cdef Py_ssize_t i, k, j, r, n = self.n_cards, nc = self.n_contracts, m = 0, nl = 0, mc = 0
        cdef bytearray no_skip = bytearray(max(n, nc, 1))
        cdef const uint8_t[::1] skc = no_skip if skip_cards is None else skip_cards
        cdef const uint8_t[::1] skt = no_skip if skip_contracts is None else skip_contracts
        cdef carray.array remap = carray.clone(_I, max(nc, 1), False)
        for i in range(nc):
            remap.data.as_ints[i] = -1 if skt[i] else <int32_t>mc
            if not skt[i]:
                mc += 1
        for i in range(n):
            if not skc[i]:
                m += 1
                nl += self.cards[i].limit_count
        cdef carray.array a_kind = carray.clone(_B, m, False), a_status = carray.clone(_B, m, False)
        cdef carray.array a_contract = carray.clone(_I, m, False), a_expires = carray.clone(_I, m, False)
        cdef carray.array a_groups = carray.clone(_UB, m, False), a_nlim = carray.clone(_H, m, False)
        cdef carray.array a_key = carray.clone(_Q, m, False)
        cdef carray.array l_id = carray.clone(_Q, nl, False), l_unit = carray.clone(_B, nl, False)
        cdef carray.array l_period = carray.clone(_B, nl, False), l_scope = carray.clone(_B, nl, False)
        cdef carray.array l_amount = carray.clone(_Q, nl, False), l_sv = carray.clone(_I, nl, False)
        cdef carray.array l_spent = carray.clone(_Q, nl, False), l_pstart = carray.clone(_I, nl, False)
        cdef carray.array l_breach = carray.clone(_B, nl, False)
        cdef carray.array k_nprod = carray.clone(_H, m, True), k_nwin = carray.clone(_UB, m, True)
        cdef carray.array k_scope = carray.clone(_B, m, True), k_nst = carray.clone(_UB, m, True)
        cdef carray.array k_breach = carray.clone(_B, m, True)
        cprod, wdays, wstart, wend, cst = _pyarray("i"), _pyarray("B"), _pyarray("H"), _pyarray("H"), _pyarray("q")
        cdef carray.array c_tz = carray.clone(_H, mc, False), c_region = carray.clone(_I, mc, False)
        cdef carray.array c_tariff = carray.clone(_B, mc, False), c_balance = carray.clone(_Q, mc, False)
        cdef carray.array c_credit = carray.clone(_Q, mc, False), c_nchosen = carray.clone(_B, mc, False)
        cdef carray.array c_chosen = carray.clone(_Q, 3 * mc, True)
        cdef carray.array c_id = carray.clone(_Q, mc, False)
        cdef LimitDef* d
        other = {}
        j = 0
        r = 0
        for i in range(n):
            if skc[i]:
                continue
            a_key.data.as_longlongs[j] = self.numbers.key_at(i)
            if a_key.data.as_longlongs[j] == 0:
                other[j] = self.numbers.other_by_pos[i]
            a_contract.data.as_ints[j] = remap.data.as_ints[self.cards[i].contract]
            a_kind.data.as_schars[j] = 1 if self.cards[i].flags & F_VIRTUAL else 0
            a_status.data.as_schars[j] = 1 if self.cards[i].flags & F_BLOCKED else 0
            a_expires.data.as_ints[j] = self.cards[i].expires
            a_groups.data.as_uchars[j] = self.cards[i].groups
            a_nlim.data.as_ushorts[j] = self.cards[i].limit_count
            if self.ctl[i]:
                products, windows, scope, stations, on_breach = self._rule_keys[self.ctl[i]]
                if products is not None:
                    k_nprod.data.as_ushorts[j] = len(products)
                    cprod.extend(sorted([self.product_index[code] for code in products]))
                k_nwin.data.as_uchars[j] = len(windows)
                for w in windows:
                    wdays.append(w[0])
                    wstart.append(w[1])
                    wend.append(w[2])
                k_scope.data.as_schars[j] = scope
                k_nst.data.as_uchars[j] = len(stations)
                cst.extend(stations)
                k_breach.data.as_schars[j] = on_breach
            for k in range(self.cards[i].limit_start, self.cards[i].limit_start + self.cards[i].limit_count):
                d = &self.ldefs[self.lims[k].def_]
                l_id.data.as_longlongs[r] = d.id
                l_unit.data.as_schars[r] = d.unit
                l_period.data.as_schars[r] = d.period
                l_scope.data.as_schars[r] = d.scope
                l_amount.data.as_longlongs[r] = d.amount
                l_sv.data.as_ints[r] = d.scope_value
                l_spent.data.as_longlongs[r] = self.lims[k].spent
                l_pstart.data.as_ints[r] = self.lims[k].pstart
                l_breach.data.as_schars[r] = d.on_breach
                r += 1
            j += 1
        j = 0
        for i in range(nc):
            if skt[i]:
                continue
            c_id.data.as_longlongs[j] = self._ct_id_at(i)
            c_tz.data.as_ushorts[j] = <uint16_t>self.cts[i].tz
            c_region.data.as_ints[j] = self.cts[i].region
            c_tariff.data.as_schars[j] = <int8_t>self.cts[i].tariff
            c_balance.data.as_longlongs[j] = self.cts[i].balance
            c_credit.data.as_longlongs[j] = self.cts[i].credit
            c_nchosen.data.as_schars[j] = 0
            for k in range(3):
                if self.cts[i].chosen[k] >= 0:
                    c_chosen.data.as_longlongs[3 * j + c_nchosen.data.as_schars[j]] = \
                        self.stations[self.cts[i].chosen[k]].station_id
                    c_nchosen.data.as_schars[j] += 1
            j += 1
        stop_other = self.stop_other
        stop_keys = self.stop_ix.key_array()
        if self.stop_changes:
            now = self._stop_now()
            stop_keys = _pyarray("q", [k for k in map(key_of, now) if k])
            stop_other = frozenset(no for no in now if not key_of(no))
        return FuelColumns(
            products=self.products, stations=self.stations, discounts=self.discounts, tz_names=self.tz_names,
            card_other=other, stop_other=stop_other,
            ct_id=c_id, ct_tz=c_tz, ct_region=c_region, ct_tariff=(c_tariff),
            ct_balance=c_balance, ct_credit=c_credit, ct_nchosen=(c_nchosen), ct_chosen=c_chosen,
            card_key=a_key, card_contract=a_contract, card_kind=(a_kind),
            card_status=(a_status), card_expires=a_expires, card_groups=a_groups, card_nlimits=a_nlim,
            lim_id=l_id, lim_unit=(l_unit), lim_period=(l_period), lim_scope=(l_scope),
            lim_amount=l_amount, lim_scope_value=l_sv, lim_spent=l_spent, lim_pstart=l_pstart, lim_on_breach=l_breach,
            card_nproducts=k_nprod, card_nwindows=k_nwin, card_scope=k_scope, card_nstations=k_nst,
            card_on_breach=k_breach, cprod_pos=cprod, win_days=wdays, win_start=wstart, win_end=wend, cst_id=cst,
            stop_keys=_merge_keys(stop_keys, _pyarray("q")))

    # -- updates from the host (authz.update) --

    cdef inline int64_t _ct_id_at(self, Py_ssize_t i):
        """The id of the contract at position ``i``."""
        if i < self.ct_base:
            return self.ct_ix.key_at(i)
        return self.ct_ids_extra[i - self.ct_base]

    def _stop_now(self):
        """Every number on the stop list now, run-time changes included."""
        cdef Py_ssize_t i
        out = set(card_no_of(self.stop_ix.at(i)) for i in range(self.stop_ix.n))
        out.update(self.stop_other)
        for no, on in self.stop_changes.items():
            if on:
                out.add(no)
            else:
                out.discard(no)
        return out

    def apply(self, update):
        """Apply the host's ``update`` (an authz.update.FuelUpdate) now: the next decision
        sees it (the rules: authz.update). A ModelError refuses the whole update and changes
        nothing.

        Upserts are made in place: a known card or contract is overwritten where it is, a
        new one appended (its key in a small index beside the packed one); a card whose
        limit count grew gets its limits at the end of the limit table. Products, stations
        and tariffs rebuild only the small tables. A delete of a card or contract packs the
        tables anew without it (every position after it moves up, as in the reference)."""
        if not isinstance(update, FuelUpdate):
            raise TypeError(f"expected a FuelUpdate, got {type(update).__name__}")
        check_fuel_update(update)
        if update.delete_cards or update.delete_contracts:
            self._apply_with_deletes(update)
            return
        # -- check and plan: nothing changes until every row is known to fit --
        small = None
        product_index, station_index = self.product_index, self.station_index
        if (update.products or update.delete_products or update.stations or update.delete_stations
                or update.tariffs or update.delete_tariffs):
            small = self._plan_small(update)
            product_index, station_index = small[0].product_index, small[0].station_index
        tz_pos = {name: k for k, name in enumerate(self.tz_names)}
        new_zones = []
        ct_plan = []
        ct_new = {}
        cdef Py_ssize_t next_ct = self.n_contracts, pos, next_card = self.n_cards, extra_lims = 0
        upserted_ct = set()
        for c in update.contracts:
            if not isinstance(c, Contract):
                raise ModelError(f"a contract row must be a Contract, got {type(c).__name__}")
            z = tz_pos.get(c.tz)
            if z is None:
                zone(c.tz)
                z = tz_pos[c.tz] = len(tz_pos)
                new_zones.append(c.tz)
            if len(c.chosen_station_ids) > 3:
                raise ModelError(f"contract {c.contract_id} chose more than three stations")
            chosen = []
            for sid in c.chosen_station_ids:
                if sid not in station_index:
                    raise ModelError(f"contract {c.contract_id} chose unknown station {sid}")
                chosen.append(station_index[sid])
            if not (type(c.balance_kop) is int and type(c.credit_line_kop) is int
                    and abs(c.balance_kop) <= MAX_AMOUNT and 0 <= c.credit_line_kop <= MAX_AMOUNT):
                raise ModelError(f"contract {c.contract_id} balance or credit line out of range")
            if not (isinstance(c.tariff, int) and 0 <= c.tariff < N_TARIFFS) or not isinstance(c.home_region, int) \
                    or not -2**31 <= c.home_region < 2**31:
                raise ModelError(f"contract {c.contract_id}: tariff or region out of range")
            if type(c.contract_id) is not int or not -2**63 <= c.contract_id < 2**63:
                raise ModelError(f"contract id {c.contract_id!r} is not a 64-bit integer")
            pos = self._contract_pos(c.contract_id)
            if pos < 0:
                pos = next_ct
                next_ct += 1
                ct_new[c.contract_id] = pos
            upserted_ct.add(pos)
            ct_plan.append((pos, c, z, chosen))
        if small is not None and small[2] is not None:
            self._check_chosen(small[2], upserted_ct)
        card_plan = []
        card_new = {}
        products = small[0].products if small is not None else self.products
        rule_keys, rule_index = list(self._rule_keys), dict(self._rule_index)
        checked = self._rule_checked if small is None else set()  # pairs checked against the tables now
        for row in update.cards:
            card, counters = row
            if not isinstance(card, FuelCard):
                raise ModelError(f"a fuel card row must be a FuelCard, got {type(card).__name__}")
            no = card.card_no
            if type(no) is not str or not no:
                raise ModelError(f"a card number must be text, got {no!r}")
            ct = ct_new.get(card.contract_id)
            if ct is None:
                ct = self._contract_pos(card.contract_id) if isinstance(card.contract_id, int) else -1
            if ct < 0:
                raise ModelError(f"card {mask_card_no(no)} of unknown contract {card.contract_id}")
            known = dict(counters)
            defs, spent = [], []
            try:
                check_card_rules(card, product_index, products, station_index)
                controls_key = _controls_key(card)
            except (TypeError, AttributeError) as exc:
                raise ModelError(f"card {mask_card_no(no)}: its rules do not fit the tables: {exc}") from None
            seen = set()
            for lim in card.limits:
                if lim.limit_id in seen:
                    raise ModelError(f"card {mask_card_no(no)} repeats limit id {lim.limit_id}")
                seen.add(lim.limit_id)
                if type(lim.amount) is not int or not 0 <= lim.amount <= MAX_AMOUNT:
                    raise ModelError(f"limit {lim.limit_id} amount out of range: {lim.amount}")
                if type(lim.limit_id) is not int or not -2**63 <= lim.limit_id < 2**63:
                    raise ModelError(f"limit id {lim.limit_id!r} is not a 64-bit integer")
                if lim.scope == Scope.GROUP:
                    if lim.group is None:
                        raise ModelError(f"limit {lim.limit_id} has scope GROUP but no group")
                    value = int(lim.group)
                elif lim.scope == Scope.PRODUCT:
                    if lim.product not in product_index:
                        raise ModelError(f"limit {lim.limit_id} names unknown product {lim.product!r}")
                    value = product_index[lim.product]
                else:
                    value = -1
                if not (0 <= lim.unit < N_UNITS and 0 <= lim.period < N_PERIODS and 0 <= lim.scope <= 2
                        and 0 <= lim.on_breach <= ALERT):
                    raise ModelError(f"limit {lim.limit_id} of card {mask_card_no(no)}: unit, period, scope "
                                     "or on-breach out of range")
                defs.append((lim.limit_id, lim.amount, value, int(lim.unit), int(lim.period), int(lim.scope),
                             int(lim.on_breach)))
                counter = known.get(lim.limit_id)
                spent.append((counter.spent, counter.period_start) if counter is not None else (0, NO_PERIOD_))
            if len(defs) > 65535:
                raise ModelError(f"card {mask_card_no(no)} has too many limits")
            try:
                expires = card.expires_on.toordinal() - _EPOCH_ORDINAL
                groups = 0
                for g in card.groups:
                    groups |= 1 << int(g)
                flags = (F_BLOCKED if card.status == CardStatus.BLOCKED else 0) | \
                    (F_VIRTUAL if card.kind == CardKind.VIRTUAL else 0) | \
                    (F_ALERTS if any(t[6] == ALERT for t in defs) else 0)
            except (AttributeError, TypeError, ValueError) as exc:
                raise ModelError(f"card {mask_card_no(no)} does not fit the tables: {exc}") from None
            if not -2**31 <= expires < 2**31 or groups >> N_GROUPS:
                raise ModelError(f"card {mask_card_no(no)}: expiry or groups out of range")
            pos = self._card_pos(no)
            if pos < 0:
                pos = next_card
                next_card += 1
                card_new[no] = pos
            if pos >= self.n_cards or len(defs) > self.cards[pos].limit_count:
                extra_lims += len(defs)
            rule = self._intern_rule(controls_key, groups, no, rule_keys, rule_index, product_index, products,
                                     station_index, checked)
            card_plan.append((pos, no, ct, expires, groups, flags, defs, spent, rule))
        if small is not None and small[1] is not None:
            self._check_limit_products(small[1], {p for p, *_ in card_plan})
        if small is not None:
            self._check_controls(product_index, products, station_index, {p for p, *_ in card_plan})
        # -- make room (a MemoryError here leaves the tables as they were) --
        self._reserve(next_card, self.n_lims + extra_lims, next_ct)
        if new_zones:
            tz = TzTables()
            for name in self.tz_names + tuple(new_zones):
                tz.add(name)
            zones = _Zones(tz)
        if small is not None or len(rule_keys) != self.n_rules:
            self._build_rules(rule_keys, product_index, station_index)  # replaces the tables last
            self._rule_keys, self._rule_index, self._rule_checked = rule_keys, rule_index, checked
        # -- apply: nothing below can fail --
        if small is not None:
            self._take_small(small)
        if new_zones:
            self.zones = zones
            self.tz_names = self.tz_names + tuple(new_zones)
        for pos, c, z, chosen in ct_plan:
            self._write_contract(pos, c, z, chosen)
        for no, pos in ct_new.items():
            self.ct_extra[no] = pos
            self.ct_ids_extra.append(no)
        self.n_contracts = <int32_t>next_ct
        for pos, no, ct, expires, groups, flags, defs, spent, rule in card_plan:
            if pos >= self.n_cards:  # appended: positions rise in plan order
                self.numbers.append(no, pos)
                self.cards[pos].limit_count = 0
                self.cards[pos].limit_start = <int32_t>self.n_lims
                self.n_cards += 1
            self._write_card(pos, no, ct, expires, groups, flags, defs, spent)
            self._set_controls(pos, rule)
        for no in update.stop_unlisted:
            self.set_stop_listed(no, False)
        for no in update.stop_listed:
            self.set_stop_listed(no, True)
        self._model = None  # the model it was built from is history now: ``model`` is the view

    cdef void _reserve(self, Py_ssize_t n_cards, Py_ssize_t n_lims, Py_ssize_t n_cts) except *:
        """Room for this many cards, limits and contracts (growing by half again)."""
        if n_cards > self.card_cap:
            cap = max(n_cards, self.card_cap + self.card_cap // 2 + 16)
            self.ctl = <int32_t*>_grown(self.ctl, cap, sizeof(int32_t), "no memory for the fuel tables")
            self.cards = <CardRec*>_grown(self.cards, cap, sizeof(CardRec), "no memory for the fuel tables")
            self.card_cap = cap
        if n_lims > self.lim_cap:
            cap = max(n_lims, self.lim_cap + self.lim_cap // 2 + 16)
            self.lims = <LimitRec*>_grown(self.lims, cap, sizeof(LimitRec), "no memory for the fuel tables")
            self.lim_cap = cap
        if n_cts > self.ct_cap:
            cap = max(n_cts, self.ct_cap + self.ct_cap // 2 + 16)
            self.cts = <ContractRec*>_grown(self.cts, cap, sizeof(ContractRec), "no memory for the fuel tables")
            self.ct_cap = cap
        if self.n_defs + 64 > self.def_cap:  # a card brings at most a few new definitions
            cap = self.def_cap * 2 + 64
            self.ldefs = <LimitDef*>_grown(self.ldefs, cap, sizeof(LimitDef), "no memory for the fuel tables")
            self.def_cap = cap

    cdef void _write_contract(self, Py_ssize_t i, c, int32_t z, list chosen) except *:
        cdef int k
        self.cts[i].balance = c.balance_kop
        self.cts[i].credit = c.credit_line_kop
        self.cts[i].tz = z
        self.cts[i].region = c.home_region
        self.cts[i].tariff = int(c.tariff)
        for k in range(3):
            self.cts[i].chosen[k] = chosen[k] if k < len(chosen) else -1

    cdef int32_t _def_of(self, tuple t) except -1:
        """The position of limit definition ``t`` (id, amount, scope value, unit, period,
        scope, on breach), added when new."""
        cdef Py_ssize_t i
        cdef LimitDef* d
        if self.def_index is None:
            self.def_index = {}
            for i in range(self.n_defs):
                d = &self.ldefs[i]
                self.def_index[(d.id, d.amount, d.scope_value, d.unit, d.period, d.scope, d.on_breach)] = i
        i = self.def_index.get(t, -1)
        if i >= 0:
            return <int32_t>i
        if self.n_defs >= self.def_cap:
            self._reserve(0, 0, 0)
        d = &self.ldefs[self.n_defs]
        d.id, d.amount, d.scope_value, d.unit, d.period, d.scope, d.on_breach = t
        self.def_index[t] = self.n_defs
        self._limit_objs.append(None)
        self.n_defs += 1
        return self.n_defs - 1

    cdef void _write_card(self, Py_ssize_t i, str no, int32_t ct, int64_t expires, int groups, int flags,
                          list defs, list spent) except *:
        cdef CardRec* c = &self.cards[i]
        cdef Py_ssize_t k, n = len(defs), start
        if n > c.limit_count:  # relocated to the end; the old rows stay unused
            c.limit_start = <int32_t>self.n_lims
            self.n_lims += n
        start = c.limit_start
        for k in range(n):
            self.lims[start + k].def_ = self._def_of(defs[k])
            self.lims[start + k].spent = spent[k][0]
            self.lims[start + k].pstart = spent[k][1]
        c.limit_count = <uint16_t>n
        c.contract = ct
        c.expires = <int32_t>expires
        c.groups = <uint8_t>groups
        c.flags = <uint8_t>flags | (F_STOP if self.on_stop_list(no) else 0)

    def _plan_small(self, update):
        """The small tables after ``update`` (checked as a FuelModel checks them), and the
        old -> new positions of products and stations (-1: deleted) when any was deleted."""
        products = merged_products(self.products, update)
        stations = merged_stations(self.stations, update)
        discounts = merged_discounts(self.discounts, update)
        t = FuelTables(FuelColumns(products=products, stations=stations, discounts=discounts))
        product_remap = station_remap = None
        if update.delete_products:
            product_remap = [t.product_index.get(p.code, -1) for p in self.products]
        if update.delete_stations:
            station_remap = [t.station_index.get(s.station_id, -1) for s in self.stations]
        return t, product_remap, station_remap

    cdef void _check_chosen(self, list station_remap, set upserted) except *:
        """Every contract the update leaves alone still chooses known stations."""
        cdef Py_ssize_t i
        cdef int k
        for i in range(self.n_contracts):
            if i in upserted:
                continue
            for k in range(3):
                if self.cts[i].chosen[k] >= 0 and station_remap[self.cts[i].chosen[k]] < 0:
                    raise ModelError(f"contract {self._ct_id_at(i)} chose unknown station "
                                     f"{self.stations[self.cts[i].chosen[k]].station_id}")

    cdef void _check_limit_products(self, list product_remap, set upserted) except *:
        """No card the update leaves alone has a limit of a deleted product."""
        cdef Py_ssize_t i, k
        cdef LimitDef* d
        for i in range(self.n_cards):
            for k in range(self.cards[i].limit_start, self.cards[i].limit_start + self.cards[i].limit_count):
                d = &self.ldefs[self.lims[k].def_]
                if d.scope == SCOPE_PRODUCT and product_remap[d.scope_value] < 0 and i not in upserted:
                    raise ModelError(f"limit {d.id} names unknown product {self.products[d.scope_value].code!r}")

    cdef void _check_controls(self, dict product_index, tuple products, dict station_index, set upserted) except *:
        """Every card the update leaves alone keeps controls that hold with the new products
        and stations (check_card_rules)."""
        cdef Py_ssize_t i
        seen = set()
        for i in range(self.n_cards):
            if self.ctl[i] and i not in upserted and (self.ctl[i], self.cards[i].groups) not in seen:
                seen.add((self.ctl[i], self.cards[i].groups))
                check_card_rules(_controls_card(self.card_number(i), self.cards[i].groups,
                                                self._rule_keys[self.ctl[i]]),
                                 product_index, products, station_index)

    cdef void _take_small(self, tuple small) except *:
        t, product_remap, station_remap = small
        cdef Py_ssize_t i
        cdef int k
        if product_remap is not None:
            for i in range(self.n_defs):
                if self.ldefs[i].scope == SCOPE_PRODUCT:
                    # a definition no card uses may name a deleted product: it stays unused
                    self.ldefs[i].scope_value = max(product_remap[self.ldefs[i].scope_value], 0)
            self.def_index = None
        if station_remap is not None:
            for i in range(self.n_contracts):
                for k in range(3):
                    if self.cts[i].chosen[k] >= 0:
                        self.cts[i].chosen[k] = station_remap[self.cts[i].chosen[k]]
        self.products, self.stations, self.discounts = t.products, t.stations, t.discounts
        self.product_index, self.station_index = t.product_index, t.station_index
        self.n_stations, self.n_products = len(self.stations), len(self.products)
        self.prod_group = t.prod_group
        self.st_region, self.st_groups, self.st_max_fill, self.st_price = t.st_region, t.st_groups, t.st_max_fill, t.st_price
        self.disc_start, self.disc_count = t.disc_start, t.disc_count
        self.disc_where, self.disc_kind, self.disc_value = t.disc_where, t.disc_kind, t.disc_value
        self._limit_objs = [None] * self.n_defs

    def _apply_with_deletes(self, update):
        """An update that deletes cards or contracts: the tables packed anew without them,
        the rest of the update applied to the new tables, then taken over in one step."""
        cdef Py_ssize_t i, p
        skip_cards = bytearray(max(self.n_cards, 1))
        skip_cts = bytearray(max(self.n_contracts, 1))
        for no in update.delete_cards:
            p = self._card_pos(no) if type(no) is str else -1
            if p >= 0:
                skip_cards[p] = 1
        for cid in update.delete_contracts:
            p = self._contract_pos(cid)
            if p >= 0:
                skip_cts[p] = 1
        moved = {}
        for card, _ in update.cards:  # cards this update moves to another contract
            p = self._card_pos(card.card_no) if type(card.card_no) is str else -1
            if p >= 0:
                moved[p] = card.contract_id
        for i in range(self.n_cards):
            if not skip_cards[i] and skip_cts[self.cards[i].contract] and i not in moved:
                raise ModelError(f"card {mask_card_no(self.card_number(i))} of unknown contract "
                                 f"{self._ct_id_at(self.cards[i].contract)}")
        deleted = set(update.delete_contracts)
        for p, cid in moved.items():
            if cid in deleted:
                raise ModelError(f"card {mask_card_no(self.card_number(p))} of unknown contract {cid}")
        new = NativeFuelEvaluator(self._columns(skip_cards, skip_cts))
        new.apply(FuelUpdate(update.products, update.delete_products, update.stations, update.delete_stations,
                             update.tariffs, update.delete_tariffs, update.contracts, (), update.cards, (),
                             update.stop_listed, update.stop_unlisted))
        self._adopt(new)

    cdef void _adopt(self, NativeFuelEvaluator o):
        """Take every table of ``o`` (built from the updated replica) in one step; ``o`` is
        left empty."""
        PyMem_Free(self.cards)
        PyMem_Free(self.lims)
        PyMem_Free(self.ldefs)
        PyMem_Free(self.cts)
        PyMem_Free(self.ctl)
        self.cards, self.ctl, self.lims, self.ldefs, self.cts = o.cards, o.ctl, o.lims, o.ldefs, o.cts
        o.ctl = NULL
        o.cards = o.lims = NULL
        o.ldefs = NULL
        o.cts = NULL
        self.zones = o.zones
        self.n_cards, self.n_stations, self.n_products, self.n_contracts, self.n_defs = \
            o.n_cards, o.n_stations, o.n_products, o.n_contracts, o.n_defs
        self.n_lims = o.n_lims
        self.card_cap, self.lim_cap, self.ct_cap, self.def_cap = o.card_cap, o.lim_cap, o.ct_cap, o.def_cap
        self._free_rules()
        self.rules, self.rule_prod, self.rule_win, self.rule_st, self.n_rules = \
            o.rules, o.rule_prod, o.rule_win, o.rule_st, o.n_rules
        o.rules = o.rule_win = NULL
        o.rule_prod = o.rule_st = NULL
        self._rule_keys, self._rule_index, self._rule_checked = o._rule_keys, o._rule_index, o._rule_checked
        o.n_cards = o.n_contracts = 0
        o.n_lims = 0
        self.products, self.stations, self.discounts, self.tz_names = o.products, o.stations, o.discounts, o.tz_names
        self.product_index, self.station_index = o.product_index, o.station_index
        self.prod_group = o.prod_group
        self.st_region, self.st_groups, self.st_max_fill, self.st_price = o.st_region, o.st_groups, o.st_max_fill, o.st_price
        self.disc_start, self.disc_count = o.disc_start, o.disc_count
        self.disc_where, self.disc_kind, self.disc_value = o.disc_where, o.disc_kind, o.disc_value
        self.numbers, self.ct_ix, self.stop_ix = o.numbers, o.ct_ix, o.stop_ix
        self.stop_other, self.stop_changes, self._limit_objs = o.stop_other, o.stop_changes, o._limit_objs
        self.ct_extra, self.ct_ids_extra, self.ct_base = o.ct_extra, o.ct_ids_extra, o.ct_base
        self.def_index = o.def_index

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

    cdef inline bint _covers(self, const LimitDef* d, int32_t p) noexcept nogil:
        """authz.fuel_model.Limit.covers."""
        if d.unit == UNIT_ML and self.prod_group[p] != GROUP_FUEL:
            return False
        if d.scope == SCOPE_GROUP:
            return d.scope_value == self.prod_group[p]
        if d.scope == SCOPE_PRODUCT:
            return d.scope_value == p
        return True

    cdef inline int64_t _spent_now(self, const LimitRec* lim, const LimitDef* d, int64_t today,
                                   int64_t* pstart_week, int64_t* pstart_month) noexcept nogil:
        """authz.fuel.spent_in_period; the week's and month's starts are worked out once per
        decision (``-1``: not yet)."""
        cdef int64_t start
        cdef int8_t period = d.period
        if period == PERIOD_TXN:
            return 0
        if period == PERIOD_DAY:
            start = today
        elif period == PERIOD_WEEK:
            if pstart_week[0] < 0:
                pstart_week[0] = week_start(today)
            start = pstart_week[0]
        elif period == PERIOD_MONTH:
            if pstart_month[0] < 0:
                pstart_month[0] = month_start(today)
            start = pstart_month[0]
        else:
            start = period_start(period, today)
        return lim.spent if lim.pstart >= start else 0

    cdef inline int8_t _broken_controls(self, const RuleRec* r, int32_t ct, int32_t s, int32_t p,
                                        int64_t lsec) noexcept nogil:
        """authz.fuel.broken_controls as a bit set: 1 product list, 2 station, 4 time window."""
        cdef int8_t broken = 0
        cdef int32_t k
        cdef bint found
        cdef int64_t today, weekday, minute
        if r.prod_count and not _holds(self.rule_prod, r.prod_start, r.prod_count, p):
            broken |= 1
        if r.scope == STATION_HOME:
            if self.st_region[s] != self.cts[ct].region:
                broken |= 2
        elif r.scope == STATION_LISTED and not _holds(self.rule_st, r.st_start, r.st_count, s):
            broken |= 2
        if r.win_count:
            today = floordiv(lsec, 86400)
            weekday = today + 3 - floordiv(today + 3, 7) * 7  # 1970-01-01 was a Thursday
            minute = (lsec - today * 86400) // 60
            found = False
            for k in range(r.win_start, r.win_start + r.win_count):
                if window_contains(&self.rule_win[k], weekday, minute):
                    found = True
                    break
            if not found:
                broken |= 4
        return broken

    cdef void _decide(self, int32_t c, int32_t s, int32_t p, int64_t now, int64_t pv, int64_t pa,
                      FuelOut* o) noexcept nogil:
        """authz.fuel.authorize, on positions already checked. ``o.exc_id`` (when not NULL)
        receives the limit exceptions, room for one per limit of the card."""
        cdef int32_t ct, k
        cdef int64_t today, lsec, lp, price, volume, fits, left, amount, pstart_week, pstart_month
        cdef int8_t reason = R_OK, broken = 0
        cdef int8_t g = self.prod_group[p]
        cdef const LimitDef* d
        cdef const RuleRec* rule
        cdef const CardRec* card = &self.cards[c]
        o.volume = 0
        o.amount = 0
        o.price = 0
        o.list_price = 0
        o.binding = -1
        o.n_exc = 0
        o.ctl_exc = 0
        if card.flags & F_STOP:
            o.reason = R_STOP_LIST
            return
        if card.flags & F_BLOCKED:
            o.reason = R_CARD_BLOCKED
            return
        ct = card.contract
        lsec = self.zones.local_second(self.cts[ct].tz, now)
        today = floordiv(lsec, 86400)
        if today > card.expires:
            o.reason = R_CARD_EXPIRED
            return
        if not (card.groups >> g) & 1:
            o.reason = R_PRODUCT_NOT_ALLOWED
            return
        lp = self.st_price[s * self.n_products + p]
        if not (self.st_groups[s] >> g) & 1 or lp < 0:
            o.reason = R_PRODUCT_NOT_SOLD
            return
        if card.flags & F_CONTROLS:
            rule = &self.rules[self.ctl[c]]
            broken = self._broken_controls(rule, ct, s, p, lsec)
            if broken and rule.on_breach != ALERT:
                o.reason = R_PRODUCT_NOT_ALLOWED if broken & 1 else (
                    R_STATION_NOT_ALLOWED if broken & 2 else R_OUTSIDE_TIME_WINDOW)
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
        for k in range(card.limit_start, card.limit_start + card.limit_count):
            d = &self.ldefs[self.lims[k].def_]
            if d.on_breach == ALERT or not self._covers(d, p):
                continue
            left = d.amount - self._spent_now(&self.lims[k], d, today, &pstart_week, &pstart_month)
            if d.unit == UNIT_ML:
                fits = left if left > 0 else 0
            elif d.unit == UNIT_PURCHASES:
                if left > 0:
                    continue  # a count not yet reached never bounds the volume
                fits = 0
            elif amount > left:
                fits = max_volume_for_amount(left, price)
            else:
                continue
            if fits < volume:
                volume = fits
                amount = amount_for_volume(volume, price)
                reason = R_LIMIT
                o.binding = d.id
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
        elif broken or card.flags & F_ALERTS:
            o.ctl_exc = broken
            o.n_exc = (broken & 1) + ((broken >> 1) & 1) + ((broken >> 2) & 1)
            if card.flags & F_ALERTS:
                for k in range(card.limit_start, card.limit_start + card.limit_count):
                    d = &self.ldefs[self.lims[k].def_]
                    if d.on_breach != ALERT or not self._covers(d, p):
                        continue
                    left = d.amount - self._spent_now(&self.lims[k], d, today, &pstart_week, &pstart_month)
                    if d.unit == UNIT_PURCHASES:
                        if left > 0:
                            continue
                        fits = 0
                    elif d.unit == UNIT_ML:
                        fits = left if left > 0 else 0
                    else:
                        fits = max_volume_for_amount(left, price)
                    if fits < volume:
                        if o.exc_id != NULL:
                            o.exc_id[o.n_exc] = d.id
                            o.exc_reason[o.n_exc] = R_LIMIT if fits > 0 else R_LIMIT_EXHAUSTED
                        o.n_exc += 1
        o.reason = reason
        o.volume = volume
        o.amount = amount
        o.price = price
        o.list_price = lp


    # -- single calls --

    cdef tuple _positions(self, req):
        """Check a FuelRequest (authz.fuel.check_request, as authz.fuel._resolve does); its
        card, station, product positions."""
        check_request(req)
        c = self._card_pos(req.card_no)
        if c < 0:
            raise RequestError(f"unknown card {mask_card_no(req.card_no)}")
        s, p = station_product_positions(req, self.station_index, self.product_index)
        pv, pa = req.preset_volume_ml, req.preset_amount_kop
        return c, s, p, req.now_utc_s, pv or 0, pa or 0

    def authorize(self, req):
        """The largest volume and amount ``req`` may dispense, with the binding reason and
        the exceptions of the alerting rules the answer breaks."""
        cdef FuelOut o
        cdef int64_t ids[64]
        cdef int8_t reasons[64]
        cdef int32_t i, n_ctl
        c, s, p, now, pv, pa = self._positions(req)
        cdef Py_ssize_t room = 3 + self.cards[<Py_ssize_t>c].limit_count
        o.exc_id, o.exc_reason = ids, reasons
        if room > 64:
            o.exc_id = <int64_t*>PyMem_Malloc(room * sizeof(int64_t))
            o.exc_reason = <int8_t*>PyMem_Malloc(room)
            if o.exc_id == NULL or o.exc_reason == NULL:
                PyMem_Free(o.exc_id)
                PyMem_Free(o.exc_reason)
                raise MemoryError("no memory for a decision's exceptions")
        try:
            self._decide(c, s, p, now, pv, pa, &o)
            exceptions = ()
            if o.n_exc:
                out = []
                if o.ctl_exc & 1:
                    out.append(EXC_PRODUCT)
                if o.ctl_exc & 2:
                    out.append(EXC_STATION)
                if o.ctl_exc & 4:
                    out.append(EXC_WINDOW)
                n_ctl = len(out)
                for i in range(n_ctl, o.n_exc):
                    out.append(RuleException(REASONS[o.exc_reason[i]], o.exc_id[i]))
                exceptions = tuple(out)
        finally:
            if room > 64:
                PyMem_Free(o.exc_id)
                PyMem_Free(o.exc_reason)
        return _build(F_DECISION, (REASONS[o.reason], o.volume, o.amount, o.price,
                      o.list_price, None if o.binding == -1 else o.binding, exceptions))

    def complete(self, req, decision, delivered_volume_ml):
        """Charge a delivery under ``decision`` and apply it to balances and counters
        (authz.fuel.complete)."""
        cdef int32_t c, p, ct, k
        cdef int64_t today, start, amount, delivered
        cdef const LimitDef* d
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
            d = &self.ldefs[self.lims[k].def_]
            if d.period == PERIOD_TXN or not self._covers(d, p):
                continue
            if d.unit == UNIT_PURCHASES and delivered == 0:
                continue  # nothing delivered: not a purchase (authz.fuel.count_delivery)
            start = period_start(d.period, today)
            if self.lims[k].pstart < start:
                self.lims[k].pstart = start
                self.lims[k].spent = 0
            self.lims[k].spent += delivered if d.unit == UNIT_ML else (1 if d.unit == UNIT_PURCHASES else amount)
            after.append((d.id, LimitCounter(self.lims[k].spent, self.lims[k].pstart)))
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
        cdef uint8_t[::1] r_exc = out.exceptions
        cdef FuelOut o
        cdef CardRec* ahead
        o.exc_id = NULL  # exceptions counted, not listed
        o.exc_reason = NULL
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
                        if ahead.flags & F_CONTROLS:
                            __builtin_prefetch(&self.ctl[bc[i + 8]])
                    self._decide(bc[i], bs[i], bp[i], bn[i], bv[i], ba[i], &o)
                    r_reason[i] = o.reason
                    r_vol[i] = o.volume
                    r_amt[i] = o.amount
                    r_price[i] = o.price
                    r_bind[i] = o.binding
                    r_exc[i] = <uint8_t>o.n_exc if o.n_exc < 255 else 255
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
        cdef const LimitDef* d
        with nogil:
            for i in range(n):
                c = bc[i]
                ct = self.cards[c].contract
                acc += bn[i] + self.cards[c].flags + self.cards[c].expires \
                    + self.cards[c].groups + self.cts[ct].tz + self.cts[ct].balance + self.cts[ct].credit \
                    + self.cts[ct].tariff + self.st_price[bs[i] * self.n_products + bp[i]] + self.prod_group[bp[i]]
                if self.cards[c].flags & F_CONTROLS:
                    acc += self.rules[self.ctl[c]].scope
                for k in range(self.cards[c].limit_start, self.cards[c].limit_start + self.cards[c].limit_count):
                    d = &self.ldefs[self.lims[k].def_]
                    acc += d.amount + self.lims[k].spent + self.lims[k].pstart + d.unit
        return acc

    def balance_kop(self, contract_id):
        """The contract's balance now (after local completions)."""
        cdef Py_ssize_t i = self._contract_pos(contract_id)
        if i < 0:
            raise KeyError(contract_id)
        return self.cts[i].balance

    def counter(self, card_no, limit_id):
        """The card limit's counter now, or None when it never counted anything."""
        cdef Py_ssize_t c = self._card_pos(card_no)
        cdef int32_t k
        cdef const LimitDef* d
        if c < 0:
            raise KeyError(card_no)
        for k in range(self.cards[c].limit_start, self.cards[c].limit_start + self.cards[c].limit_count):
            d = &self.ldefs[self.lims[k].def_]
            if d.id == limit_id:
                if self.lims[k].pstart == NO_PERIOD_:
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


cdef struct ClubCardRec:
    int32_t account
    int8_t status


cdef struct AccountRec:
    int64_t balance
    int64_t turnover
    int32_t tmonth
    int32_t first_lot    # the oldest lot (by expiry, then id), -1: none
    int8_t kind
    int8_t activated
    int8_t status


cdef struct LotRec:
    int64_t id
    int64_t points
    int64_t matures
    int64_t expires
    int32_t next         # the account's next lot (or the next free slot), -1: none


cdef struct LotOrder:
    int64_t expires
    int64_t id
    int32_t row


cdef int _cmp_lot(const void* a, const void* b) noexcept nogil:
    """(expiry, id) order; the row breaks ties, so equal lots keep the model's order (a stable
    sort, as authz.club_model.ClubState.from_model's sorted())."""
    cdef const LotOrder* x = <const LotOrder*>a
    cdef const LotOrder* y = <const LotOrder*>b
    if x.expires != y.expires:
        return -1 if x.expires < y.expires else 1
    if x.id != y.id:
        return -1 if x.id < y.id else 1
    return -1 if x.row < y.row else (1 if x.row > y.row else 0)


cdef tuple CLUB_KINDS = tuple(ClubCardKind(i) for i in range(len(ClubCardKind)))
cdef tuple CLUB_STATUSES = tuple(ClubStatus(i) for i in range(len(ClubStatus)))


cdef class NativeClubEvaluator:
    """Club decisions from the packed tables of a ClubModel or of ClubColumns (the compact
    replica, native.compact); accounts and their point lots (a pool of linked lists, oldest
    first) live in the tables and are changed by commits, returns and top-ups."""

    cdef object _model
    cdef readonly str name
    cdef readonly object rules
    cdef readonly dict category_index, channel_index, method_index
    cdef _Zones zones
    cdef int32_t tz, n_cards, n_accounts, n_cats, n_channels, n_methods
    cdef int64_t cap_bp, maturity_s, expiry_months
    cdef const int8_t[::1] cat_accrues, cat_redeemable
    cdef const int64_t[::1] rate, cap_balance, cap_turnover
    # cards, accounts and lots as arrays of structs
    cdef ClubCardRec* cards
    cdef AccountRec* accs
    cdef LotRec* lots
    cdef Py_ssize_t lot_cap, lot_top   # slots allocated; slots ever used (those above were never touched)
    cdef int32_t free_lot              # slots freed by emptied lots, chained through ``next``
    # numbers -> positions: the fuel evaluator's index (_CardNumbers); account ids by key
    cdef _CardNumbers numbers
    cdef _KeyIndex acc_ix
    # run-time upserts (apply): room allocated, and the accounts appended since the tables
    # were packed (positions from acc_base on)
    cdef Py_ssize_t card_cap, acc_cap, acc_base
    cdef dict acc_extra
    cdef object acc_ids_extra
    cdef public bint _state_lots  # packing this site's own lots, not the host's rows

    def __cinit__(self):
        self.cards = NULL
        self.accs = NULL
        self.lots = NULL

    def __dealloc__(self):
        PyMem_Free(self.cards)
        PyMem_Free(self.accs)
        PyMem_Free(self.lots)

    def __init__(self, source):
        """``source``: a ClubModel, or ClubColumns (the compact replica). The columns are
        copied into the packed tables; only their card_key and acc_id arrays stay referenced
        (as the indexes), so drop the columns once the evaluator is built."""
        if isinstance(source, ClubModel):
            cols = ClubColumns.from_model(source)
            self._model = source
        elif isinstance(source, ClubColumns):
            cols = source
            self._model = None
        else:
            raise TypeError(f"a club evaluator needs a ClubModel or ClubColumns, got {type(source).__name__}")
        t = ClubTables(cols.rules)
        r = self.rules = t.rules
        self.name = "native"
        self.category_index, self.channel_index, self.method_index = t.category_index, t.channel_index, t.method_index
        self.zones = _Zones(t.tz)
        self.tz = t.tz_index
        self.n_cats = len(r.categories)
        self.n_channels, self.n_methods = len(r.channels), len(r.payment_methods)
        self.cap_bp, self.maturity_s, self.expiry_months = r.redemption_cap_bp, r.maturity_s, r.expiry_months
        self.cat_accrues, self.cat_redeemable = t.cat_accrues, t.cat_redeemable
        self.rate, self.cap_balance, self.cap_turnover = t.rate, t.cap_balance, t.cap_turnover
        self._pack_accounts(cols)
        self._pack_lots(cols)
        self._pack_cards(cols)
        self.card_cap = self.n_cards
        self.acc_cap = self.acc_base = self.n_accounts
        self.acc_extra = {}
        self.acc_ids_extra = _pyarray("q")

    @property
    def model(self):
        """The ClubModel decided on: the one this evaluator was built from, or (built from
        columns) a :class:`native.compact.CompactClubModel` view over its tables."""
        return self._model if self._model is not None else CompactClubModel(self)

    # -- packing (the columns' checks are those of ClubModel.__init__, on positions) --

    cdef void _pack_accounts(self, cols) except *:
        cdef Py_ssize_t n = len(cols.acc_id), i
        if not (len(cols.acc_kind) == len(cols.acc_activated) == len(cols.acc_status) == len(cols.acc_balance)
                == len(cols.acc_tmonth) == len(cols.acc_turnover) == len(cols.acc_nlots) == n):
            raise ModelError("account columns differ in length")
        cdef const int64_t[::1] aid = cols.acc_id, balance = cols.acc_balance, turnover = cols.acc_turnover
        cdef const int8_t[::1] kind = cols.acc_kind, activated = cols.acc_activated, status = cols.acc_status
        cdef const int32_t[::1] tmonth = cols.acc_tmonth
        self.acc_ix = _KeyIndex(cols.acc_id, False)
        if self.acc_ix.duplicate is not None:
            raise ModelError(f"duplicate account {self.acc_ix.duplicate!r}")
        self.n_accounts = <int32_t>n
        self.accs = <AccountRec*>PyMem_Malloc(max(n, 1) * sizeof(AccountRec))
        if self.accs == NULL:
            raise MemoryError("no memory for the club tables")
        for i in range(n):
            if not (0 <= kind[i] <= 1 and 0 <= activated[i] <= 1 and 0 <= status[i] <= 1):
                raise ModelError(f"account {aid[i]}: kind, activation or status out of range")
            if not -MAX_AMOUNT <= balance[i] <= MAX_AMOUNT:
                raise ModelError(f"account {aid[i]} balance out of range")
            self.accs[i].balance = balance[i]
            self.accs[i].turnover = turnover[i]
            self.accs[i].tmonth = tmonth[i]
            self.accs[i].first_lot = -1
            self.accs[i].kind = kind[i]
            self.accs[i].activated = activated[i]
            self.accs[i].status = status[i]

    cdef void _pack_lots(self, cols) except *:
        """Each account's lots, sorted oldest first, side by side in the pool and linked. The
        pool has room for half as many again, never touched until a new lot needs a slot (so
        it costs address space, not memory); it grows when full."""
        cdef Py_ssize_t n = len(cols.lot_id), i, k, row = 0, most = 0, cap
        if not (len(cols.lot_points) == len(cols.lot_matures) == len(cols.lot_expires) == n):
            raise ModelError("lot columns differ in length")
        cdef const int64_t[::1] lid = cols.lot_id, points = cols.lot_points
        cdef const int64_t[::1] matures = cols.lot_matures, expires = cols.lot_expires
        cdef const int32_t[::1] nlots = cols.acc_nlots
        cdef const int64_t[::1] aid = cols.acc_id
        cdef LotOrder* order = NULL
        for i in range(self.n_accounts):
            if nlots[i] < 0:
                raise ModelError(f"account {aid[i]}: a negative lot count")
            row += nlots[i]
            if nlots[i] > most:
                most = nlots[i]
        if row != n:
            raise ModelError(f"acc_nlots adds up to {row}, but there are {n} lot rows")
        if n >= 2**30:
            raise ModelError("too many lots for one table")
        cap = n + n // 2 + 64
        self.lots = <LotRec*>PyMem_Malloc(cap * sizeof(LotRec))
        order = <LotOrder*>PyMem_Malloc(max(most, 1) * sizeof(LotOrder))
        if self.lots == NULL or order == NULL:
            PyMem_Free(order)
            raise MemoryError("no memory for the club tables")
        self.lot_cap = cap
        row = 0
        try:
            for i in range(self.n_accounts):
                for k in range(nlots[i]):
                    if points[row + k] <= 0 or (matures[row + k] > expires[row + k] and not self._state_lots):
                        raise ModelError(f"account {aid[i]} has a malformed lot "
                                         f"{PointLot(lid[row + k], points[row + k], matures[row + k], expires[row + k])}")
                    order[k].expires, order[k].id, order[k].row = expires[row + k], lid[row + k], <int32_t>(row + k)
                if nlots[i] > 1:
                    qsort(order, nlots[i], sizeof(LotOrder), _cmp_lot)
                for k in range(nlots[i]):
                    self.lots[row + k].id = lid[order[k].row]
                    self.lots[row + k].points = points[order[k].row]
                    self.lots[row + k].matures = matures[order[k].row]
                    self.lots[row + k].expires = expires[order[k].row]
                    self.lots[row + k].next = <int32_t>(row + k + 1) if k + 1 < nlots[i] else -1
                self.accs[i].first_lot = <int32_t>row if nlots[i] else -1
                row += nlots[i]
        finally:
            PyMem_Free(order)
        self.lot_top = n
        self.free_lot = -1

    cdef void _pack_cards(self, cols) except *:
        cdef Py_ssize_t n = len(cols.card_key), i
        if not (len(cols.card_account) == len(cols.card_status) == n):
            raise ModelError("club card columns differ in length")
        cdef const int32_t[::1] account = cols.card_account
        cdef const int8_t[::1] status = cols.card_status
        self.numbers = _CardNumbers(cols, "club card")
        self.n_cards = <int32_t>n
        self.cards = <ClubCardRec*>PyMem_Malloc(max(n, 1) * sizeof(ClubCardRec))
        if self.cards == NULL:
            raise MemoryError("no memory for the club tables")
        for i in range(n):
            if not 0 <= account[i] < self.n_accounts:
                raise ModelError(f"club card {mask_card_no(cols.card_no(i))} of unknown account (position {account[i]})")
            if not 0 <= status[i] <= 1:
                raise ModelError(f"club card {mask_card_no(cols.card_no(i))}: status out of range")
            self.cards[i].account = account[i]
            self.cards[i].status = status[i]

    cdef void _reserve_lot(self) except *:
        """Make sure one free lot slot exists: a freed one, else the next never used, else
        the pool grows by half."""
        cdef Py_ssize_t cap
        cdef LotRec* grown
        if self.free_lot >= 0:
            return
        if self.lot_top == self.lot_cap:
            cap = self.lot_cap + self.lot_cap // 2 + 64
            if cap >= 2**31 - 1:
                raise MemoryError("the club lot pool is full")
            grown = <LotRec*>PyMem_Realloc(self.lots, cap * sizeof(LotRec))
            if grown == NULL:
                raise MemoryError("no memory for the club lot pool")
            self.lots = grown
            self.lot_cap = cap
        self.lots[self.lot_top].next = -1
        self.free_lot = <int32_t>self.lot_top
        self.lot_top += 1

    # -- numbers, ids and positions --

    cdef Py_ssize_t _card_pos(self, card_no) except? -2:
        """The position of club card ``card_no`` (a str), or -1."""
        return self.numbers.pos(card_no)

    cdef Py_ssize_t _account_pos(self, account_id) except? -2:
        if type(account_id) is float and account_id.is_integer():
            account_id = int(account_id)  # as a dict keyed by int finds it
        if not isinstance(account_id, int) or not -2**63 <= account_id < 2**63:
            return -1
        cdef Py_ssize_t a = self.acc_ix.find(account_id)
        if a < 0 and self.acc_extra:
            return self.acc_extra.get(account_id, -1)
        return a

    @property
    def card_count(self):
        """Club cards in the replica."""
        return self.n_cards

    @property
    def account_count(self):
        """Accounts in the replica."""
        return self.n_accounts

    @property
    def lot_count(self):
        """Point lots the accounts hold now."""
        cdef Py_ssize_t a, n = 0
        cdef int32_t k
        for a in range(self.n_accounts):
            k = self.accs[a].first_lot
            while k >= 0:
                n += 1
                k = self.lots[k].next
        return n

    def nbytes(self):
        """Bytes of the packed tables and indexes (the card_key and acc_id arrays and the lot
        slots ever used included; the rules and the pool's never-touched room not)."""
        return (self.n_cards * sizeof(ClubCardRec) + self.n_accounts * sizeof(AccountRec)
                + self.lot_top * sizeof(LotRec) + self.numbers.nbytes() + self.acc_ix.nbytes())

    def card_position(self, card_no):
        """The position of club card ``card_no``, or None when the replica has no such card."""
        c = self._card_pos(card_no)
        return None if c < 0 else c

    def account_position(self, account_id):
        """The position of account ``account_id``, or None."""
        a = self._account_pos(account_id)
        return None if a < 0 else a

    def card_number(self, Py_ssize_t i):
        """The number of the club card at position ``i``."""
        if not 0 <= i < self.n_cards:
            raise IndexError("club card position out of range")
        return self.numbers.number(i)

    def card_at(self, Py_ssize_t i):
        """The club card at position ``i`` as a ClubCard (made now)."""
        no = self.card_number(i)
        return ClubCard(no, self._acc_id_at(self.cards[i].account), CLUB_STATUSES[self.cards[i].status])

    cdef list _lots(self, int32_t a):
        cdef int32_t k = self.accs[a].first_lot
        out = []
        while k >= 0:
            out.append(PointLot(self.lots[k].id, self.lots[k].points, self.lots[k].matures, self.lots[k].expires))
            k = self.lots[k].next
        return out

    def account_at(self, Py_ssize_t i):
        """The account at position ``i`` as a ClubAccount with its balance, turnover and lots
        (oldest first) now."""
        if not 0 <= i < self.n_accounts:
            raise IndexError("account position out of range")
        cdef AccountRec* acc = &self.accs[i]
        return ClubAccount(self._acc_id_at(i), CLUB_KINDS[acc.kind], acc.activated != 0, CLUB_STATUSES[acc.status],
                           acc.balance, acc.tmonth, acc.turnover, tuple(self._lots(<int32_t>i)))

    def columns(self):
        """The replica now (balances, turnover and lots with this site's operations) as
        ClubColumns, each account's lots oldest first: the columns it was built from as long
        as nothing changed and their lots were in that order."""
        return self._columns(None, None)

    def _columns(self, skip_accounts, skip_cards):
        """The columns of every account and card but those whose position is set in the byte
        masks ``skip_accounts`` / ``skip_cards`` (None: skip none)."""
        cdef Py_ssize_t i, j, n = self.n_accounts, nc = self.n_cards, nl = 0, r = 0, m = 0, mc = 0
        cdef int32_t k
        cdef bytearray no_skip = bytearray(max(n, nc, 1))
        cdef const uint8_t[::1] ska = no_skip if skip_accounts is None else skip_accounts
        cdef const uint8_t[::1] skc = no_skip if skip_cards is None else skip_cards
        cdef carray.array remap = carray.clone(_I, max(n, 1), False)
        for i in range(n):
            remap.data.as_ints[i] = -1 if ska[i] else <int32_t>m
            if not ska[i]:
                m += 1
                k = self.accs[i].first_lot
                while k >= 0:
                    nl += 1
                    k = self.lots[k].next
        for i in range(nc):
            if not skc[i]:
                mc += 1
        cdef carray.array a_id = carray.clone(_Q, m, False)
        cdef carray.array a_kind = carray.clone(_B, m, False), a_act = carray.clone(_B, m, False)
        cdef carray.array a_status = carray.clone(_B, m, False), a_balance = carray.clone(_Q, m, False)
        cdef carray.array a_tmonth = carray.clone(_I, m, False), a_turnover = carray.clone(_Q, m, False)
        cdef carray.array a_nlots = carray.clone(_I, m, False)
        cdef carray.array l_id = carray.clone(_Q, nl, False), l_points = carray.clone(_Q, nl, False)
        cdef carray.array l_matures = carray.clone(_Q, nl, False), l_expires = carray.clone(_Q, nl, False)
        cdef carray.array c_key = carray.clone(_Q, mc, False)
        cdef carray.array c_account = carray.clone(_I, mc, False), c_status = carray.clone(_B, mc, False)
        j = 0
        for i in range(n):
            if ska[i]:
                continue
            a_id.data.as_longlongs[j] = self._acc_id_at(i)
            a_kind.data.as_schars[j] = self.accs[i].kind
            a_act.data.as_schars[j] = self.accs[i].activated
            a_status.data.as_schars[j] = self.accs[i].status
            a_balance.data.as_longlongs[j] = self.accs[i].balance
            a_tmonth.data.as_ints[j] = self.accs[i].tmonth
            a_turnover.data.as_longlongs[j] = self.accs[i].turnover
            a_nlots.data.as_ints[j] = 0
            k = self.accs[i].first_lot
            while k >= 0:
                l_id.data.as_longlongs[r] = self.lots[k].id
                l_points.data.as_longlongs[r] = self.lots[k].points
                l_matures.data.as_longlongs[r] = self.lots[k].matures
                l_expires.data.as_longlongs[r] = self.lots[k].expires
                r += 1
                a_nlots.data.as_ints[j] += 1
                k = self.lots[k].next
            j += 1
        other = {}
        j = 0
        for i in range(nc):
            if skc[i]:
                continue
            c_key.data.as_longlongs[j] = self.numbers.key_at(i)
            if c_key.data.as_longlongs[j] == 0:
                other[j] = self.numbers.other_by_pos[i]
            c_account.data.as_ints[j] = remap.data.as_ints[self.cards[i].account]
            c_status.data.as_schars[j] = self.cards[i].status
            j += 1
        return ClubColumns(
            rules=self.rules, card_other=other,
            acc_id=a_id, acc_kind=a_kind, acc_activated=a_act, acc_status=a_status,
            acc_balance=a_balance, acc_tmonth=a_tmonth, acc_turnover=a_turnover, acc_nlots=a_nlots,
            lot_id=l_id, lot_points=l_points, lot_matures=l_matures, lot_expires=l_expires,
            card_key=c_key, card_account=c_account, card_status=c_status)

    # -- updates from the host (authz.update) --


    cdef inline int64_t _acc_id_at(self, Py_ssize_t i):
        """The id of the account at position ``i``."""
        if i < self.acc_base:
            return self.acc_ix.key_at(i)
        return self.acc_ids_extra[i - self.acc_base]

    def apply(self, update):
        """Apply the host's ``update`` (an authz.update.ClubUpdate) now: the next decision
        sees it (the rules: authz.update). A ModelError refuses the whole update and changes
        nothing.

        Upserts are made in place: a known account or card is overwritten where it is (an
        account's lots go back to the pool and the host's are linked in), a new one appended
        (its key in a small index beside the packed one); new rules rebuild the small
        tables. An update that deletes an account, or drops a card from its account's row,
        packs the tables anew without them (positions after them move up, as in the
        reference)."""
        if not isinstance(update, ClubUpdate):
            raise TypeError(f"expected a ClubUpdate, got {type(update).__name__}")
        check_club_update(update)
        cdef Py_ssize_t i, pos, next_acc = self.n_accounts, next_card = self.n_cards, n_lots = 0
        t = ClubTables(update.rules) if update.rules is not None else None
        acc_plan = []
        acc_new = {}
        rewritten = set()
        listed = set()
        for account, cards in update.accounts:
            if not isinstance(account, ClubAccount):
                raise ModelError(f"a club account row must be a ClubAccount, got {type(account).__name__}")
            aid = account.account_id
            if type(aid) is not int or not -2**63 <= aid < 2**63:
                raise ModelError(f"account id {aid!r} is not a 64-bit integer")
            if not (0 <= account.kind <= 1 and 0 <= account.status <= 1):
                raise ModelError(f"account {aid}: kind or status out of range")
            if type(account.balance_kop) is not int or not -MAX_AMOUNT <= account.balance_kop <= MAX_AMOUNT:
                raise ModelError(f"account {aid} balance out of range")
            if type(account.turnover_month) is not int or not -2**31 <= account.turnover_month < 2**31 \
                    or type(account.turnover_kop) is not int or not -2**63 <= account.turnover_kop < 2**63:
                raise ModelError(f"account {aid}: turnover out of range")
            lots = []
            for lot in account.lots:
                if type(lot.points) is not int or lot.points <= 0 or lot.matures_at_s > lot.expires_at_s:
                    raise ModelError(f"account {aid} has a malformed lot {lot}")
                for v in (lot.lot_id, lot.points, lot.matures_at_s, lot.expires_at_s):
                    if type(v) is not int or not -2**63 <= v < 2**63:
                        raise ModelError(f"account {aid} has a malformed lot {lot}")
                lots.append((lot.lot_id, lot.points, lot.matures_at_s, lot.expires_at_s))
            n_lots += len(lots)
            pos = self._account_pos(aid)
            if pos < 0:
                pos = next_acc
                next_acc += 1
                acc_new[aid] = pos
            else:
                rewritten.add(pos)
            card_plan = []
            for c in cards:
                if type(c.card_no) is not str or not c.card_no or not 0 <= c.status <= 1:
                    raise ModelError(f"club card {mask_card_no(c.card_no)}: number or status malformed")
                cpos = self._card_pos(c.card_no)
                if cpos < 0:
                    cpos = next_card
                    next_card += 1
                listed.add(cpos)
                card_plan.append((cpos, c.card_no, int(c.status)))
            acc_plan.append((pos, account, lots, card_plan))
        if update.delete_accounts:
            self._apply_with_deletes(update, rewritten, listed)
            return
        if rewritten and self._drops_cards(rewritten, listed):  # a card dropped from its account's row
            self._apply_with_deletes(update, rewritten, listed)
            return
        # -- make room (a MemoryError here leaves the tables as they were) --
        self._reserve(next_acc, next_card, n_lots)
        # -- apply: nothing below can fail --
        if t is not None:
            self._take_rules(t)
        for pos, account, lots, card_plan in acc_plan:
            if pos >= self.n_accounts:
                self.acc_ids_extra.append(account.account_id)
                self.acc_extra[account.account_id] = pos
                self.accs[pos].first_lot = -1
                self.n_accounts += 1
            self._write_account(pos, account, lots)
            for cpos, no, status in card_plan:
                if cpos >= self.n_cards:
                    self.numbers.append(no, cpos)
                    self.n_cards += 1
                self.cards[cpos].account = <int32_t>pos
                self.cards[cpos].status = <int8_t>status
        self._model = None  # the model it was built from is history now: ``model`` is the view

    cdef bint _drops_cards(self, set rewritten, set listed) except -1:
        """Does a card of a ``rewritten`` account (positions) miss from ``listed`` (card
        positions)? One pass over the card table in C."""
        cdef bytearray acc_mask = bytearray(max(self.n_accounts, 1)), card_mask = bytearray(max(self.n_cards, 1))
        cdef unsigned char* am = acc_mask
        cdef unsigned char* cm = card_mask
        cdef Py_ssize_t i
        for i in rewritten:
            am[i] = 1
        for i in listed:
            if i < self.n_cards:
                cm[i] = 1
        for i in range(self.n_cards):
            if am[self.cards[i].account] and not cm[i]:
                return True
        return False

    cdef void _reserve(self, Py_ssize_t n_accounts, Py_ssize_t n_cards, Py_ssize_t n_lots) except *:
        """Room for this many accounts and cards, and ``n_lots`` more lots."""
        if n_accounts > self.acc_cap:
            cap = max(n_accounts, self.acc_cap + self.acc_cap // 2 + 16)
            self.accs = <AccountRec*>_grown(self.accs, cap, sizeof(AccountRec), "no memory for the club tables")
            self.acc_cap = cap
        if n_cards > self.card_cap:
            cap = max(n_cards, self.card_cap + self.card_cap // 2 + 16)
            self.cards = <ClubCardRec*>_grown(self.cards, cap, sizeof(ClubCardRec), "no memory for the club tables")
            self.card_cap = cap
        if self.lot_top + n_lots > self.lot_cap:
            cap = self.lot_top + n_lots + self.lot_cap // 2 + 64
            if cap >= 2**31 - 1:
                raise MemoryError("the club lot pool is full")
            self.lots = <LotRec*>_grown(self.lots, cap, sizeof(LotRec), "no memory for the club lot pool")
            self.lot_cap = cap

    cdef void _write_account(self, Py_ssize_t a, account, list lots) except *:
        """Account ``a`` as the host's row: its old lots back to the pool, the row's linked
        in oldest first (equal lots in row order, as a stable sort)."""
        cdef int32_t k = self.accs[a].first_lot, nxt
        while k >= 0:
            nxt = self.lots[k].next
            self.lots[k].next = self.free_lot
            self.free_lot = k
            k = nxt
        self.accs[a].first_lot = -1
        self.accs[a].balance = account.balance_kop
        self.accs[a].turnover = account.turnover_kop
        self.accs[a].tmonth = account.turnover_month
        self.accs[a].kind = int(account.kind)
        self.accs[a].activated = 1 if account.activated else 0
        self.accs[a].status = int(account.status)
        for lot_id, points, matures, expires in lots:
            self._add_lot(<int32_t>a, lot_id, points, matures, expires)

    cdef void _take_rules(self, t) except *:
        r = self.rules = t.rules
        self.category_index, self.channel_index, self.method_index = t.category_index, t.channel_index, t.method_index
        self.zones = _Zones(t.tz)
        self.tz = t.tz_index
        self.n_cats = len(r.categories)
        self.n_channels, self.n_methods = len(r.channels), len(r.payment_methods)
        self.cap_bp, self.maturity_s, self.expiry_months = r.redemption_cap_bp, r.maturity_s, r.expiry_months
        self.cat_accrues, self.cat_redeemable = t.cat_accrues, t.cat_redeemable
        self.rate, self.cap_balance, self.cap_turnover = t.rate, t.cap_balance, t.cap_turnover

    def _apply_with_deletes(self, update, set rewritten, set listed):
        """An update that deletes accounts or drops cards: the tables packed anew without
        them, the rest of the update applied to the new tables, then taken over in one step."""
        cdef Py_ssize_t i, p
        skip_accs = bytearray(max(self.n_accounts, 1))
        skip_cards = bytearray(max(self.n_cards, 1))
        for aid in update.delete_accounts:
            p = self._account_pos(aid)
            if p >= 0:
                skip_accs[p] = 1
        for i in range(self.n_cards):
            # the cards of a deleted account go (a row of this update may bring one back),
            # and those dropped from their account's row
            if skip_accs[self.cards[i].account] or (i not in listed and self.cards[i].account in rewritten):
                skip_cards[i] = 1
        new = NativeClubEvaluator.__new__(NativeClubEvaluator)
        new._state_lots = True  # this site's lots (one that expires before it matures is legal state)
        new.__init__(self._columns(skip_accs, skip_cards))
        new.apply(ClubUpdate(update.rules, update.accounts, ()))
        self._adopt(new)

    cdef void _adopt(self, NativeClubEvaluator o):
        """Take every table of ``o`` (built from the updated replica) in one step; ``o`` is
        left empty."""
        PyMem_Free(self.cards)
        PyMem_Free(self.accs)
        PyMem_Free(self.lots)
        self.cards, self.accs, self.lots = o.cards, o.accs, o.lots
        o.cards = NULL
        o.accs = NULL
        o.lots = NULL
        self._model, self.rules = o._model, o.rules
        self.category_index, self.channel_index, self.method_index = o.category_index, o.channel_index, o.method_index
        self.zones = o.zones
        self.tz, self.n_cards, self.n_accounts, self.n_cats, self.n_channels, self.n_methods = \
            o.tz, o.n_cards, o.n_accounts, o.n_cats, o.n_channels, o.n_methods
        o.n_cards = o.n_accounts = 0
        self.cap_bp, self.maturity_s, self.expiry_months = o.cap_bp, o.maturity_s, o.expiry_months
        self.cat_accrues, self.cat_redeemable = o.cat_accrues, o.cat_redeemable
        self.rate, self.cap_balance, self.cap_turnover = o.rate, o.cap_balance, o.cap_turnover
        self.lot_cap, self.lot_top, self.free_lot = o.lot_cap, o.lot_top, o.free_lot
        o.lot_cap = o.lot_top = 0
        self.numbers, self.acc_ix = o.numbers, o.acc_ix
        self.card_cap, self.acc_cap, self.acc_base = o.card_cap, o.acc_cap, o.acc_base
        self.acc_extra, self.acc_ids_extra = o.acc_extra, o.acc_ids_extra

    # -- the rules (authz.club) --

    cdef inline bint _blocked(self, int32_t c) noexcept nogil:
        return self.cards[c].status == BLOCKED or self.accs[self.cards[c].account].status == BLOCKED

    cdef inline int64_t _spendable(self, int32_t a, int64_t now) noexcept nogil:
        """authz.club.spendable_points."""
        cdef int64_t total = 0
        cdef int32_t k = self.accs[a].first_lot
        while k >= 0:
            if self.lots[k].matures <= now < self.lots[k].expires:
                total += self.lots[k].points
            k = self.lots[k].next
        return total

    cdef inline int64_t _cap_points(self, Totals* t) noexcept nogil:
        """authz.club.redemption_cap_points."""
        return t.redeemable * self.cap_bp // 1000000

    cdef inline int64_t _turnover(self, int32_t a, int64_t month) noexcept nogil:
        return self.accs[a].turnover if self.accs[a].tmonth >= month else 0

    cdef void _quote(self, int32_t c, int64_t now, int64_t rate, Totals* t, QuoteOut* o) noexcept nogil:
        """authz.club.quote, on a checked request."""
        cdef int32_t a = self.cards[c].account
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
        o.balance = self.accs[a].balance

    cdef void _unlink_empty(self, int32_t a):
        """Drop the account's lots that have no points left (authz.club._take_points)."""
        cdef int32_t k = self.accs[a].first_lot, prev = -1, nxt
        while k >= 0:
            nxt = self.lots[k].next
            if self.lots[k].points == 0:
                if prev < 0:
                    self.accs[a].first_lot = nxt
                else:
                    self.lots[prev].next = nxt
                self.lots[k].next = self.free_lot
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
            k = self.accs[a].first_lot
            while k >= 0 and points > 0:
                if has_first and ((self.lots[k].id == first_lot) != (pass_ == 0)):
                    k = self.lots[k].next
                    continue
                if now < self.lots[k].expires and not (spendable_only and now < self.lots[k].matures):
                    n = points if points < self.lots[k].points else self.lots[k].points
                    if n:
                        self.lots[k].points -= n
                        used.append((self.lots[k].id, n))
                        points -= n
                        taken += n
                k = self.lots[k].next
        self._unlink_empty(a)
        return taken

    cdef void _add_lot(self, int32_t a, int64_t lot_id, int64_t points, int64_t matures, int64_t expires) except *:
        """authz.club._add_lot: insert keeping (expiry, id) order; after the last equal key."""
        self._reserve_lot()
        cdef int32_t k = self.free_lot, cur = self.accs[a].first_lot, prev = -1
        self.free_lot = self.lots[k].next
        self.lots[k].id, self.lots[k].points, self.lots[k].matures, self.lots[k].expires = lot_id, points, matures, expires
        while cur >= 0 and (self.lots[cur].expires < expires or
                            (self.lots[cur].expires == expires and self.lots[cur].id <= lot_id)):
            prev = cur
            cur = self.lots[cur].next
        self.lots[k].next = cur
        if prev < 0:
            self.accs[a].first_lot = k
        else:
            self.lots[prev].next = k

    # -- checks of single requests (authz.club) --

    cdef int32_t _card(self, card_no) except -1:
        cdef Py_ssize_t c = self._card_pos(card_no) if isinstance(card_no, str) else -1
        if c < 0:
            raise RequestError(f"unknown club card {mask_card_no(card_no)}")
        return <int32_t>c

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
        cats = self.category_index
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
        ch = self.channel_index.get(channel) if type(channel) is str else None
        if ch is None:
            raise RequestError(f"unknown channel {channel!r}")
        me = self.method_index.get(method) if type(method) is str else None
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
                      o.reason == R_OK and self.accs[self.cards[c].account].activated != 0))

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
        a = self.cards[c].account
        cdef AccountRec* acc = &self.accs[a]
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
            if not acc.activated:
                reason = R_CARD_NOT_ACTIVATED
            elif from_card > acc.balance:
                reason = R_INSUFFICIENT_FUNDS
            elif turnover + from_card > self.cap_turnover[acc.kind]:
                reason = R_TURNOVER_CAP
        if reason != R_OK:
            return ClubCommit(REASONS[reason], 0, 0, (), None, acc.balance, turnover)
        used = []
        self._take(a, points, now, True, False, 0, used)
        cdef int64_t accrued = accrual_points(&t, points, rate)
        new_lot = None
        if accrued:
            new_lot = PointLot(tid, accrued, now + self.maturity_s, add_months_utc(now, self.expiry_months))
            self._add_lot(a, tid, accrued, new_lot.matures_at_s, new_lot.expires_at_s)
        acc.balance -= from_card
        if month > acc.tmonth:
            acc.tmonth = <int32_t>month
        acc.turnover = turnover + from_card
        return ClubCommit(REASONS[R_OK], accrued, points, tuple(used), new_lot, acc.balance, acc.turnover)

    def return_sale(self, ret):
        """Return part or all of an earlier sale (authz.club.return_sale)."""
        _check_type(ret, ClubReturn)
        cdef int32_t c = self._card(ret.card_no)
        cdef int32_t a = self.cards[c].account
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
            return ClubReturnResult(REASONS[R_CARD_BLOCKED], 0, 0, 0, 0, 0, 0, self.accs[a].balance)
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
        cdef int64_t room = self.cap_balance[self.accs[a].kind] - self.accs[a].balance
        if room < 0:
            room = 0
        if refund_card > room:
            refund_money += refund_card - room
            refund_card = room
        if give:
            self._add_lot(a, rid, give, now, add_months_utc(now, self.expiry_months))
        self.accs[a].balance += refund_card
        return ClubReturnResult(REASONS[R_OK], taken, charged, short - charged, give, refund_card,
                                refund_money, self.accs[a].balance)

    def top_up(self, req):
        """Put cash on a card within its caps (authz.club.top_up)."""
        _check_type(req, ClubTopUp)
        cdef int32_t c = self._card(req.card_no)
        cdef int32_t a = self.cards[c].account
        cdef AccountRec* acc = &self.accs[a]
        cdef int64_t now = self._int("now_utc_s", req.now_utc_s, 0, MAX_UTC)
        cdef int64_t amount = self._int("amount_kop", req.amount_kop, 1, MAX_SALE)
        cdef int64_t month = self._month(now)
        cdef int64_t turnover = self._turnover(a, month)
        cdef int reason = R_OK
        if self._blocked(c):
            reason = R_CARD_BLOCKED
        elif not acc.activated:
            reason = R_CARD_NOT_ACTIVATED
        elif acc.balance + amount > self.cap_balance[acc.kind]:
            reason = R_BALANCE_CAP
        elif turnover + amount > self.cap_turnover[acc.kind]:
            reason = R_TURNOVER_CAP
        if reason != R_OK:
            return ClubTopUpResult(REASONS[reason], acc.balance, turnover)
        acc.balance += amount
        if month > acc.tmonth:
            acc.tmonth = <int32_t>month
        acc.turnover = turnover + amount
        return ClubTopUpResult(REASONS[R_OK], acc.balance, acc.turnover)

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
        cdef Py_ssize_t a = self._account_pos(account_id)
        if a < 0:
            raise KeyError(account_id)
        return AccountState(self.accs[a].balance, self.accs[a].tmonth, self.accs[a].turnover, self._lots(<int32_t>a))


# ---------------------------------------------------------------- the simulated network, as columns
#
# native.compact.sample_fuel_columns: the contract and card loops of authz.sample.fuel_model,
# ported to C so that a million cards take ~0.1 s instead of ~16 s, drawing from the same
# Mersenne Twister as random.Random (CPython's _randommodule.c: genrand_uint32, random(),
# getrandbits(k <= 32), _randbelow, choice, randint, sample). The same seed gives the same
# network, card for card; tests/test_compact.py checks it against the objects.

cdef struct MT:
    uint32_t s[624]
    int i


cdef uint32_t mt_next(MT* m) noexcept nogil:
    cdef uint32_t y
    cdef int k
    if m.i >= 624:
        for k in range(624 - 397):
            y = (m.s[k] & 0x80000000U) | (m.s[k + 1] & 0x7fffffffU)
            m.s[k] = m.s[k + 397] ^ (y >> 1) ^ (0x9908b0dfU if y & 1 else 0U)
        for k in range(624 - 397, 623):
            y = (m.s[k] & 0x80000000U) | (m.s[k + 1] & 0x7fffffffU)
            m.s[k] = m.s[k + 397 - 624] ^ (y >> 1) ^ (0x9908b0dfU if y & 1 else 0U)
        y = (m.s[623] & 0x80000000U) | (m.s[0] & 0x7fffffffU)
        m.s[623] = m.s[396] ^ (y >> 1) ^ (0x9908b0dfU if y & 1 else 0U)
        m.i = 0
    y = m.s[m.i]
    m.i += 1
    y ^= y >> 11
    y ^= (y << 7) & 0x9d2c5680U
    y ^= (y << 15) & 0xefc60000U
    y ^= y >> 18
    return y


cdef inline double mt_random(MT* m) noexcept nogil:
    """random.random()."""
    cdef uint32_t a = mt_next(m) >> 5
    cdef uint32_t b = mt_next(m) >> 6
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0)


cdef inline uint32_t mt_below(MT* m, uint32_t n) noexcept nogil:
    """random._randbelow_with_getrandbits(n), n >= 1."""
    cdef int k = 0
    while k < 32 and (n >> k) != 0:
        k += 1
    cdef uint32_t r = mt_next(m) >> (32 - k)
    while r >= n:
        r = mt_next(m) >> (32 - k)
    return r


cdef int64_t[3] DAY_ML = [60_000, 100_000, 200_000]
cdef int64_t[3] MONTH_KOP = [1_000_000, 5_000_000, 10_000_000]
cdef int64_t[4] ODD_EXPIRY = [-30, 400, 700, 900]
cdef int64_t[5] BALANCES = [0, 500_000, 5_000_000, 50_000_000, 200_000_000]
cdef int64_t[5] CREDITS = [0, 0, 0, 1_000_000, 10_000_000]
DEF NOV_1_2026 = 20_758       # day number of date(2026, 11, 1)
cdef int64_t FIRST_CARD_KEY = 17005830000000000  # card_key(card_number(0)): "1" "700583" "0000000000"
DEF AI98 = 2                  # position of AI98 in authz.sample.PRODUCTS
DEF SHOP = 4                  # ProductGroup.SHOP
DEF N_ZONES = 12              # len(authz.sample.RUSSIAN_ZONES)


cdef struct CardOut:
    # where the card loop writes
    int64_t* key
    int32_t* contract
    int8_t* status
    int32_t* expires
    uint8_t* groups
    uint16_t* nlimits
    int64_t* l_id
    int8_t* l_unit
    int8_t* l_period
    int8_t* l_scope
    int64_t* l_amount
    int32_t* l_sv
    int64_t* l_spent
    int32_t* l_pstart
    int64_t* stop
    Py_ssize_t n_lims
    Py_ssize_t n_stop


cdef inline void _limit_row(CardOut* o, int64_t lid, int8_t unit, int8_t period, int64_t amount, int8_t scope,
                            int32_t sv) noexcept nogil:
    cdef Py_ssize_t r = o.n_lims
    o.n_lims += 1
    o.l_id[r], o.l_unit[r], o.l_period[r], o.l_amount[r], o.l_scope[r], o.l_sv[r] = lid, unit, period, amount, scope, sv
    o.l_spent[r], o.l_pstart[r] = 0, NO_PERIOD_


cdef void _sample_cards(MT* m, Py_ssize_t n_cards, uint32_t n_contracts, CardOut* o) noexcept nogil:
    """The card loop of authz.sample.fuel_model, draw for draw."""
    cdef Py_ssize_t i, first, month_row = 0
    cdef int64_t month = 0, days, spent
    cdef uint8_t groups
    cdef int8_t status
    for i in range(n_cards):
        first = o.n_lims
        month = 0
        if mt_random(m) < 0.7:
            _limit_row(o, 1, 1, PERIOD_DAY, DAY_ML[mt_below(m, 3)], 0, -1)
        if mt_random(m) < 0.5:
            month = MONTH_KOP[mt_below(m, 3)]
            month_row = o.n_lims
            _limit_row(o, 2, 0, PERIOD_MONTH, month, 0, -1)
        if mt_random(m) < 0.3:
            _limit_row(o, 3, 1, PERIOD_TXN, 80_000, 0, -1)
        if mt_random(m) < 0.2:
            _limit_row(o, 4, 0, PERIOD_WEEK, 300_000, SCOPE_GROUP, SHOP)
        if mt_random(m) < 0.1:
            _limit_row(o, 5, 1, 4, 5_000_000, SCOPE_PRODUCT, AI98)
        if month and mt_random(m) < 0.5:  # a counter for the month limit (the only one)
            spent = mt_below(m, <uint32_t>(month + 1))
            o.l_spent[month_row] = spent
            o.l_pstart[month_row] = NOV_1_2026
        groups = 1
        if mt_random(m) < 0.5:
            groups |= (1 << 1) | (1 << SHOP)
        if mt_random(m) < 0.1:
            groups |= (1 << 2) | (1 << 3)
        days = ODD_EXPIRY[mt_below(m, 4)] if mt_random(m) < 0.02 else 800
        status = 1 if mt_random(m) < 0.005 else 0
        if mt_random(m) < 0.01:
            o.stop[o.n_stop] = FIRST_CARD_KEY + i
            o.n_stop += 1
        o.key[i] = FIRST_CARD_KEY + i
        o.groups[i] = groups
        o.expires[i] = <int32_t>(NOV_1_2026 + days)
        o.status[i] = status
        o.nlimits[i] = <uint16_t>(o.n_lims - first)
        o.contract[i] = <int32_t>mt_below(m, n_contracts)  # randint(1, n) - 1: a position


def _sample_fuel_rows(tuple mt_state, Py_ssize_t n_cards, st_id, st_region, int n_regions):
    """Contract, card, limit and stop-list columns of authz.sample.fuel_model, continuing the
    generator whose state (random.Random.getstate()[1]) is ``mt_state`` right after the
    stations. Returns (columns by name, the zones' RUSSIAN_ZONES indexes in order of first use)."""
    cdef MT m
    cdef Py_ssize_t i, k, n, j, n_ct = max(1, n_cards // 5)
    cdef const int64_t[::1] sid = st_id
    cdef const int32_t[::1] sreg = st_region
    cdef int64_t pool[21]
    cdef int64_t picked[3]
    cdef uint32_t region, tariff, idx
    cdef int tz_seen[N_ZONES]
    cdef list tz_first = []
    if len(mt_state) != 625 or n_ct >= 2**31 or n_cards >= 10**10 or n_regions < 1:
        raise ValueError("a Mersenne Twister state of 625 words, under 10**10 cards and 1+ regions")
    for k in range(624):
        m.s[k] = mt_state[k]
    m.i = mt_state[624]
    for k in range(N_ZONES):
        tz_seen[k] = -1
    # stations of each region, in station order (the generator's ``local`` lists)
    local = [[] for _ in range(n_regions)]
    for k in range(len(sid)):
        if 0 <= sreg[k] < n_regions:
            local[sreg[k]].append(sid[k])
    cdef carray.array c_id = carray.clone(_Q, n_ct, False), c_tz = carray.clone(_H, n_ct, False)
    cdef carray.array c_region = carray.clone(_I, n_ct, False), c_tariff = carray.clone(_B, n_ct, False)
    cdef carray.array c_balance = carray.clone(_Q, n_ct, False), c_credit = carray.clone(_Q, n_ct, False)
    cdef carray.array c_nchosen = carray.clone(_B, n_ct, True), c_chosen = carray.clone(_Q, 3 * n_ct, True)
    for i in range(n_ct):
        tariff = mt_below(&m, 6)         # rnd.choice(list(Tariff))
        region = mt_below(&m, n_regions)  # rnd.randrange(n_regions)
        if tariff == 1:                   # REGIONAL_PLUS: rnd.sample(local, min(3, len(local)))
            here = local[region]
            n = len(here)
            k = min(3, n)
            if n <= 21:
                for j in range(n):
                    pool[j] = here[j]
                for j in range(k):
                    idx = mt_below(&m, <uint32_t>(n - j))
                    picked[j] = pool[idx]
                    pool[idx] = pool[n - j - 1]
            else:
                chosen_at = set()
                for j in range(k):
                    idx = mt_below(&m, <uint32_t>n)
                    while idx in chosen_at:
                        idx = mt_below(&m, <uint32_t>n)
                    chosen_at.add(idx)
                    picked[j] = here[idx]
            c_nchosen.data.as_schars[i] = <int8_t>k
            for j in range(k):
                c_chosen.data.as_longlongs[3 * i + j] = picked[j]
        c_id.data.as_longlongs[i] = i + 1
        k = region % N_ZONES
        if tz_seen[k] < 0:
            tz_seen[k] = len(tz_first)
            tz_first.append(k)
        c_tz.data.as_ushorts[i] = <uint16_t>tz_seen[k]
        c_region.data.as_ints[i] = region
        c_tariff.data.as_schars[i] = <int8_t>tariff
        c_balance.data.as_longlongs[i] = BALANCES[mt_below(&m, 5)]
        c_credit.data.as_longlongs[i] = CREDITS[mt_below(&m, 5)]
    # the cards, in one pass: the limit and stop-list arrays are made for the most a card can
    # have (five limits, one entry) and cut to size after; the pages never written are never
    # touched, so they cost no memory
    cdef CardOut o
    cdef Py_ssize_t most = 5 * n_cards
    cdef carray.array a_key = carray.clone(_Q, n_cards, False), a_contract = carray.clone(_I, n_cards, False)
    cdef carray.array a_kind = carray.clone(_B, n_cards, True), a_status = carray.clone(_B, n_cards, False)
    cdef carray.array a_expires = carray.clone(_I, n_cards, False), a_groups = carray.clone(_UB, n_cards, False)
    cdef carray.array a_nlim = carray.clone(_H, n_cards, False)
    cdef carray.array l_id = carray.clone(_Q, most, False), l_unit = carray.clone(_B, most, False)
    cdef carray.array l_period = carray.clone(_B, most, False), l_scope = carray.clone(_B, most, False)
    cdef carray.array l_amount = carray.clone(_Q, most, False), l_sv = carray.clone(_I, most, False)
    cdef carray.array l_spent = carray.clone(_Q, most, False), l_pstart = carray.clone(_I, most, False)
    cdef carray.array stop = carray.clone(_Q, n_cards, False)
    o.key, o.contract, o.status = <int64_t*>a_key.data.as_voidptr, <int32_t*>a_contract.data.as_voidptr, \
        <int8_t*>a_status.data.as_voidptr
    o.expires, o.groups, o.nlimits = <int32_t*>a_expires.data.as_voidptr, <uint8_t*>a_groups.data.as_voidptr, \
        <uint16_t*>a_nlim.data.as_voidptr
    o.l_id, o.l_unit, o.l_period = <int64_t*>l_id.data.as_voidptr, <int8_t*>l_unit.data.as_voidptr, \
        <int8_t*>l_period.data.as_voidptr
    o.l_scope, o.l_amount, o.l_sv = <int8_t*>l_scope.data.as_voidptr, <int64_t*>l_amount.data.as_voidptr, \
        <int32_t*>l_sv.data.as_voidptr
    o.l_spent, o.l_pstart, o.stop = <int64_t*>l_spent.data.as_voidptr, <int32_t*>l_pstart.data.as_voidptr, \
        <int64_t*>stop.data.as_voidptr
    o.n_lims = o.n_stop = 0
    with nogil:
        _sample_cards(&m, n_cards, <uint32_t>n_ct, &o)
    for arr in (l_id, l_unit, l_period, l_scope, l_amount, l_sv, l_spent, l_pstart):
        carray.resize(arr, o.n_lims)
    carray.resize(stop, o.n_stop)
    controls = dict(card_nproducts=carray.clone(_H, n_cards, True), card_nwindows=carray.clone(_UB, n_cards, True),
                    card_scope=carray.clone(_B, n_cards, True), card_nstations=carray.clone(_UB, n_cards, True),
                    card_on_breach=carray.clone(_B, n_cards, True), lim_on_breach=carray.clone(_B, o.n_lims, True))
    columns = dict(
        ct_id=c_id, ct_tz=c_tz, ct_region=c_region, ct_tariff=c_tariff, ct_balance=c_balance, ct_credit=c_credit,
        ct_nchosen=c_nchosen, ct_chosen=c_chosen,
        card_key=a_key, card_contract=a_contract, card_kind=a_kind, card_status=a_status, card_expires=a_expires,
        card_groups=a_groups, card_nlimits=a_nlim,
        lim_id=l_id, lim_unit=l_unit, lim_period=l_period, lim_scope=l_scope, lim_amount=l_amount,
        lim_scope_value=l_sv, lim_spent=l_spent, lim_pstart=l_pstart, stop_keys=stop, **controls)
    return columns, tz_first


# native.compact.sample_club_columns: the account loop of authz.sample.club_model, the same way.

DEF LOT_AGE_S = 120 * 86_400
cdef int64_t FIRST_CLUB_DIGITS = 299000000000  # "2990" and eight digits: club_card_number's first 12
cdef int64_t CLUB_KEY_LEAD = 10000000000000    # the key's leading "1" before 13 digits


cdef inline int64_t club_card_key(int64_t a) noexcept nogil:
    """card_key(authz.sample.club_card_number(a)), a < 10**8: "1", "2990", a in eight digits,
    the EAN-13 check digit."""
    cdef int64_t digits = FIRST_CLUB_DIGITS + a, s = 0, v = digits
    cdef int pos
    for pos in range(11, -1, -1):  # position 0 is the leftmost digit; odd positions weigh 3
        s += (v % 10) * (3 if pos % 2 else 1)
        v //= 10
    return CLUB_KEY_LEAD + digits * 10 + (10 - s % 10) % 10


def _sample_club_rows(tuple mt_state, Py_ssize_t n_accounts, int64_t now, int64_t maturity_s,
                      int64_t expiry_months, int64_t half_cap_identified, int64_t half_cap_unidentified):
    """Account, lot and card columns of authz.sample.club_model, drawing from the generator
    whose state (random.Random.getstate()[1]) is ``mt_state`` (nothing is drawn before the
    accounts). Returns the columns by name."""
    cdef MT m
    cdef Py_ssize_t a, k, nl, r = 0, n = n_accounts
    cdef int64_t at, pts, bal
    cdef int8_t kind
    cdef int64_t half[2]
    if len(mt_state) != 625 or not 0 <= n < 10**8:
        raise ValueError("a Mersenne Twister state of 625 words and under 10**8 accounts")
    for k in range(624):
        m.s[k] = mt_state[k]
    m.i = mt_state[624]
    half[0], half[1] = half_cap_identified, half_cap_unidentified
    cdef carray.array a_id = carray.clone(_Q, n, False), a_kind = carray.clone(_B, n, False)
    cdef carray.array a_act = carray.clone(_B, n, False), a_status = carray.clone(_B, n, False)
    cdef carray.array a_balance = carray.clone(_Q, n, False), a_tmonth = carray.clone(_I, n, True)
    cdef carray.array a_turnover = carray.clone(_Q, n, True), a_nlots = carray.clone(_I, n, False)
    # at most four lots an account; cut to size after (pages never written cost no memory)
    cdef carray.array l_id = carray.clone(_Q, 4 * n, False), l_points = carray.clone(_Q, 4 * n, False)
    cdef carray.array l_matures = carray.clone(_Q, 4 * n, False), l_expires = carray.clone(_Q, 4 * n, False)
    cdef carray.array c_key = carray.clone(_Q, n, False), c_account = carray.clone(_I, n, False)
    cdef carray.array c_status = carray.clone(_B, n, True)
    cdef int64_t* lid = <int64_t*>a_id.data.as_voidptr
    cdef int64_t* o_lid = <int64_t*>l_id.data.as_voidptr
    cdef int64_t* o_pts = <int64_t*>l_points.data.as_voidptr
    cdef int64_t* o_mat = <int64_t*>l_matures.data.as_voidptr
    cdef int64_t* o_exp = <int64_t*>l_expires.data.as_voidptr
    with nogil:
        for a in range(n):
            nl = mt_below(&m, 5)                                  # rnd.randrange(5)
            for k in range(nl):
                at = now - mt_below(&m, LOT_AGE_S)                # rnd.randrange(120 * 86_400)
                pts = 10 + mt_below(&m, 1991)                     # rnd.randint(10, 2_000)
                o_lid[r], o_pts[r] = a * 10 + k, pts
                o_mat[r], o_exp[r] = at + maturity_s, add_months_utc(at, expiry_months)
                r += 1
            kind = 0 if mt_random(&m) < 0.7 else 1
            a_kind.data.as_schars[a] = kind
            a_act.data.as_schars[a] = 1 if mt_random(&m) < 0.9 else 0
            a_status.data.as_schars[a] = 1 if mt_random(&m) < 0.005 else 0
            k = mt_below(&m, 5)                                   # rnd.choice((0, 0, 100_000, 500_000, cap // 2))
            bal = 0 if k < 2 else (100_000 if k == 2 else (500_000 if k == 3 else half[kind]))
            a_balance.data.as_longlongs[a] = bal
            a_nlots.data.as_ints[a] = <int32_t>nl
            lid[a] = a + 1
            c_key.data.as_longlongs[a] = club_card_key(a)
            c_account.data.as_ints[a] = <int32_t>a
    for arr in (l_id, l_points, l_matures, l_expires):
        carray.resize(arr, r)
    return dict(acc_id=a_id, acc_kind=a_kind, acc_activated=a_act, acc_status=a_status, acc_balance=a_balance,
                acc_tmonth=a_tmonth, acc_turnover=a_turnover, acc_nlots=a_nlots, lot_id=l_id, lot_points=l_points,
                lot_matures=l_matures, lot_expires=l_expires, card_key=c_key, card_account=c_account,
                card_status=c_status)


# ---------------------------------------------------------------- columns from host rows

cdef inline void _put_q(carray.array a, int64_t v) except *:
    cdef Py_ssize_t n = Py_SIZE(a)
    carray.resize_smart(a, n + 1)
    a.data.as_longlongs[n] = v


cdef inline void _put_i(carray.array a, int32_t v) except *:
    cdef Py_ssize_t n = Py_SIZE(a)
    carray.resize_smart(a, n + 1)
    a.data.as_ints[n] = v


cdef inline void _put_b(carray.array a, int8_t v) except *:
    cdef Py_ssize_t n = Py_SIZE(a)
    carray.resize_smart(a, n + 1)
    a.data.as_schars[n] = v


cdef inline void _put_ub(carray.array a, uint8_t v) except *:
    cdef Py_ssize_t n = Py_SIZE(a)
    carray.resize_smart(a, n + 1)
    a.data.as_uchars[n] = v


cdef inline void _put_h(carray.array a, uint16_t v) except *:
    cdef Py_ssize_t n = Py_SIZE(a)
    carray.resize_smart(a, n + 1)
    a.data.as_ushorts[n] = v


def _fill_card_columns(cards, dict contract_pos, dict product_pos, cols):
    """The card and limit columns of ``cols`` from (FuelCard, counters) rows: the loop of
    native.compact.FuelColumns.from_rows, in C (the same checks, the same columns)."""
    cdef carray.array k_key = cols.card_key, k_ct = cols.card_contract, k_kind = cols.card_kind
    cdef carray.array k_status = cols.card_status, k_exp = cols.card_expires, k_groups = cols.card_groups
    cdef carray.array k_nlim = cols.card_nlimits
    cdef carray.array l_id = cols.lim_id, l_unit = cols.lim_unit, l_period = cols.lim_period
    cdef carray.array l_scope = cols.lim_scope, l_amount = cols.lim_amount, l_sv = cols.lim_scope_value
    cdef carray.array l_spent = cols.lim_spent, l_pstart = cols.lim_pstart, l_breach = cols.lim_on_breach
    cdef carray.array k_nprod = cols.card_nproducts, k_nwin = cols.card_nwindows, k_scope = cols.card_scope
    cdef carray.array k_nst = cols.card_nstations, k_breach = cols.card_on_breach
    cdef dict days = {}, masks = {}, other = cols.card_other
    cdef int64_t key
    cdef int32_t value
    cdef Py_ssize_t n_lim
    for row in cards:
        card, counters = row
        no = card.card_no
        ct = contract_pos.get(card.contract_id)
        if ct is None:
            raise ModelError(f"card {mask_card_no(no)} of unknown contract {card.contract_id}")
        key = key_of(no) if type(no) is str else 0
        if not key:
            other[Py_SIZE(k_key)] = no
        _put_q(k_key, key)
        _put_i(k_ct, ct)
        _put_b(k_kind, card.kind)
        _put_b(k_status, card.status)
        exp = card.expires_on
        day = days.get(exp)
        if day is None:
            day = days[exp] = exp.toordinal() - _EPOCH_ORDINAL
        _put_i(k_exp, day)
        groups = card.groups
        m = masks.get(groups)
        if m is None:
            m = 0
            for g in groups:
                m |= 1 << int(g)
            masks[groups] = m
        _put_ub(k_groups, m)
        if (card.products is None and not card.windows and card.station_scope == 0 and not card.station_ids
                and card.on_breach == 0):
            _put_h(k_nprod, 0)
            _put_ub(k_nwin, 0)
            _put_b(k_scope, 0)
            _put_ub(k_nst, 0)
            _put_b(k_breach, 0)
        else:
            _put_controls(cols, card, product_pos)
        limits = card.limits
        n_lim = len(limits)
        if n_lim > 65535:
            raise ModelError(f"card {mask_card_no(no)} has too many limits")
        _put_h(k_nlim, <uint16_t>n_lim)
        known = dict(counters) if counters else None
        for lim in limits:
            scope = lim.scope
            if scope == SCOPE_GROUP:
                if lim.group is None:
                    raise ModelError(f"limit {lim.limit_id} has scope GROUP but no group")
                value = lim.group
            elif scope == SCOPE_PRODUCT:
                p = product_pos.get(lim.product)
                if p is None:
                    raise ModelError(f"limit {lim.limit_id} names unknown product {lim.product!r}")
                value = p
            else:
                value = -1
            _put_q(l_id, lim.limit_id)
            _put_b(l_unit, lim.unit)
            _put_b(l_period, lim.period)
            _put_b(l_scope, scope)
            _put_q(l_amount, lim.amount)
            _put_i(l_sv, value)
            _put_b(l_breach, lim.on_breach)
            counter = known.get(lim.limit_id) if known else None
            if counter is None:
                _put_q(l_spent, 0)
                _put_i(l_pstart, NO_PERIOD_)
            else:
                _put_q(l_spent, counter.spent)
                _put_i(l_pstart, counter.period_start)


def _key_index_probe(keys, bint skip_zero, queries):
    """For the tests of :class:`_KeyIndex` (tests/test_compact_keys.py): an index of ``keys``
    (an int64 array) and what it answers: ``(compact, [position of each query or -1], [key
    of each rank], [key of each position], key_array())``; the last two only when every
    position has a key."""
    ix = _KeyIndex(keys, skip_zero)
    cdef Py_ssize_t r
    found = [ix.find(q) for q in queries]
    ranked = [ix.at(r) for r in range(ix.n)]
    every = ix.n == len(keys)
    by_pos = [ix.key_at(r) for r in range(ix.n)] if every and ix.order == NULL else None
    return ix.low != NULL, found, ranked, by_pos, (list(ix.key_array()) if every and ix.order == NULL else None)
