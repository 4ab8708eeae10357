# cython: language_level=3
"""Fuel-card rows from the replica store's MessagePack bytes straight into FuelColumns' arrays.

The general path reads a stored fuel-card row into a dict (msgpack), checks it into a
FuelCardRow with its FuelCard and Limit objects (:mod:`wire.rows_bulk`), then copies their
fields into the columns (``_evaluator._fill_card_columns``): a few dozen Python objects per
card, made and dropped. Here a row is read byte by byte in C and written into the columns,
with no object per card but its number's key.

The loader accepts a *subset* of what the general path accepts and builds the same columns
for it: a row is taken here only when it is a map of exactly the fields
:func:`wire.rows_bulk.pack_rows` writes for a card without fleet controls or balance fields,
in that order, each once, with every value checked as :func:`wire.rows_bulk._card_row` and
:mod:`wire.codec` check it. Any other row (controls, watermarks, another field order, a value
out of range, not MessagePack at all) goes to ``slow(data)``, the general path, which builds
it or refuses it with its own words. A row the general path would refuse is therefore refused
with the same error either way; ``tests/native/test_rowload.py`` checks it with hypothesis.
"""

from cpython.array cimport array
cimport cpython.array as carray
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.object cimport Py_SIZE
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp

from authz.errors import ModelError
from authz.fuel_model import mask_card_no

DEF MAX_LIMITS = 1000
DEF SCOPE_GROUP = 1
DEF SCOPE_PRODUCT = 2

cdef int64_t INT64_MAX = 9223372036854775807
cdef int64_t INT32_MIN = -2147483648
cdef int64_t INT32_MAX = 2147483647

cdef int64_t POW10[19]
cdef int _p
POW10[0] = 1
for _p in range(1, 19):
    POW10[_p] = POW10[_p - 1] * 10


cdef struct Reader:
    const uint8_t* d
    Py_ssize_t n
    Py_ssize_t i


cdef inline bint _int(Reader* r, int64_t* out) noexcept:
    """A MessagePack integer that fits int64 (any width); False for anything else."""
    if r.i >= r.n:
        return False
    cdef uint8_t b = r.d[r.i]
    cdef Py_ssize_t need
    cdef uint64_t u = 0
    cdef int k
    if b <= 0x7f:
        out[0] = b
        r.i += 1
        return True
    if b >= 0xe0:
        out[0] = <int8_t>b
        r.i += 1
        return True
    if 0xcc <= b <= 0xcf:
        need = 1 << (b - 0xcc)
    elif 0xd0 <= b <= 0xd3:
        need = 1 << (b - 0xd0)
    else:
        return False
    if r.i + 1 + need > r.n:
        return False
    for k in range(need):
        u = (u << 8) | r.d[r.i + 1 + k]
    r.i += 1 + need
    if b <= 0xcf:  # unsigned
        if u > <uint64_t>INT64_MAX:
            return False
        out[0] = <int64_t>u
    elif need == 1:
        out[0] = <int8_t>u
    elif need == 2:
        out[0] = <int16_t>u
    elif need == 4:
        out[0] = <int32_t>u
    else:
        out[0] = <int64_t>u
    return True



cdef inline Py_ssize_t _str(Reader* r) noexcept:
    """The length of a MessagePack str at the reader (its bytes follow at r.i), or -1."""
    if r.i >= r.n:
        return -1
    cdef uint8_t b = r.d[r.i]
    cdef Py_ssize_t n
    if 0xa0 <= b <= 0xbf:
        n = b - 0xa0
        r.i += 1
    elif b == 0xd9 and r.i + 1 < r.n:
        n = r.d[r.i + 1]
        r.i += 2
    else:
        return -1
    if r.i + n > r.n:
        return -1
    return n


cdef inline Py_ssize_t _header(Reader* r, uint8_t fix, uint8_t h16, uint8_t h32) noexcept:
    """The length of an array (fix 0x90) or map (fix 0x80) header at the reader, or -1."""
    if r.i >= r.n:
        return -1
    cdef uint8_t b = r.d[r.i]
    if fix <= b <= fix + 15:
        r.i += 1
        return b - fix
    if b == h16 and r.i + 3 <= r.n:
        r.i += 3
        return (<Py_ssize_t>r.d[r.i - 2] << 8) | r.d[r.i - 1]
    if b == h32 and r.i + 5 <= r.n:
        r.i += 5
        return ((<Py_ssize_t>r.d[r.i - 4] << 24) | (<Py_ssize_t>r.d[r.i - 3] << 16)
                | (<Py_ssize_t>r.d[r.i - 2] << 8) | r.d[r.i - 1])
    return -1


