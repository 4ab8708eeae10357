# cython: language_level=3
"""A snapshot part's frame checked byte by byte in C, its rows kept as the bytes received.

A site being provisioned receives a million fuel cards and a million stop-list numbers in
snapshot parts. :func:`wire.codec.decode` reads each part into dicts, checks every row into
objects (a FuelCardRow, a FuelCard, its Limits...), and the replica store packs each row back
into bytes: a few dozen Python objects per card, made and dropped. Here a part's frame is read
in C and each row is checked where it lies; the part then travels as the frame and the
offsets of its rows (:class:`wire.rows_bulk.PackedRows`), and the store writes those bytes.

The scanner takes a *subset* of what :func:`wire.codec.decode` takes: a frame it does not take
returns None and the caller decodes it the general way (which accepts it, or refuses it with
its own words). It takes a frame only when it is

- ``[1, "snapshot", nil, {"table", "version", "part", "parts", "rows"}, bin8(64)]``, the
  payload's fields in that order, each once, ending where the frame ends;
- of table ``fuel_cards``, ``stop_list``, ``contracts`` or ``club_accounts``, with at most
  ``max_rows`` rows;
- each row a map of exactly the fields :func:`wire.rows_bulk.pack_rows` (and
  :func:`wire.pack_row`) write for it, in their order, each value of the type and in the
  range :mod:`wire.rows_bulk`'s and :mod:`wire.codec`'s checks require (a card without fleet
  controls or balance fields, a contract or club account without watermarks or allowances,
  an account with at most 64 lots and 64 cards);
- and every value written the way MessagePack's packer writes it (the shortest integer,
  string, array and map headers; a card's groups in ascending order, as the store writes
  them). So a row taken here is, byte for byte, the row the store would write for what the
  general path makes of it: the bytes received are the canonical bytes;
- no key (card number, contract or account id) in two rows.

A map key cannot be repeated in a frame taken here (every map has its fields in one fixed
order), so the duplicate-key rule holds. The signature, the protocol version, the topic and
the ranges of version/part/parts are checked by the caller (:func:`wire.codec.decode`), which
falls back to the general path for anything out of range so the refusal has the same words.
``tests/wire/test_partscan.py`` checks with hypothesis that both paths agree.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

DEF MAX_LIMITS = 1000

cdef int64_t INT64_MAX = 9223372036854775807

#: the tables taken here, by the code :func:`items` takes
TABLE_CODES = {"fuel_cards": 1, "stop_list": 2, "contracts": 3, "club_accounts": 4}


cdef struct Reader:
    const uint8_t* d
    Py_ssize_t n
    Py_ssize_t i


cdef inline bint _sint(Reader* r, int64_t* out) noexcept:
    """A MessagePack integer that fits int64, written the shortest way (as msgpack packs it)."""
    if r.i >= r.n:
        return False
    cdef uint8_t b = r.d[r.i]
    cdef Py_ssize_t need, k
    cdef uint64_t u = 0
    cdef int64_t v
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
    if b <= 0xcf:  # unsigned: the shortest width
        if u > <uint64_t>INT64_MAX:
            return False
        if (b == 0xcc and u < 0x80) or (b == 0xcd and u <= 0xff) or (b == 0xce and u <= 0xffff) \
                or (b == 0xcf and u <= 0xffffffff):
            return False
        v = <int64_t>u
    else:  # signed: only negative values, the shortest width
        if need == 1:
            v = <int8_t>u
            if v >= -32:
                return False
        elif need == 2:
            v = <int16_t>u
            if v >= -128:
                return False
        elif need == 4:
            v = <int32_t>u
            if v >= -32768:
                return False
        else:
            v = <int64_t>u
            if v >= -2147483648:
                return False
    r.i += 1 + need
    out[0] = v
    return True


cdef inline bint _uint(Reader* r, int64_t* out, int64_t most) noexcept:
    """A canonical integer 0..``most``."""
    return _sint(r, out) and 0 <= out[0] <= most


cdef inline Py_ssize_t _str(Reader* r) noexcept:
    """The length of a canonical MessagePack str (fixstr, or str 8 from 32 bytes) at the reader
    (its bytes then follow at r.i), or -1."""
    if r.i >= r.n:
        return -1
    cdef uint8_t b = r.d[r.i]
    cdef Py_ssize_t n
    if 0xa0 <= b <= 0xbf:
        n = b - 0xa0
        r.i += 1
    elif b == 0xd9 and r.i + 1 < r.n and r.d[r.i + 1] >= 32:
        n = r.d[r.i + 1]
        r.i += 2
    else:
        return -1
    if r.i + n > r.n:
        return -1
    return n


cdef inline Py_ssize_t _array(Reader* r) noexcept:
    """The length of a canonical array header at the reader, or -1."""
    if r.i >= r.n:
        return -1
    cdef uint8_t b = r.d[r.i]
    cdef Py_ssize_t m
    if 0x90 <= b <= 0x9f:
        r.i += 1
        return b - 0x90
    if b == 0xdc and r.i + 3 <= r.n:
        m = (<Py_ssize_t>r.d[r.i + 1] << 8) | r.d[r.i + 2]
        if m < 16:
            return -1
        r.i += 3
        return m
    if b == 0xdd and r.i + 5 <= r.n:
        m = ((<Py_ssize_t>r.d[r.i + 1] << 24) | (<Py_ssize_t>r.d[r.i + 2] << 16)
             | (<Py_ssize_t>r.d[r.i + 3] << 8) | r.d[r.i + 4])
        if m <= 0xffff:
            return -1
        r.i += 5
        return m
    return -1


cdef inline bint _byte(Reader* r, uint8_t b) noexcept:
    if r.i >= r.n or r.d[r.i] != b:
        return False
    r.i += 1
    return True


cdef inline bint _key(Reader* r, const char* name, Py_ssize_t n) noexcept:
    """The map key ``name`` (a fixstr) at the reader."""
    if r.i + 1 + n > r.n or r.d[r.i] != 0xa0 + n or memcmp(r.d + r.i + 1, name, n) != 0:
        return False
    r.i += 1 + n
    return True


cdef inline bint _alnum(uint8_t c) noexcept:
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122)


cdef inline bint _in(uint64_t mask, int64_t v) noexcept:
    return 0 <= v < 64 and (mask >> v) & 1


cdef inline bint _card_no(Reader* r) noexcept:
    """A card number ([0-9A-Za-z]{1,32}) at the reader."""
    cdef Py_ssize_t m = _str(r), k
    if m < 1 or m > 32:
        return False
    for k in range(m):
        if not _alnum(r.d[r.i + k]):
            return False
    r.i += m
    return True


cdef inline bint _code(Reader* r) noexcept:
    """A product code ([A-Za-z0-9][A-Za-z0-9_.-]{0,31}) at the reader."""
    cdef Py_ssize_t n = _str(r), j
    cdef uint8_t c
    if n < 1 or n > 32 or not _alnum(r.d[r.i]):
        return False
    for j in range(1, n):
        c = r.d[r.i + j]
        if not (_alnum(c) or c == 95 or c == 46 or c == 45):  # _ . -
            return False
    r.i += n
    return True


cdef inline bint _tz(Reader* r) noexcept:
    """A time zone name ([A-Za-z0-9_+-]{1,32}(/[A-Za-z0-9_+-]{1,32}){0,3}) at the reader."""
    cdef Py_ssize_t n = _str(r), j, seg = 0, parts = 1
    cdef uint8_t c
    if n < 1:
        return False
    for j in range(n):
        c = r.d[r.i + j]
        if c == 47:  # /
            if seg == 0 or parts == 4:
                return False
            parts += 1
            seg = 0
        elif _alnum(c) or c == 95 or c == 43 or c == 45:  # _ + -
            seg += 1
            if seg > 32:
                return False
        else:
            return False
    if seg == 0:
        return False
    r.i += n
    return True


cdef inline int _digits(const uint8_t* d, int n) noexcept:
    cdef int v = 0, k
    for k in range(n):
        if not 48 <= d[k] <= 57:
            return -1
        v = v * 10 + (d[k] - 48)
    return v


cdef inline bint _date(Reader* r) noexcept:
    """An ISO date YYYY-MM-DD that :meth:`datetime.date.fromisoformat` takes, at the reader."""
    if _str(r) != 10:
        return False
    cdef const uint8_t* d = r.d + r.i
    if d[4] != 45 or d[7] != 45:
        return False
    cdef int y = _digits(d, 4), m = _digits(d + 5, 2), day = _digits(d + 8, 2), most
    if y < 1 or m < 1 or m > 12 or day < 1:
        return False
    if m == 2:
        most = 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    elif m == 4 or m == 6 or m == 9 or m == 11:
        most = 30
    else:
        most = 31
    if day > most:
        return False
    r.i += 10
    return True


cdef inline bint _nil_or_group(Reader* r, uint64_t groups) noexcept:
    cdef int64_t v
    if r.i < r.n and r.d[r.i] == 0xc0:
        r.i += 1
        return True
    return _sint(r, &v) and _in(groups, v)


cdef int64_t L_ID[MAX_LIMITS]
cdef bint L_HAS[MAX_LIMITS]


cdef bint _card(Reader* r, uint64_t kinds, uint64_t statuses, uint64_t units, uint64_t periods,
                uint64_t scopes, uint64_t groups, int64_t max_amount) noexcept:
    """A fuel-card row without fleet controls or balance fields, as the store writes it."""
    cdef int64_t v, prev, lid
    cdef Py_ssize_t n, k, j, n_lim, n_ctr
    if not _byte(r, 0x88) or not _key(r, b"card_no", 7) or not _card_no(r):
        return False
    if not _key(r, b"contract_id", 11) or not _uint(r, &v, INT64_MAX):
        return False
    if not _key(r, b"expires_on", 10) or not _date(r):
        return False
    if not _key(r, b"groups", 6):
        return False
    n = _array(r)
    if n < 0:
        return False
    prev = -1
    for k in range(n):  # ascending: each once, as the store writes them
        if not _sint(r, &v) or not _in(groups, v) or v <= prev:
            return False
        prev = v
    if not _key(r, b"limits", 6):
        return False
    n_lim = _array(r)
    if n_lim < 0 or n_lim > MAX_LIMITS:
        return False
    for k in range(n_lim):
        if (not _byte(r, 0x87) or not _key(r, b"limit_id", 8) or not _uint(r, &L_ID[k], INT64_MAX)
                or not _key(r, b"unit", 4) or not _sint(r, &v) or not _in(units, v)
                or not _key(r, b"period", 6) or not _sint(r, &v) or not _in(periods, v)
                or not _key(r, b"amount", 6) or not _uint(r, &v, max_amount)
                or not _key(r, b"scope", 5) or not _sint(r, &v) or not _in(scopes, v)
                or not _key(r, b"group", 5) or not _nil_or_group(r, groups)
                or not _key(r, b"product", 7)):
            return False
        if r.i < r.n and r.d[r.i] == 0xc0:
            r.i += 1
        elif not _code(r):
            return False
        for j in range(k):
            if L_ID[j] == L_ID[k]:
                return False  # a limit id twice
        L_HAS[k] = False
    if not _key(r, b"kind", 4) or not _sint(r, &v) or not _in(kinds, v):
        return False
    if not _key(r, b"status", 6) or not _sint(r, &v) or not _in(statuses, v):
        return False
    if not _key(r, b"counters", 8):
        return False
    n_ctr = _array(r)
    if n_ctr < 0 or n_ctr > MAX_LIMITS:
        return False
    for k in range(n_ctr):
        if (not _byte(r, 0x83) or not _key(r, b"limit_id", 8) or not _sint(r, &lid)
                or not _key(r, b"spent", 5) or not _sint(r, &v)
                or not _key(r, b"period_start", 12) or not _sint(r, &v)):
            return False
        for j in range(n_lim):
            if L_ID[j] == lid:
                break
        else:
            return False  # a counter of no limit
        if L_HAS[j]:
            return False  # two counters of one limit
        L_HAS[j] = True
    return True


cdef bint _stop(Reader* r) noexcept:
    """A stop-list row, as the store writes it."""
    cdef int64_t v
    return (_byte(r, 0x82) and _key(r, b"card_no", 7) and _card_no(r) and _key(r, b"listed_at_utc_s", 15)
            and _uint(r, &v, INT64_MAX))


cdef bint _contract(Reader* r, uint64_t tariffs, int64_t max_amount) noexcept:
    """A contract row without the balance rule's fields, as the store writes it."""
    cdef int64_t v
    cdef Py_ssize_t n, k
    if (not _byte(r, 0x87) or not _key(r, b"contract_id", 11) or not _uint(r, &v, INT64_MAX)
            or not _key(r, b"tz", 2) or not _tz(r)
            or not _key(r, b"home_region", 11) or not _uint(r, &v, INT64_MAX)
            or not _key(r, b"tariff", 6) or not _sint(r, &v) or not _in(tariffs, v)
            or not _key(r, b"balance_kop", 11) or not _sint(r, &v) or not -max_amount <= v <= max_amount
            or not _key(r, b"credit_line_kop", 15) or not _uint(r, &v, max_amount)
            or not _key(r, b"chosen_station_ids", 18)):
        return False
    n = _array(r)
    if n < 0 or n > 3:
        return False
    for k in range(n):
        if not _uint(r, &v, INT64_MAX):
            return False
    return True


