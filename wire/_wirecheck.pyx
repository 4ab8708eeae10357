# cython: language_level=3
"""The one-pass check of a batch's records (``wire.codec._records_fast``) in C.

:func:`records_fast` answers exactly what the Python ``_records_fast`` answers: the batch's
records as ``WireRecord`` objects when every one is well formed, ``None`` when anything is
off (then the codec's careful Python path names what is wrong, in the same words as ever).
The patterns are spelled out as byte tests here instead of regular expressions:

- a record id is ``{site}-`` and a ULID (``[0-7][0-9A-HJKMNP-TV-Z]{25}``);
- a transaction id is ``{site}:``, a lane (``[A-Za-z0-9][A-Za-z0-9_.-]{0,63}``), ``-`` and a ULID;
- a lane is a site id; a kind is ``[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}``;
- ``at_utc_s`` an ``int`` (not a subclass) in 0..2**63-1; the body a ``dict`` of plain JSON
  values (exact ``str`` keys; ``str``, ``bool``, ``None``, ``int`` in signed 64 bits, ``list``
  and ``dict`` nested less than ``max_depth`` levels).

Why: the per-record checks and the ``WireRecord`` constructions were the Python half of
``wire.decode`` on the host's workers (issue 12). ``tests/wire/test_native_records.py``
checks this module against the Python path with hypothesis. It lives in ``wire`` (not
``native``) because ``wire`` must not load the evaluator package (tests/wire/test_package.py).
"""

from cpython.long cimport PyLong_AsLongLongAndOverflow
from wire._ids cimport name as _name, ulid as _ulid

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void* PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    int PyObject_GenericSetAttr(object o, object name, object value) except -1
    bint PyLong_CheckExact(object o)
    bint PyUnicode_CheckExact(object o)
    bint PyDict_CheckExact(object o)
    bint PyList_CheckExact(object o)
    bint PyBool_Check(object o)


cdef object _RECORD_ID = "record_id"
cdef object _SITE_ID = "site_id"
cdef object _LANE = "lane"
cdef object _TXN_ID = "txn_id"
cdef object _KIND = "kind"
cdef object _AT = "at_utc_s"
cdef object _BODY = "body"
cdef long long _INT64_MAX = 9223372036854775807


cdef inline bint _ascii_name(object v, bint colon):
    if not PyUnicode_CheckExact(v) or not PyUnicode_IS_ASCII(v):
        return False
    return _name(<const unsigned char*>PyUnicode_DATA(v), PyUnicode_GET_LENGTH(v), colon)


cdef bint _json_ok(object container, int depth, int max_depth) except -1:
    """Whether ``container`` (a dict or a list) holds plain JSON values only, as
    ``wire.codec._json_ok`` decides."""
    cdef int overflow
    if depth >= max_depth:
        return False
    if PyDict_CheckExact(container):
        for k in <dict>container:
            if not PyUnicode_CheckExact(k):
                return False
        items = (<dict>container).values()
    else:
        items = container
    for v in items:
        if v is None or PyUnicode_CheckExact(v) or PyBool_Check(v):
            continue
        if PyLong_CheckExact(v):
            PyLong_AsLongLongAndOverflow(v, &overflow)
            if overflow:
                return False
        elif PyDict_CheckExact(v) or PyList_CheckExact(v):
            if not _json_ok(v, depth + 1, max_depth):
                return False
        else:
            return False
    return True