cdef inline bint _key(Reader* r, const char* name, Py_ssize_t n) noexcept:
    """The map key ``name`` (a fixstr) at the reader."""
    if r.i + 1 + n > r.n or r.d[r.i] != 0xa0 + n or memcmp(r.d + r.i + 1, name, n) != 0:
        return False
    r.i += 1 + n
    return True


cdef inline Py_ssize_t _list_field(Reader* r, const char* name, Py_ssize_t n, Py_ssize_t most) noexcept:
    """The map key ``name`` then an array of at most ``most`` items: their count, or -1."""
    if not _key(r, name, n):
        return -1
    cdef Py_ssize_t m = _header(r, 0x90, 0xdc, 0xdd)
    return m if 0 <= m <= most else -1


cdef inline bint _alnum(uint8_t c) noexcept:
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122)


cdef inline int _card_no(Reader* r, Py_ssize_t* at, Py_ssize_t* n) noexcept:
    """A card number at the reader ([0-9A-Za-z]{1,32}, wire.rows_bulk's): 1 if it has an
    int64 key (0..18 digits), 0 if not, -1 if it is not a card number. ``at`` and ``n``: where."""
    cdef Py_ssize_t m = _str(r), k
    if m < 1 or m > 32:
        return -1
    cdef bint digits = m <= 18
    for k in range(m):
        if not _alnum(r.d[r.i + k]):
            return -1
        if not 48 <= r.d[r.i + k] <= 57:
            digits = False
    at[0], n[0] = r.i, m
    r.i += m
    return 1 if digits else 0


cdef inline int64_t _key_of(const uint8_t* d, Py_ssize_t n) noexcept:
    """native.compact.card_key of the n digits at ``d`` (n <= 18)."""
    cdef int64_t key = 0
    cdef Py_ssize_t k
    for k in range(n):
        key = key * 10 + (d[k] - 48)
    return key + POW10[n]


cdef inline bint _in(uint64_t mask, int64_t v) noexcept:
    return 0 <= v < 64 and (mask >> v) & 1


ctypedef fused cell:
    int8_t
    uint8_t
    uint16_t
    int32_t
    int64_t


cdef inline void _put(array a, cell v) except *:
    """Append ``v`` to column ``a`` (its item the size of ``cell``: the caller's cast says which)."""
    cdef Py_ssize_t n = Py_SIZE(a)
    carray.resize_smart(a, n + 1)
    (<cell*>a.data.as_voidptr)[n] = v


# one row's limits and counters, read before any column is written
cdef int64_t L_ID[MAX_LIMITS]
cdef int64_t L_AMOUNT[MAX_LIMITS]
cdef int8_t L_UNIT[MAX_LIMITS]
cdef int8_t L_PERIOD[MAX_LIMITS]
cdef int8_t L_SCOPE[MAX_LIMITS]
cdef int64_t L_GROUP[MAX_LIMITS]  # -1: nil
cdef Py_ssize_t L_PROD_AT[MAX_LIMITS]  # offset of the product code in the row, -1: nil
cdef Py_ssize_t L_PROD_LEN[MAX_LIMITS]
cdef int64_t L_SPENT[MAX_LIMITS]
cdef int64_t L_PSTART[MAX_LIMITS]
cdef bint L_HAS[MAX_LIMITS]