DEF MAX_SCANNED = 64  # lots or cards of one account checked here (pairwise); more: the general path


cdef bint _account(Reader* r, uint64_t club_kinds, uint64_t club_statuses, int64_t max_amount) noexcept:
    """A club-account row without the balance rule's fields, as the store writes it."""
    cdef int64_t v
    cdef int64_t ids[MAX_SCANNED]
    cdef Py_ssize_t at[MAX_SCANNED]
    cdef Py_ssize_t lens[MAX_SCANNED]
    cdef Py_ssize_t n, k, j, m
    if (not _byte(r, 0x89) or not _key(r, b"account_id", 10) or not _uint(r, &v, INT64_MAX)
            or not _key(r, b"kind", 4) or not _sint(r, &v) or not _in(club_kinds, v)
            or not _key(r, b"activated", 9) or r.i >= r.n or not (r.d[r.i] == 0xc2 or r.d[r.i] == 0xc3)):
        return False
    r.i += 1
    if (not _key(r, b"status", 6) or not _sint(r, &v) or not _in(club_statuses, v)
            or not _key(r, b"balance_kop", 11) or not _sint(r, &v) or not -max_amount <= v <= max_amount
            or not _key(r, b"turnover_month", 14) or not _sint(r, &v)
            or not _key(r, b"turnover_kop", 12) or not _uint(r, &v, max_amount)
            or not _key(r, b"lots", 4)):
        return False
    n = _array(r)
    if n < 0 or n > MAX_SCANNED:
        return False
    for k in range(n):
        if (not _byte(r, 0x84) or not _key(r, b"lot_id", 6) or not _uint(r, &ids[k], INT64_MAX)
                or not _key(r, b"points", 6) or not _uint(r, &v, max_amount)
                or not _key(r, b"matures_at_s", 12) or not _sint(r, &v)
                or not _key(r, b"expires_at_s", 12) or not _sint(r, &v)):
            return False
        for j in range(k):
            if ids[j] == ids[k]:
                return False  # a lot id twice
    if not _key(r, b"cards", 5):
        return False
    n = _array(r)
    if n < 0 or n > MAX_SCANNED:
        return False
    for k in range(n):
        if not _byte(r, 0x82) or not _key(r, b"card_no", 7):
            return False
        m = _str(r)
        if m < 1:
            return False
        at[k], lens[k] = r.i, m
        r.i -= 1 if m < 32 else 2
        if not _card_no(r) or not _key(r, b"status", 6) or not _sint(r, &v) or not _in(club_statuses, v):
            return False
        for j in range(k):
            if lens[j] == m and memcmp(r.d + at[j], r.d + at[k], m) == 0:
                return False  # a card twice
    return True


