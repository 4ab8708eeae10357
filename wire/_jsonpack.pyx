# cython: language_level=3
"""The edge's journal rows straight to their wire form: stored JSON text in, MessagePack out.

:func:`pack_rows` takes the journal's rows with each body as the canonical JSON text the
journal stored (``terminal.journal.canonical_json``: sorted keys, compact, UTF-8) and gives
each record's MessagePack map, byte for byte what ``msgpack.Packer(use_bin_type=True)``
makes of ``{"record_id", "lane", "txn_id", "kind", "at_utc_s", "body"}`` with the body
decoded from that text (``wire.codec.pack_record_rows``' answer), without a Python object
for any value of the body. It answers None when any row is not what it expects (then the
codec decodes the bodies and takes its careful path, which names what is wrong):

- a body is a JSON object of JSON values: ``null``, ``true``, ``false``, integers in signed
  64 bits written as canonical JSON writes them (no ``-0``, no leading zeros, no fraction or
  exponent: a float is refused further on), strings, arrays and objects, nested less than
  ``max_depth`` levels (the depth the record check of ``wire._wirecheck`` counts);
- no whitespace between tokens (compact separators), nothing after the body;
- object keys in strictly increasing order of their decoded text (so no key twice, and the
  order is the one the decoded dict would have);
- string escapes: the JSON ones, ``\\uXXXX`` outside the surrogates (a surrogate pair goes the
  careful way); a raw control character is not JSON.

The record's own fields are checked as ``wire._wirecheck.records_fast`` checks them (the
same character classes, spelled out the same way; ``tests/wire/test_jsonpack.py`` holds the
two to the same answers): the record id ``{site}-{ULID}``, the lane, the transaction id
``{site}:{lane}-{ULID}``, the kind, ``at_utc_s`` an ``int`` in 0..2**63-1, no record id twice.

Why: the journal read and the pack were the edge's largest share of sync CPU (issue 12): a
dict per body built by the JSON decoder only to be packed again at once.
``tests/wire/test_jsonpack.py`` holds it to the decode-then-pack answer with hypothesis.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from wire._ids cimport name as _name, ulid as _ulid
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memmove

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL
    bint PyUnicode_CheckExact(object o)
    bint PyLong_CheckExact(object o)
    bint PyTuple_CheckExact(object o)
    Py_ssize_t PyTuple_GET_SIZE(object o)
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1


cdef struct Buf:
    unsigned char* p
    Py_ssize_t n
    Py_ssize_t cap


cdef int _grow(Buf* b, Py_ssize_t more) noexcept nogil:
    """Room for ``more`` bytes; -2 if out of memory."""
    cdef Py_ssize_t cap
    cdef unsigned char* p
    if b.n + more <= b.cap:
        return 0
    cap = b.cap * 2
    while cap < b.n + more:
        cap *= 2
    p = <unsigned char*>realloc(b.p, cap)
    if p == NULL:
        return -2
    b.p = p
    b.cap = cap
    return 0


cdef inline void _be16(unsigned char* p, unsigned long long v) noexcept nogil:
    p[0] = (v >> 8) & 0xff
    p[1] = v & 0xff


cdef inline void _be32(unsigned char* p, unsigned long long v) noexcept nogil:
    p[0] = (v >> 24) & 0xff
    p[1] = (v >> 16) & 0xff
    p[2] = (v >> 8) & 0xff
    p[3] = v & 0xff


cdef inline void _be64(unsigned char* p, unsigned long long v) noexcept nogil:
    _be32(p, v >> 32)
    _be32(p + 4, v & 0xffffffffULL)


cdef int _str_head(Buf* b, Py_ssize_t n) noexcept nogil:
    """A MessagePack str header for ``n`` bytes (fixstr, str8, str16, str32: the smallest)."""
    if _grow(b, 5 + n) < 0:
        return -2
    if n < 32:
        b.p[b.n] = 0xa0 | n
        b.n += 1
    elif n < 256:
        b.p[b.n] = 0xd9
        b.p[b.n + 1] = n
        b.n += 2
    elif n < 65536:
        b.p[b.n] = 0xda
        _be16(b.p + b.n + 1, n)
        b.n += 3
    elif n <= 0xffffffffULL:
        b.p[b.n] = 0xdb
        _be32(b.p + b.n + 1, n)
        b.n += 5
    else:
        return -1
    return 0


cdef int _raw_str(Buf* b, const unsigned char* s, Py_ssize_t n) noexcept nogil:
    if _str_head(b, n) < 0:
        return -2
    memcpy(b.p + b.n, s, n)
    b.n += n
    return 0


cdef int _int(Buf* b, long long v) noexcept nogil:
    """A signed integer the way msgpack-python packs a Python int: the smallest form,
    unsigned forms for non-negative values."""
    cdef unsigned long long u
    if _grow(b, 9) < 0:
        return -2
    cdef unsigned char* p = b.p + b.n
    if v >= 0:
        u = <unsigned long long>v
        if u < 128:
            p[0] = <unsigned char>u
            b.n += 1
        elif u < 256:
            p[0] = 0xcc
            p[1] = <unsigned char>u
            b.n += 2
        elif u < 65536:
            p[0] = 0xcd
            _be16(p + 1, u)
            b.n += 3
        elif u <= 0xffffffffULL:
            p[0] = 0xce
            _be32(p + 1, u)
            b.n += 5
        else:
            p[0] = 0xcf
            _be64(p + 1, u)
            b.n += 9
    else:
        if v >= -32:
            p[0] = <unsigned char>(v & 0xff)
            b.n += 1
        elif v >= -128:
            p[0] = 0xd0
            p[1] = <unsigned char>(v & 0xff)
            b.n += 2
        elif v >= -32768:
            p[0] = 0xd1
            _be16(p + 1, <unsigned long long>v & 0xffff)
            b.n += 3
        elif v >= -2147483648:
            p[0] = 0xd2
            _be32(p + 1, <unsigned long long>v & 0xffffffffULL)
            b.n += 5
        else:
            p[0] = 0xd3
            _be64(p + 1, <unsigned long long>v)
            b.n += 9
    return 0


cdef struct Src:
    const unsigned char* s
    Py_ssize_t i
    Py_ssize_t end
    int max_depth


cdef inline int _hex(unsigned char c) noexcept nogil:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


cdef int _u4(Src* r, Py_ssize_t j) noexcept nogil:
    """The code point of the 4 hex digits at ``j``, -1 if they are not hex."""
    cdef int k, h, cp = 0
    if j + 4 > r.end:
        return -1
    for k in range(4):
        h = _hex(r.s[j + k])
        if h < 0:
            return -1
        cp = cp * 16 + h
    return cp


cdef int _string(Src* r, Buf* b, Py_ssize_t* decoded) noexcept nogil:
    """The JSON string at ``r.i`` (its opening quote) as a MessagePack str; its length in
    bytes, decoded, in ``decoded``."""
    cdef Py_ssize_t j = r.i + 1, start = r.i + 1, n = 0
    cdef bint esc = False
    cdef unsigned char c
    cdef int cp
    while True:  # the length of the decoded string, and where it ends
        if j >= r.end:
            return -1
        c = r.s[j]
        if c == 34:  # '"'
            break
        if c < 0x20:
            return -1
        if c == 92:  # '\\'
            esc = True
            if j + 1 >= r.end:
                return -1
            c = r.s[j + 1]
            if c == 117:  # 'u'
                cp = _u4(r, j + 2)
                if cp < 0 or 0xd800 <= cp <= 0xdfff:
                    return -1
                n += 1 if cp < 0x80 else (2 if cp < 0x800 else 3)
                j += 6
            elif c == 34 or c == 92 or c == 47 or c == 98 or c == 102 or c == 110 or c == 114 or c == 116:
                n += 1
                j += 2
            else:
                return -1
        else:
            n += 1
            j += 1
    r.i = j + 1
    decoded[0] = n
    if not esc:
        return _raw_str(b, r.s + start, n)
    if _str_head(b, n) < 0:
        return -2
    cdef unsigned char* p = b.p + b.n
    j = start
    while j < r.i - 1:
        c = r.s[j]
        if c != 92:
            p[0] = c
            p += 1
            j += 1
            continue
        c = r.s[j + 1]
        if c == 117:
            cp = _u4(r, j + 2)
            if cp < 0x80:
                p[0] = cp
                p += 1
            elif cp < 0x800:
                p[0] = 0xc0 | (cp >> 6)
                p[1] = 0x80 | (cp & 0x3f)
                p += 2
            else:
                p[0] = 0xe0 | (cp >> 12)
                p[1] = 0x80 | ((cp >> 6) & 0x3f)
                p[2] = 0x80 | (cp & 0x3f)
                p += 3
            j += 6
            continue
        if c == 98:
            p[0] = 8
        elif c == 102:
            p[0] = 12
        elif c == 110:
            p[0] = 10
        elif c == 114:
            p[0] = 13
        elif c == 116:
            p[0] = 9
        else:  # '"', '\\', '/'
            p[0] = c
        p += 1
        j += 2
    b.n += n
    return 0


cdef int _number(Src* r, Buf* b) noexcept nogil:
    """A canonical JSON integer in signed 64 bits; anything else (a fraction, an exponent,
    ``-0``, a leading zero, out of range) is not ours."""
    cdef Py_ssize_t j = r.i
    cdef bint neg = False
    cdef unsigned long long v = 0, d
    cdef unsigned long long limit = 9223372036854775807ULL
    cdef unsigned char c
    if r.s[j] == 45:  # '-'
        neg = True
        limit = (9223372036854775807ULL + 1)
        j += 1
    if j >= r.end or not 48 <= r.s[j] <= 57:
        return -1
    if r.s[j] == 48:  # '0': alone, and not '-0'
        if neg:
            return -1
        j += 1
    else:
        while j < r.end and 48 <= r.s[j] <= 57:
            d = r.s[j] - 48
            if v > (limit - d) // 10:
                return -1
            v = v * 10 + d
            j += 1
    if j < r.end:
        c = r.s[j]
        if c == 46 or c == 101 or c == 69 or 48 <= c <= 57:  # '.', 'e', 'E', a digit after 0
            return -1
    r.i = j
    if neg:
        if v == (9223372036854775807ULL + 1):
            return _int(b, <long long>(-9223372036854775807LL - 1))
        return _int(b, -<long long>v)
    return _int(b, <long long>v)


cdef int _literal(Src* r, Buf* b, const char* word, Py_ssize_t n, unsigned char code) noexcept nogil:
    if r.i + n > r.end or memcmp(r.s + r.i, word, n) != 0:
        return -1
    r.i += n
    if _grow(b, 1) < 0:
        return -2
    b.p[b.n] = code
    b.n += 1
    return 0


cdef int _head_fix(Buf* b, Py_ssize_t at, Py_ssize_t count, unsigned char fix, unsigned char c16,
                   unsigned char c32) noexcept nogil:
    """Write the container header reserved (one byte) at ``at`` for ``count`` items, moving
    the items along when a 16- or 32-bit count needs the room."""
    cdef Py_ssize_t extra
    if count < 16:
        b.p[at] = fix | count
        return 0
    extra = 2 if count < 65536 else 4
    if count > 0xffffffffULL:
        return -1
    if _grow(b, extra) < 0:
        return -2
    memmove(b.p + at + 1 + extra, b.p + at + 1, b.n - at - 1)
    b.n += extra
    if extra == 2:
        b.p[at] = c16
        _be16(b.p + at + 1, count)
    else:
        b.p[at] = c32
        _be32(b.p + at + 1, count)
    return 0


cdef int _object(Src* r, Buf* b, int depth) noexcept nogil:
    cdef Py_ssize_t at, count = 0, key, klen, prev = -1, plen = 0, m
    cdef int rc, cmp
    if depth >= r.max_depth:
        return -1
    if _grow(b, 1) < 0:
        return -2
    at = b.n
    b.n += 1
    r.i += 1  # '{'
    if r.i < r.end and r.s[r.i] == 125:  # '}'
        r.i += 1
        b.p[at] = 0x80
        return 0
    while True:
        if r.i >= r.end or r.s[r.i] != 34:
            return -1
        rc = _string(r, b, &klen)
        if rc < 0:
            return rc
        key = b.n - klen  # the decoded key, where it was just written
        if prev >= 0:  # strictly increasing: UTF-8 byte order is code point order (Python's sort)
            m = klen if klen < plen else plen
            cmp = memcmp(b.p + key, b.p + prev, m)
            if cmp < 0 or (cmp == 0 and klen <= plen):
                return -1
        prev, plen = key, klen
        if r.i >= r.end or r.s[r.i] != 58:  # ':'
            return -1
        r.i += 1
        rc = _value(r, b, depth + 1)
        if rc < 0:
            return rc
        count += 1
        if r.i >= r.end:
            return -1
        if r.s[r.i] == 44:  # ','
            r.i += 1
            continue
        if r.s[r.i] == 125:
            r.i += 1
            return _head_fix(b, at, count, 0x80, 0xde, 0xdf)
        return -1


cdef int _array(Src* r, Buf* b, int depth) noexcept nogil:
    cdef Py_ssize_t at, count = 0
    cdef int rc
    if depth >= r.max_depth:
        return -1
    if _grow(b, 1) < 0:
        return -2
    at = b.n
    b.n += 1
    r.i += 1  # '['
    if r.i < r.end and r.s[r.i] == 93:  # ']'
        r.i += 1
        b.p[at] = 0x90
        return 0
    while True:
        rc = _value(r, b, depth + 1)
        if rc < 0:
            return rc
        count += 1
        if r.i >= r.end:
            return -1
        if r.s[r.i] == 44:
            r.i += 1
            continue
        if r.s[r.i] == 93:
            r.i += 1
            return _head_fix(b, at, count, 0x90, 0xdc, 0xdd)
        return -1


cdef int _value(Src* r, Buf* b, int depth) noexcept nogil:
    cdef unsigned char c
    cdef Py_ssize_t n
    if r.i >= r.end:
        return -1
    c = r.s[r.i]
    if c == 34:
        return _string(r, b, &n)
    if c == 123:
        return _object(r, b, depth)
    if c == 91:
        return _array(r, b, depth)
    if c == 45 or 48 <= c <= 57:
        return _number(r, b)
    if c == 116:
        return _literal(r, b, b"true", 4, 0xc3)
    if c == 102:
        return _literal(r, b, b"false", 5, 0xc2)
    if c == 110:
        return _literal(r, b, b"null", 4, 0xc0)
    return -1


cdef int _body(Buf* b, const unsigned char* s, Py_ssize_t n, int max_depth) noexcept nogil:
    """The canonical JSON object ``s[:n]`` as MessagePack, appended to ``b``."""
    cdef Src r
    cdef int rc
    r.s = s
    r.i = 0
    r.end = n
    r.max_depth = max_depth
    if n < 2 or s[0] != 123:
        return -1
    rc = _object(&r, b, 0)
    if rc < 0:
        return rc
    return 0 if r.i == n else -1


cdef int _field(Buf* b, object v) except -3:
    """A str field (an id, a lane, a kind) as a MessagePack str; -1 if it is not a str."""
    cdef Py_ssize_t n
    cdef const char* s
    if not PyUnicode_CheckExact(v):
        return -1
    s = PyUnicode_AsUTF8AndSize(v, &n)
    if _raw_str(b, <const unsigned char*>s, n) < 0:
        raise MemoryError()
    return 0


def body_to_msgpack(str text not None, int max_depth):
    """The MessagePack of the JSON object ``text`` (canonical JSON, as the journal stores a
    body), or None if ``text`` is not what this module packs (see the module's doc)."""
    cdef Buf b
    cdef Py_ssize_t n
    cdef const char* s = PyUnicode_AsUTF8AndSize(text, &n)
    cdef int rc
    b.cap = 256 if n < 128 else 2 * n
    b.n = 0
    b.p = <unsigned char*>malloc(b.cap)
    if b.p == NULL:
        raise MemoryError()
    try:
        rc = _body(&b, <const unsigned char*>s, n, max_depth)
        if rc == -2:
            raise MemoryError()
        if rc < 0:
            return None
        return PyBytes_FromStringAndSize(<char*>b.p, b.n)
    finally:
        free(b.p)




cdef inline bint _ascii(object v):
    return PyUnicode_CheckExact(v) and PyUnicode_IS_ASCII(v)


cdef bint _fields_ok(object rid, object lane, object txn, object kind, const unsigned char* site,
                     Py_ssize_t ns):
    """The record id, lane, transaction id and kind as ``wire._wirecheck`` takes them."""
    cdef const unsigned char* s
    cdef Py_ssize_t i, nr, nt, nl
    if not _ascii(rid) or not _ascii(lane) or not _ascii(txn) or not _ascii(kind):
        return False
    nr = PyUnicode_GET_LENGTH(rid)
    if nr != ns + 27:
        return False
    s = <const unsigned char*>PyUnicode_DATA(rid)
    for i in range(ns):
        if s[i] != site[i]:
            return False
    if s[ns] != 45 or not _ulid(s + ns + 1):  # '-'
        return False
    if not _name(<const unsigned char*>PyUnicode_DATA(lane), PyUnicode_GET_LENGTH(lane), False):
        return False
    if not _name(<const unsigned char*>PyUnicode_DATA(kind), PyUnicode_GET_LENGTH(kind), True):
        return False
    nt = PyUnicode_GET_LENGTH(txn)
    nl = nt - ns - 1 - 27  # the lane's length
    if nl < 1:
        return False
    s = <const unsigned char*>PyUnicode_DATA(txn)
    for i in range(ns):
        if s[i] != site[i]:
            return False
    if s[ns] != 58 or s[nt - 27] != 45:  # ':', '-'
        return False
    return _name(s + ns + 1, nl, False) and _ulid(s + nt - 26)


# the record map's keys, packed: the order of wire.codec's record schema
cdef bytes _K_RECORD = b"\xa9record_id"
cdef bytes _K_LANE = b"\xa4lane"
cdef bytes _K_TXN = b"\xa6txn_id"
cdef bytes _K_KIND = b"\xa4kind"
cdef bytes _K_AT = b"\xa8at_utc_s"
cdef bytes _K_BODY = b"\xa4body"


cdef int _put(Buf* b, bytes k) except -1:
    cdef Py_ssize_t n = len(k)
    if _grow(b, n) < 0:
        raise MemoryError()
    memcpy(b.p + b.n, <const char*>k, n)
    b.n += n
    return 0


def pack_rows(list rows not None, str site_id not None, int max_depth):
    """Each journal row ``(seq, record_id, site_id, lane, txn_id, kind, at_utc_s, body_text)``
    as the MessagePack of its wire record map, or None if any row is not what this module
    packs (another site's, a field the record check refuses, a record id twice, a body it
    does not take: see the module's doc). ``max_depth`` must be small (the codec passes at
    most 256): the body walk recurses."""
    cdef Buf b
    cdef Py_ssize_t n, start
    cdef const char* s
    cdef int rc, overflow
    cdef long long at_v
    cdef const unsigned char* site_p
    cdef Py_ssize_t ns
    if not PyUnicode_IS_ASCII(site_id):
        return None  # a site id is ASCII (SITE_ID_RE): nothing of another site can match
    site_p = <const unsigned char*>PyUnicode_DATA(site_id)
    ns = PyUnicode_GET_LENGTH(site_id)
    out = []
    seen = set()
    b.cap = 4096
    b.n = 0
    b.p = <unsigned char*>malloc(b.cap)
    if b.p == NULL:
        raise MemoryError()
    try:
        for row in rows:
            if not PyTuple_CheckExact(row) or PyTuple_GET_SIZE(row) != 8:
                return None
            rid = (<tuple>row)[1]
            site = (<tuple>row)[2]
            at = (<tuple>row)[6]
            text = (<tuple>row)[7]
            if site != site_id or not PyUnicode_CheckExact(site) or not PyLong_CheckExact(at) \
                    or not PyUnicode_CheckExact(text):
                return None
            at_v = PyLong_AsLongLongAndOverflow(at, &overflow)
            if overflow or at_v < 0:
                return None
            if not _fields_ok(rid, (<tuple>row)[3], (<tuple>row)[4], (<tuple>row)[5], site_p, ns):
                return None
            if rid in seen:
                return None
            seen.add(rid)
            b.p[0] = 0x86  # a map of 6 (the buffer holds at least 4096 bytes)
            b.n = 1
            _put(&b, _K_RECORD)
            if _field(&b, rid) < 0:
                return None
            _put(&b, _K_LANE)
            if _field(&b, (<tuple>row)[3]) < 0:
                return None
            _put(&b, _K_TXN)
            if _field(&b, (<tuple>row)[4]) < 0:
                return None
            _put(&b, _K_KIND)
            if _field(&b, (<tuple>row)[5]) < 0:
                return None
            _put(&b, _K_AT)
            if _int(&b, at_v) < 0:
                raise MemoryError()
            _put(&b, _K_BODY)
            s = PyUnicode_AsUTF8AndSize(text, &n)
            rc = _body(&b, <const unsigned char*>s, n, max_depth)
            if rc == -2:
                raise MemoryError()
            if rc < 0:
                return None
            out.append(PyBytes_FromStringAndSize(<char*>b.p, b.n))
        return out
    except UnicodeEncodeError:  # a str with a lone surrogate: the careful path names it
        return None
    finally:
        free(b.p)