cdef inline Py_ssize_t _position(const int64_t* ids, Py_ssize_t n, int64_t cid) noexcept:
    """The position of ``cid`` in the rising ``ids``, or -1."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if ids[mid] < cid:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < n and ids[lo] == cid else -1


def load_fuel_cards(datas, dict contract_pos, dict product_pos, cols, slow, fill_slow, day_fn, dict day_of,
                    uint64_t kinds, uint64_t statuses, uint64_t units, uint64_t periods, uint64_t scopes,
                    uint64_t groups, int64_t max_amount, int64_t no_period, Py_ssize_t max_groups,
                    array contract_ids=None):
    """Append the cards of ``datas`` (stored fuel-card rows, bytes, in order) to ``cols``.

    ``slow(data)`` reads a row the loader does not take by the general path ((card,
    counters), or raises its refusal); ``fill_slow(row)`` writes it into ``cols``. ``day_fn(b)``
    is the day number of the ``expires_on`` bytes ``b``, or None for a date the general path
    would not take (so a date means here what it means there); ``day_of`` caches it. The masks are the valid values of
    each enum (bit v set: v is valid). Returns how many rows went the general path. Raises
    ModelError as ``_fill_card_columns`` does (a card of an unknown contract, a limit of an
    unknown product, a GROUP limit without a group). ``contract_ids`` (int64, rising: the
    contracts' ids in position order), if given, is where a card's contract is looked up (a
    binary search, no Python int per contract); ``contract_pos`` then serves the general path
    only."""
    cdef array k_key = cols.card_key, k_ct = cols.card_contract, k_kind = cols.card_kind
    cdef array k_status = cols.card_status, k_exp = cols.card_expires, k_groups = cols.card_groups
    cdef array k_nlim = cols.card_nlimits
    cdef array l_id = cols.lim_id, l_unit = cols.lim_unit, l_period = cols.lim_period
    cdef array l_scope = cols.lim_scope, l_amount = cols.lim_amount, l_sv = cols.lim_scope_value
    cdef array l_spent = cols.lim_spent, l_pstart = cols.lim_pstart, l_breach = cols.lim_on_breach
    cdef array k_nprod = cols.card_nproducts, k_nwin = cols.card_nwindows, k_scope = cols.card_scope
    cdef array k_nst = cols.card_nstations, k_breach = cols.card_on_breach
    cdef dict other = cols.card_other
    cdef Reader r
    cdef Py_ssize_t n_slow = 0, no_at, no_len, n, k, j, n_lim, n_ctr, at
    cdef int64_t cid, kind, status, v, lid, spent, pstart, key, amount
    cdef uint8_t mask, c
    cdef bint ok
    cdef int has_key = 0
    cdef bytes data
    for obj in datas:
        if type(obj) is not bytes:
            fill_slow(slow(obj))
            n_slow += 1
            continue
        data = <bytes>obj
        r.d = <const uint8_t*>PyBytes_AS_STRING(data)
        r.n = PyBytes_GET_SIZE(data)
        r.i = 0
        ok = False
        day = None
        while True:  # one pass; break: not taken here
            if _header(&r, 0x80, 0xde, 0xdf) != 8 or not _key(&r, b"card_no", 7):
                break
            has_key = _card_no(&r, &no_at, &no_len)
            if has_key < 0:
                break
            if not _key(&r, b"contract_id", 11) or not _int(&r, &cid) or cid < 0:
                break
            if not _key(&r, b"expires_on", 10):
                break
            n = _str(&r)
            if n != 10:
                break
            iso = data[r.i:r.i + 10]
            day = day_of.get(iso)
            if day is None:
                day = day_fn(iso)
                if day is None:
                    break
                if len(day_of) < 100_000:
                    day_of[iso] = day
            r.i += 10
            n = _list_field(&r, b"groups", 6, max_groups)
            if n < 0:
                break
            mask = 0
            for k in range(n):
                if not _int(&r, &v) or not _in(groups, v) or v >= 8 or (mask >> v) & 1:
                    break
                mask |= 1 << v
            else:
                k = n
            if k != n:
                break
            n_lim = _list_field(&r, b"limits", 6, MAX_LIMITS)
            if n_lim < 0:
                break
            for k in range(n_lim):
                if (_header(&r, 0x80, 0xde, 0xdf) != 7 or not _key(&r, b"limit_id", 8) or not _int(&r, &L_ID[k])
                        or L_ID[k] < 0 or not _key(&r, b"unit", 4) or not _int(&r, &v) or not _in(units, v)):
                    break
                L_UNIT[k] = <int8_t>v
                if not _key(&r, b"period", 6) or not _int(&r, &v) or not _in(periods, v):
                    break
                L_PERIOD[k] = <int8_t>v
                if (not _key(&r, b"amount", 6) or not _int(&r, &L_AMOUNT[k]) or L_AMOUNT[k] < 0
                        or L_AMOUNT[k] > max_amount):
                    break
                if not _key(&r, b"scope", 5) or not _int(&r, &v) or not _in(scopes, v):
                    break
                L_SCOPE[k] = <int8_t>v
                if not _key(&r, b"group", 5) or r.i >= r.n:
                    break
                if r.d[r.i] == 0xc0:
                    L_GROUP[k] = -1
                    r.i += 1
                elif not _int(&r, &L_GROUP[k]) or not _in(groups, L_GROUP[k]):
                    break
                if not _key(&r, b"product", 7) or r.i >= r.n:
                    break
                if r.d[r.i] == 0xc0:
                    L_PROD_AT[k] = -1
                    r.i += 1
                else:  # [A-Za-z0-9][A-Za-z0-9_.-]{0,31}
                    n = _str(&r)
                    if n < 1 or n > 32 or not _alnum(r.d[r.i]):
                        break
                    for j in range(1, n):
                        c = r.d[r.i + j]
                        if not (_alnum(c) or c == 95 or c == 46 or c == 45):  # _ . -
                            break
                    else:
                        j = n
                    if j != n:
                        break
                    L_PROD_AT[k], L_PROD_LEN[k] = r.i, n
                    r.i += n
                for j in range(k):
                    if L_ID[j] == L_ID[k]:
                        break
                else:
                    j = k
                if j != k:
                    break  # a limit id twice
                L_HAS[k] = False
            else:
                k = n_lim
            if k != n_lim:
                break
            if not _key(&r, b"kind", 4) or not _int(&r, &kind) or not _in(kinds, kind):
                break
            if not _key(&r, b"status", 6) or not _int(&r, &status) or not _in(statuses, status):
                break
            n_ctr = _list_field(&r, b"counters", 8, MAX_LIMITS)
            if n_ctr < 0:
                break
            for k in range(n_ctr):
                if (_header(&r, 0x80, 0xde, 0xdf) != 3 or not _key(&r, b"limit_id", 8) or not _int(&r, &lid)
                        or not _key(&r, b"spent", 5) or not _int(&r, &spent)
                        or not _key(&r, b"period_start", 12) or not _int(&r, &pstart)
                        or pstart < INT32_MIN or pstart > INT32_MAX):
                    break
                for j in range(n_lim):
                    if L_ID[j] == lid:
                        break
                else:
                    j = n_lim
                if j == n_lim or L_HAS[j]:
                    break  # a counter of no limit, or twice
                L_HAS[j], L_SPENT[j], L_PSTART[j] = True, spent, pstart
            else:
                k = n_ctr
            if k != n_ctr or r.i != r.n:
                break
            ok = True
            break
        if not ok:
            fill_slow(slow(data))
            n_slow += 1
            continue
        # the row is well formed: the checks of _fill_card_columns, then the columns
        if contract_ids is not None:
            at = _position(<const int64_t*>contract_ids.data.as_voidptr, Py_SIZE(contract_ids), cid)
            ct = None if at < 0 else at
        else:
            ct = contract_pos.get(cid)
        no = None
        if ct is None:
            no = data[no_at:no_at + no_len].decode("ascii")
            raise ModelError(f"card {mask_card_no(no)} of unknown contract {cid}")
        values = []
        for k in range(n_lim):
            if L_SCOPE[k] == SCOPE_GROUP:
                if L_GROUP[k] < 0:
                    raise ModelError(f"limit {L_ID[k]} has scope GROUP but no group")
                values.append(L_GROUP[k])
            elif L_SCOPE[k] == SCOPE_PRODUCT:
                prod = None if L_PROD_AT[k] < 0 else data[L_PROD_AT[k]:L_PROD_AT[k] + L_PROD_LEN[k]].decode("ascii")
                p = product_pos.get(prod)
                if p is None:
                    raise ModelError(f"limit {L_ID[k]} names unknown product {prod!r}")
                values.append(p)
            else:
                values.append(-1)
        key = 0
        if has_key:
            key = _key_of(r.d + no_at, no_len)
        else:
            other[Py_SIZE(k_key)] = data[no_at:no_at + no_len].decode("ascii")
        _put(k_key, <int64_t>key)
        _put(k_ct, <int32_t>ct)
        _put(k_kind, <int8_t>kind)
        _put(k_status, <int8_t>status)
        _put(k_exp, <int32_t>day)
        _put(k_groups, <uint8_t>mask)
        _put(k_nprod, <uint16_t>0)
        _put(k_nwin, <uint8_t>0)
        _put(k_scope, <int8_t>0)
        _put(k_nst, <uint8_t>0)
        _put(k_breach, <int8_t>0)
        _put(k_nlim, <uint16_t>n_lim)
        for k in range(n_lim):
            _put(l_id, <int64_t>L_ID[k])
            _put(l_unit, <int8_t>L_UNIT[k])
            _put(l_period, <int8_t>L_PERIOD[k])
            _put(l_scope, <int8_t>L_SCOPE[k])
            _put(l_amount, <int64_t>L_AMOUNT[k])
            _put(l_sv, <int32_t>values[k])
            _put(l_breach, <int8_t>0)
            if L_HAS[k]:
                _put(l_spent, <int64_t>L_SPENT[k])
                _put(l_pstart, <int32_t>L_PSTART[k])
            else:
                _put(l_spent, <int64_t>0)
                _put(l_pstart, <int32_t>no_period)
    return n_slow


def load_stop_keys(datas, slow, key_fn, array keys, set other):
    """Append the stop list of ``datas`` (stored stop-list rows, bytes) to ``keys`` (the card
    numbers' int64 keys) and ``other`` (the numbers without one), as
    ``FuelColumns.from_rows`` does for card numbers. A row not taken here goes to
    ``slow(data)`` (the general path: its card number, or its refusal) and ``key_fn``
    (``native.compact.card_key``). Returns how many rows went the general path."""
    cdef Reader r
    cdef Py_ssize_t n_slow = 0, n = 0, at = 0
    cdef int64_t at_s, key
    cdef int has_key = 0
    cdef bint ok
    cdef bytes data
    for obj in datas:
        ok = False
        if type(obj) is bytes:
            data = <bytes>obj
            r.d = <const uint8_t*>PyBytes_AS_STRING(data)
            r.n = PyBytes_GET_SIZE(data)
            r.i = 0
            if _header(&r, 0x80, 0xde, 0xdf) == 2 and _key(&r, b"card_no", 7):
                has_key = _card_no(&r, &at, &n)
                ok = (has_key >= 0 and _key(&r, b"listed_at_utc_s", 15) and _int(&r, &at_s) and at_s >= 0
                      and r.i == r.n)
        if not ok:
            no = slow(obj)
            key = key_fn(no)
            if key:
                _put(keys, <int64_t>key)
            else:
                other.add(no)
            n_slow += 1
        elif has_key:
            _put(keys, _key_of(r.d + at, n))
        else:
            other.add(data[at:at + n].decode("ascii"))
    return n_slow


# -- a snapshot part's rows as one SQL statement's parameter (terminal.replica_store) -------------

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy


cdef inline Py_ssize_t _put_int(char* out, int64_t v) noexcept:
    """``v`` in decimal at ``out``; how many characters."""
    cdef char tmp[24]
    cdef Py_ssize_t n = 0, k, j
    cdef uint64_t u
    cdef bint neg = v < 0
    u = <uint64_t>(-(v + 1)) + 1 if neg else <uint64_t>v
    while True:
        tmp[n] = <char>(48 + u % 10)
        n += 1
        u //= 10
        if u == 0:
            break
    k = 0
    if neg:
        out[0] = 45  # -
        k = 1
    for j in range(n):
        out[k + j] = tmp[n - 1 - j]
    return k + n


def part_rows_json(int code, bytes data, bytes bounds):
    """The rows of a snapshot part kept as received (:class:`wire.rows_bulk.PackedRows`: table
    ``code`` of ``wire._partscan.TABLE_CODES``, frame ``data``, row offsets ``bounds``) as the
    JSON text ``[[key, offset, length], ...]``: one parameter for the replica store's single
    ``INSERT ... SELECT ... FROM json_each(?)``, which SQLite runs without the interpreter lock
    (``terminal.replica_store``). A row's key is its first field, as ``wire._partscan`` reads it
    (a card number, or a contract or account id). Returns None where a row is not as expected
    (a key that is not of plain letters and digits, a field not where it should be): the
    caller writes the rows one by one then."""
    cdef const uint8_t* d = <const uint8_t*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t nd = PyBytes_GET_SIZE(data)
    cdef const uint32_t* b = <const uint32_t*>PyBytes_AS_STRING(bounds)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(bounds) // 4 - 1
    cdef Py_ssize_t cap, k, at, ln, m, o = 0, j
    cdef Reader r
    cdef int64_t v
    cdef char* out
    if n < 0 or code < 1 or code > 4:
        return None
    cap = 2 + n * (32 + 2 + 3 + 2 * 21 + 8)  # the widest row: a 32-character key, two 20-digit numbers
    out = <char*>malloc(cap)
    if out == NULL:
        raise MemoryError()
    try:
        out[o] = 91  # [
        o += 1
        for k in range(n):
            at, ln = b[k], <Py_ssize_t>b[k + 1] - <Py_ssize_t>b[k]
            if ln <= 0 or at + ln > nd:
                return None
            r.d, r.n, r.i = d + at, ln, 0
            if k:
                out[o] = 44  # ,
                o += 1
            out[o] = 91
            o += 1
            if code == 3 or code == 4:  # fixmap, "contract_id" / "account_id", an integer
                r.i = 13 if code == 3 else 12
                if not _int(&r, &v):
                    return None
                o += _put_int(out + o, v)
            else:  # fixmap, "card_no", a string
                r.i = 9
                m = _str(&r)
                if m < 1 or m > 32:
                    return None
                out[o] = 34  # "
                o += 1
                for j in range(m):
                    if not _alnum(r.d[r.i + j]):
                        return None
                    out[o + j] = <char>r.d[r.i + j]
                o += m
                out[o] = 34
                o += 1
            out[o] = 44
            o += 1
            o += _put_int(out + o, at)
            out[o] = 44
            o += 1
            o += _put_int(out + o, ln)
            out[o] = 93  # ]
            o += 1
        out[o] = 93
        o += 1
        return PyBytes_FromStringAndSize(out, o).decode("ascii")
    finally:
        free(out)


def part_keys_after(bytes data, bytes bounds, bytes prev):
    """The last card number (bytes) of a part of fuel cards or the stop list kept as received
    (:class:`wire.rows_bulk.PackedRows`' ``data`` and ``bounds``) if its rows' card numbers
    rise, each after ``prev`` (b"": no row before), in the replica store's order (SQLite's
    BINARY: bytes, then length); else None. What tells that columns filled part after part
    are in the order the store reads them back."""
    cdef const uint8_t* d = <const uint8_t*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t nd = PyBytes_GET_SIZE(data)
    cdef const uint32_t* b = <const uint32_t*>PyBytes_AS_STRING(bounds)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(bounds) // 4 - 1
    cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(prev)
    cdef Py_ssize_t pn = PyBytes_GET_SIZE(prev), k, m, at, ln
    cdef int c
    cdef Reader r
    for k in range(n):
        at, ln = b[k], <Py_ssize_t>b[k + 1] - <Py_ssize_t>b[k]
        if ln <= 9 or at + ln > nd:
            return None
        r.d, r.n, r.i = d + at, ln, 9  # fixmap, "card_no"
        m = _str(&r)
        if m < 1:
            return None
        if pn:
            c = memcmp(p, r.d + r.i, pn if pn < m else m)
            if c > 0 or (c == 0 and pn >= m):
                return None
        p, pn = r.d + r.i, m
    return PyBytes_FromStringAndSize(<const char*>p, pn)


cdef inline bint _contract_fields(Reader* r, int64_t* f, Py_ssize_t* tz_at, Py_ssize_t* tz_len,
                                  Py_ssize_t* nchosen, int64_t* chosen) noexcept:
    """A contract row as the store writes it (``wire._partscan`` took it): f = contract_id,
    home_region, tariff, balance_kop, credit_line_kop; the time zone's bytes; the chosen stations."""
    cdef Py_ssize_t n, k
    if _header(r, 0x80, 0xde, 0xdf) != 7 or not _key(r, b"contract_id", 11) or not _int(r, &f[0]):
        return False
    if not _key(r, b"tz", 2):
        return False
    n = _str(r)
    if n < 1:
        return False
    tz_at[0], tz_len[0] = r.i, n
    r.i += n
    if (not _key(r, b"home_region", 11) or not _int(r, &f[1]) or not _key(r, b"tariff", 6) or not _int(r, &f[2])
            or not _key(r, b"balance_kop", 11) or not _int(r, &f[3])
            or not _key(r, b"credit_line_kop", 15) or not _int(r, &f[4])):
        return False
    n = _list_field(r, b"chosen_station_ids", 18, 3)
    if n < 0:
        return False
    for k in range(n):
        if not _int(r, &chosen[k]) or chosen[k] < 0:
            return False
    nchosen[0] = n
    return r.i == r.n


def load_packed_contracts(bytes data, bytes bounds, dict arrays, dict tz_pos, int64_t last):
    """Append the contracts of a part kept as received (``wire._partscan`` took it:
    :class:`wire.rows_bulk.PackedRows`' ``data`` and ``bounds``) to the contract columns
    ``arrays`` (``native.compact.ContractColumns``: ``ct_id`` ...) and their time zones to
    ``tz_pos``, as ``ContractColumns.add`` of their objects would, without an object per
    contract. Every id must rise from ``last`` (-1: none before). Returns the last id, or
    None, with nothing appended, if any row is not as expected (another layout, an id that
    does not rise, a value a column cannot hold): the caller takes the general path then,
    which accepts the part or refuses it in its own words."""
    cdef const uint8_t* d = <const uint8_t*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t nd = PyBytes_GET_SIZE(data)
    cdef const uint32_t* b = <const uint32_t*>PyBytes_AS_STRING(bounds)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(bounds) // 4 - 1
    cdef Py_ssize_t k, j, at, ln, tz_at = 0, tz_len = 0, nch = 0
    cdef int64_t f[5]
    cdef int64_t chosen[3]
    cdef int64_t prev = last
    cdef Reader r
    cdef array ct_id = arrays["ct_id"], ct_tz = arrays["ct_tz"], ct_region = arrays["ct_region"]
    cdef array ct_tariff = arrays["ct_tariff"], ct_balance = arrays["ct_balance"], ct_credit = arrays["ct_credit"]
    cdef array ct_nchosen = arrays["ct_nchosen"], ct_chosen = arrays["ct_chosen"]
    for k in range(n):  # first every row checked: all or nothing
        at, ln = b[k], <Py_ssize_t>b[k + 1] - <Py_ssize_t>b[k]
        if ln <= 0 or at + ln > nd:
            return None
        r.d, r.n, r.i = d + at, ln, 0
        if not _contract_fields(&r, f, &tz_at, &tz_len, &nch, chosen) or f[0] <= prev or f[0] < 0:
            return None
        if f[1] < INT32_MIN or f[1] > INT32_MAX or f[2] < -128 or f[2] > 127:
            return None  # home_region (i) and tariff (b) as their columns hold them
        prev = f[0]
    added = []
    for k in range(n):
        at, ln = b[k], <Py_ssize_t>b[k + 1] - <Py_ssize_t>b[k]
        r.d, r.n, r.i = d + at, ln, 0
        _contract_fields(&r, f, &tz_at, &tz_len, &nch, chosen)
        tz = (<bytes>(d + at + tz_at)[:tz_len]).decode("ascii")
        pos = tz_pos.get(tz)
        if pos is None:
            if len(tz_pos) >= 65536:  # ct_tz (H)
                for z in added:
                    del tz_pos[z]
                for name in arrays:
                    del arrays[name][len(arrays[name]) - (k * 3 if name == "ct_chosen" else k):]
                return None
            pos = tz_pos[tz] = len(tz_pos)
            added.append(tz)
        _put(ct_id, <int64_t>f[0])
        _put(ct_tz, <uint16_t>pos)
        _put(ct_region, <int32_t>f[1])
        _put(ct_tariff, <int8_t>f[2])
        _put(ct_balance, <int64_t>f[3])
        _put(ct_credit, <int64_t>f[4])
        _put(ct_nchosen, <int8_t>nch)
        for j in range(3):
            _put(ct_chosen, <int64_t>(chosen[j] if j < nch else 0))
    return prev