cdef inline void _key_span(int code, const uint8_t* d, Py_ssize_t* at, Py_ssize_t* n, int64_t* v) noexcept:
    """Where the key of a row taken here is: a card number's offset and length (``at``, ``n``)
    or a contract's or account's id (``v``)."""
    cdef Reader r
    r.d, r.n, r.i = d, 32, 0
    if code >= 3:
        r.i = 13 if code == 3 else 12  # fixmap, "contract_id" / "account_id"
        _sint(&r, v)
        return
    r.n, r.i = 64, 9  # fixmap, "card_no"
    n[0] = _str(&r)
    at[0] = r.i


cdef inline bint _str_less(const uint8_t* a, Py_ssize_t na, const uint8_t* b, Py_ssize_t nb) noexcept:
    """a < b, as Python compares the (ASCII) strings."""
    cdef int c = memcmp(a, b, na if na < nb else nb)
    return c < 0 or (c == 0 and na < nb)


cdef object _key_at(int code, const uint8_t* d, Py_ssize_t n):
    """The row key of a row taken here (its first field): a card number, or a contract id."""
    cdef Reader r
    cdef Py_ssize_t m
    cdef int64_t v = 0
    r.d, r.n, r.i = d, n, 0
    if code == 3 or code == 4:
        r.i = 13 if code == 3 else 12  # fixmap, "contract_id" / "account_id"
        _sint(&r, &v)
        return v
    r.i = 9  # fixmap, "card_no"
    m = _str(&r)
    return (<bytes>d[r.i:r.i + m]).decode("ascii")