def records_fast(list records not None, str site_id not None, int max_depth, object keyset, object record_type):
    """The records of a batch as ``record_type`` objects (``wire.messages.WireRecord``) when
    every one is well formed, else None: the answer of ``wire.codec._records_fast``.
    ``record_type`` None: only the answer, True or None (the edge's check before packing).
    ``keyset`` is the record map's frozenset of field names. ``max_depth`` must be small
    (the codec passes at most 256): the body walk recurses."""
    cdef Py_ssize_t ns, nr, nt, nl, i
    cdef const unsigned char* s
    cdef const unsigned char* site
    cdef int overflow
    cdef long long at_v
    if not PyUnicode_IS_ASCII(site_id):
        return None  # a site id is ASCII (SITE_ID_RE): nothing of another site can match
    site = <const unsigned char*>PyUnicode_DATA(site_id)
    ns = PyUnicode_GET_LENGTH(site_id)
    out = []
    seen = set()
    new = object.__new__
    for r in records:
        if not PyDict_CheckExact(r) or (<dict>r).keys() != keyset:
            return None
        rid = (<dict>r)["record_id"]
        lane = (<dict>r)["lane"]
        txn = (<dict>r)["txn_id"]
        kind = (<dict>r)["kind"]
        at = (<dict>r)["at_utc_s"]
        body = (<dict>r)["body"]
        # record id: {site}-{ULID}
        if not PyUnicode_CheckExact(rid) or not PyUnicode_IS_ASCII(rid):
            return None
        nr = PyUnicode_GET_LENGTH(rid)
        if nr != ns + 27:
            return None
        s = <const unsigned char*>PyUnicode_DATA(rid)
        for i in range(ns):
            if s[i] != site[i]:
                return None
        if s[ns] != 45 or not _ulid(s + ns + 1):  # '-'
            return None
        # lane, kind
        if not _ascii_name(lane, False) or not _ascii_name(kind, True):
            return None
        # txn id: {site}:{lane}-{ULID}
        if not PyUnicode_CheckExact(txn) or not PyUnicode_IS_ASCII(txn):
            return None
        nt = PyUnicode_GET_LENGTH(txn)
        nl = nt - ns - 1 - 27  # the lane's length
        if nl < 1:
            return None
        s = <const unsigned char*>PyUnicode_DATA(txn)
        for i in range(ns):
            if s[i] != site[i]:
                return None
        if s[ns] != 58 or s[nt - 27] != 45:  # ':', '-'
            return None
        if not _name(s + ns + 1, nl, False) or not _ulid(s + nt - 26):
            return None
        # at_utc_s: an int in 0..2**63-1
        if not PyLong_CheckExact(at):
            return None
        at_v = PyLong_AsLongLongAndOverflow(at, &overflow)
        if overflow or at_v < 0:
            return None
        if not PyDict_CheckExact(body) or not _json_ok(body, 0, max_depth):
            return None
        if rid in seen:
            return None
        seen.add(rid)
        if record_type is None:
            continue
        # what the frozen dataclass's __init__ does: object.__setattr__ per field, in order
        w = new(record_type)
        PyObject_GenericSetAttr(w, _RECORD_ID, rid)
        PyObject_GenericSetAttr(w, _SITE_ID, site_id)
        PyObject_GenericSetAttr(w, _LANE, lane)
        PyObject_GenericSetAttr(w, _TXN_ID, txn)
        PyObject_GenericSetAttr(w, _KIND, kind)
        PyObject_GenericSetAttr(w, _AT, at)
        PyObject_GenericSetAttr(w, _BODY, body)
        out.append(w)
    return True if record_type is None else tuple(out)


# --- the frame reader: one pass over a frame's MessagePack bytes ------------------------------
#
# ``read_frame`` is ``wire.codec._unpack_strict``'s answer for the frames it can read, built
# in one walk over the bytes: no ``msgpack.Unpacker`` and no repack to prove that no map holds
# a key twice (each map is checked as it is built: its dict must have one entry per key read).
# It returns None for anything it does not read itself (malformed or truncated bytes, a map key
# twice or not a str, a float, an extension type, a string that is not UTF-8, nesting deeper
# than _MAX_NEST, bytes after the frame): the strict reader then names what is wrong, in the
# same words as ever. tests/wire/test_native_frame.py holds it to the strict reader's answers.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeUTF8
from cpython.long cimport PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.dict cimport PyDict_SetItem
from cpython.ref cimport Py_INCREF
from libc.string cimport memcmp

cdef extern from "Python.h":
    Py_ssize_t PyDict_GET_SIZE(object o)

cdef int _MAX_NEST = 200  # msgpack's own stack is 1024 deep; past this the strict reader reads it
cdef int _CACHE_SLOTS = 1024  # short strings (map keys, lanes, kinds, ...) made once, reused
cdef int _CACHE_MAX_LEN = 32
cdef list _cache = [None] * _CACHE_SLOTS


cdef class _Stop(Exception):
    pass


cdef struct _Reader:
    const unsigned char* p
    Py_ssize_t n
    Py_ssize_t pos


cdef inline bint _need(_Reader* r, Py_ssize_t k) noexcept:
    return r.n - r.pos >= k


cdef inline unsigned long long _be(const unsigned char* s, int k) noexcept:
    cdef unsigned long long v = 0
    cdef int i
    for i in range(k):
        v = (v << 8) | s[i]
    return v


cdef object _str(_Reader* r, Py_ssize_t k):
    """A str of the next ``k`` bytes (UTF-8, strictly); a short one from the cache."""
    cdef const unsigned char* s
    cdef unsigned int h
    cdef Py_ssize_t i
    cdef object hit
    if not _need(r, k):
        raise _Stop()
    s = r.p + r.pos
    r.pos += k
    if k <= _CACHE_MAX_LEN:
        h = <unsigned int>k * 2654435761u
        for i in range(k):
            h = (h ^ s[i]) * 16777619u
        h = (h ^ (h >> 15)) & (_CACHE_SLOTS - 1)
        hit = _cache[h]
        if hit is not None and PyUnicode_GET_LENGTH(hit) == k and PyUnicode_IS_ASCII(hit) and \
                memcmp(PyUnicode_DATA(hit), s, k) == 0:
            return hit
        try:
            out = PyUnicode_DecodeUTF8(<const char*>s, k, NULL)
        except UnicodeDecodeError:
            raise _Stop()
        if PyUnicode_IS_ASCII(out):
            _cache[h] = out
        return out
    try:
        return PyUnicode_DecodeUTF8(<const char*>s, k, NULL)
    except UnicodeDecodeError:
        raise _Stop()


cdef object _bin(_Reader* r, Py_ssize_t k):
    if not _need(r, k):
        raise _Stop()
    out = PyBytes_FromStringAndSize(<const char*>(r.p + r.pos), k)
    r.pos += k
    return out


cdef object _array(_Reader* r, Py_ssize_t k, int depth):
    cdef Py_ssize_t i
    if k > r.n - r.pos:  # each element takes a byte at least
        raise _Stop()
    out = PyList_New(k)
    for i in range(k):
        v = _value(r, depth)
        Py_INCREF(v)
        PyList_SET_ITEM(out, i, v)
    return out


cdef object _map(_Reader* r, Py_ssize_t k, int depth):
    cdef Py_ssize_t i
    cdef unsigned char c
    if k > (r.n - r.pos) // 2:  # a key and a value take a byte each at least
        raise _Stop()
    out = {}
    for i in range(k):
        if not _need(r, 1):
            raise _Stop()
        c = r.p[r.pos]
        r.pos += 1
        if 0xa0 <= c <= 0xbf:
            key = _str(r, c & 0x1f)
        elif c == 0xd9 and _need(r, 1):
            r.pos += 1
            key = _str(r, r.p[r.pos - 1])
        elif c == 0xda and _need(r, 2):
            r.pos += 2
            key = _str(r, <Py_ssize_t>_be(r.p + r.pos - 2, 2))
        elif c == 0xdb and _need(r, 4):
            r.pos += 4
            key = _str(r, <Py_ssize_t>_be(r.p + r.pos - 4, 4))
        else:
            raise _Stop()  # not a str key (bytes, an int, ...): the strict reader decides
        PyDict_SetItem(out, key, _value(r, depth))
        if PyDict_GET_SIZE(out) != i + 1:
            raise _Stop()  # a key twice
    return out