def scan_part(bytes data, Py_ssize_t max_rows, uint64_t kinds, uint64_t statuses, uint64_t units,
              uint64_t periods, uint64_t scopes, uint64_t groups, uint64_t tariffs, uint64_t club_kinds,
              uint64_t club_statuses, int64_t max_amount):
    """``(protocol version, table, version, part, parts, bounds)`` of snapshot frame ``data`` if
    it is one this module takes (module docstring), else None. ``bounds``: the rows' offsets in
    ``data``, n + 1 native uint32 (row i is ``data[bounds[i]:bounds[i + 1]]``). The masks are the
    valid values of each enum (bit v set: v is valid). The signature (the last 64 bytes) is not
    verified here."""
    cdef Reader r
    cdef int64_t proto, version, part, parts
    cdef Py_ssize_t n, k, at
    cdef int code
    cdef bint ok
    r.d = <const uint8_t*>PyBytes_AS_STRING(data)
    r.n = PyBytes_GET_SIZE(data)
    r.i = 0
    if r.n > 0xffffffff or r.n < 66:
        return None
    r.n -= 66  # the signature: bin 8 of 64 bytes, last
    if r.d[r.n] != 0xc4 or r.d[r.n + 1] != 64:
        return None
    if not _byte(&r, 0x95) or not _sint(&r, &proto) or not _key(&r, b"snapshot", 8) or not _byte(&r, 0xc0):
        return None
    if not _byte(&r, 0x85) or not _key(&r, b"table", 5):
        return None
    n = _str(&r)
    if n < 0:
        return None
    table = (<bytes>r.d[r.i:r.i + n]).decode("ascii", "replace")
    code = TABLE_CODES.get(table, 0)
    if code == 0:
        return None
    r.i += n
    if (not _key(&r, b"version", 7) or not _sint(&r, &version) or not _key(&r, b"part", 4)
            or not _sint(&r, &part) or not _key(&r, b"parts", 5) or not _sint(&r, &parts)
            or not _key(&r, b"rows", 4)):
        return None
    n = _array(&r)
    if n < 0 or n > max_rows:
        return None
    bounds = bytearray(4 * (n + 1))
    cdef uint32_t* b = <uint32_t*><char*>bounds
    cdef bint ascending = True
    cdef Py_ssize_t prev_at = 0, prev_len = 0, key_at = 0, key_len = 0
    cdef int64_t prev_id = -1, key_id = 0
    for k in range(n):
        b[k] = <uint32_t>r.i
        at = r.i
        if code == 1:
            ok = _card(&r, kinds, statuses, units, periods, scopes, groups, max_amount)
        elif code == 2:
            ok = _stop(&r)
        elif code == 3:
            ok = _contract(&r, tariffs, max_amount)
        else:
            ok = _account(&r, club_kinds, club_statuses, max_amount)
        if not ok:
            return None
        if ascending:  # keys in ascending order (as the host sends them) are each once: no object needed
            _key_span(code, r.d + at, &key_at, &key_len, &key_id)
            if code >= 3:
                ascending = key_id > prev_id
                prev_id = key_id
            else:
                key_at += at
                ascending = k == 0 or _str_less(r.d + prev_at, prev_len, r.d + key_at, key_len)
                prev_at, prev_len = key_at, key_len
    if r.i != r.n:
        return None  # bytes between the rows and the signature
    b[n] = <uint32_t>r.i
    if not ascending and len({_key_at(code, r.d + b[k], b[k + 1] - b[k]) for k in range(n)}) != n:
        return None  # a key twice: refused by the general path, in its words
    return proto, table, version, part, parts, bytes(bounds)


def iter_items(int code, bytes data, bytes bounds):
    """(key, row bytes) of each row at ``bounds`` in ``data`` (as :func:`scan_part` took
    them; ``code`` is the table's in :data:`TABLE_CODES`), one at a time: a writer that takes
    them as they come (``executemany``) holds one row's objects at a time."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(bounds) // 4 - 1, k
    cdef uint32_t s, e
    for k in range(n):
        s = (<const uint32_t*>PyBytes_AS_STRING(bounds))[k]
        e = (<const uint32_t*>PyBytes_AS_STRING(bounds))[k + 1]
        yield (_key_at(code, <const uint8_t*>PyBytes_AS_STRING(data) + s, e - s),
               PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + s, e - s))


def datas(bytes data, bytes bounds):
    """``[row bytes, ...]`` of the rows at ``bounds`` in ``data``."""
    cdef const uint8_t* d = <const uint8_t*>PyBytes_AS_STRING(data)
    cdef const uint32_t* b = <const uint32_t*>PyBytes_AS_STRING(bounds)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(bounds) // 4 - 1, k
    return [PyBytes_FromStringAndSize(<const char*>(d + b[k]), b[k + 1] - b[k]) for k in range(n)]