cdef object _value(_Reader* r, int depth):
    cdef unsigned char c
    cdef Py_ssize_t k
    if depth >= _MAX_NEST or not _need(r, 1):
        raise _Stop()
    c = r.p[r.pos]
    r.pos += 1
    if c <= 0x7f:
        return PyLong_FromLongLong(c)
    if c >= 0xe0:
        return PyLong_FromLongLong(<signed char>c)
    if c <= 0x8f:
        return _map(r, c & 0x0f, depth + 1)
    if c <= 0x9f:
        return _array(r, c & 0x0f, depth + 1)
    if c <= 0xbf:
        return _str(r, c & 0x1f)
    if c == 0xc0:
        return None
    if c == 0xc2:
        return False
    if c == 0xc3:
        return True
    if c == 0xcc or c == 0xd0 or c == 0xd9 or c == 0xc4:
        k = 1
    elif c == 0xcd or c == 0xd1 or c == 0xda or c == 0xc5 or c == 0xdc or c == 0xde:
        k = 2
    elif c == 0xce or c == 0xd2 or c == 0xdb or c == 0xc6 or c == 0xdd or c == 0xdf:
        k = 4
    elif c == 0xcf or c == 0xd3:
        k = 8
    else:
        raise _Stop()  # c1 (never used), floats, extension types: the strict reader decides
    if not _need(r, k):
        raise _Stop()
    cdef unsigned long long v = _be(r.p + r.pos, <int>k)
    r.pos += k
    if 0xcc <= c <= 0xcf:
        return PyLong_FromUnsignedLongLong(v)
    if 0xd0 <= c <= 0xd3:
        if k == 1:
            return PyLong_FromLongLong(<signed char>v)
        if k == 2:
            return PyLong_FromLongLong(<short>v)
        if k == 4:
            return PyLong_FromLongLong(<int>v)
        return PyLong_FromLongLong(<long long>v)
    if v > <unsigned long long>(r.n - r.pos):  # a length past the end of the frame
        raise _Stop()
    if c == 0xd9 or c == 0xda or c == 0xdb:
        return _str(r, <Py_ssize_t>v)
    if c == 0xc4 or c == 0xc5 or c == 0xc6:
        return _bin(r, <Py_ssize_t>v)
    if c == 0xdc or c == 0xdd:
        return _array(r, <Py_ssize_t>v, depth + 1)
    return _map(r, <Py_ssize_t>v, depth + 1)


def read_frame(bytes data not None, int fields):
    """``(version, type, site, payload, signature)`` of a frame that is a MessagePack array
    of ``fields`` elements and nothing after it, every map with str keys each once and no
    float or extension type anywhere; else None (the strict reader names what is wrong).
    The version is not checked here."""
    cdef _Reader r
    cdef unsigned char c
    cdef Py_ssize_t k
    r.p = <const unsigned char*>PyBytes_AS_STRING(data)
    r.n = PyBytes_GET_SIZE(data)
    r.pos = 0
    if r.n < 1:
        return None
    c = r.p[0]
    r.pos = 1
    if 0x90 <= c <= 0x9f:
        k = c & 0x0f
    elif c == 0xdc and r.n >= 3:
        k = <Py_ssize_t>_be(r.p + 1, 2)
        r.pos = 3
    elif c == 0xdd and r.n >= 5:
        k = <Py_ssize_t>_be(r.p + 1, 4)
        r.pos = 5
    else:
        return None
    if k != fields:
        return None
    try:
        out = tuple([_value(&r, 1) for _ in range(k)])
    except Exception:  # _Stop, or e.g. MemoryError: the strict reader decides
        return None
    if r.pos != r.n:
        return None
    return out
