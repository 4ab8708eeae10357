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
cdef object _R_BODY_JSON = "body_json"
cdef object _R_BODY_FIELDS = "body_fields"
cdef object _R_BODY_PACKED = "body_packed"


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
        PyObject_GenericSetAttr(w, _R_BODY_JSON, None)
        PyObject_GenericSetAttr(w, _R_BODY_FIELDS, None)
        PyObject_GenericSetAttr(w, _R_BODY_PACKED, None)
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
from libc.string cimport memcmp, memcpy

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


# --- the batch reader: a batch frame checked and read in one pass, bodies left as bytes -------
#
# ``read_batch`` is, for a batch frame, the answer of ``read_frame`` followed by
# ``records_fast``, without building any body: each body's MessagePack is checked where it lies
# (string keys, each once, UTF-8; ints in signed 64 bits; nil, bools, strings, arrays, maps;
# nested less than ``max_depth``), written as JSON text (what ``msgspec.json.encode`` makes of
# the decoded dict: compact, keys in the order received, the same escapes) and kept as its
# bytes, which the record's ``body`` is built from when something reads it
# (``wire.messages.WireRecord``). For the kinds in ``hot`` the values at the given paths (ints
# and strings) are picked out on the way (``wire.bodies.HOT_FIELDS``). Anything it does not
# take returns None: then ``read_frame`` and ``records_fast`` decide, and the careful path names
# what is wrong, in the same words as ever.

from cpython.unicode cimport PyUnicode_FromStringAndSize
from libc.stdlib cimport malloc, realloc, free

cdef extern from "Python.h":
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)

cdef extern from *:
    """
    #include <structmember.h>
    /* The offset of a __slots__ member (a member descriptor of an object field), else -1. */
    static Py_ssize_t _wc_slot_offset(PyObject* d) {
        if (Py_TYPE(d) != &PyMemberDescr_Type) return -1;
        PyMemberDef* m = ((PyMemberDescrObject*)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY)) return -1;
        return m->offset;
    }
    /* What the member descriptor's set does: the slot at ``off`` of ``o`` holds ``v``. */
    static void _wc_slot_set(PyObject* o, Py_ssize_t off, PyObject* v) {
        PyObject** p = (PyObject**)((char*)o + off);
        PyObject* old = *p;
        Py_INCREF(v);
        *p = v;
        Py_XDECREF(old);
    }
    /* object.__new__(t) for a class without __init__ arguments to check: its tp_alloc. */
    static PyObject* _wc_alloc(PyObject* t) {
        return ((PyTypeObject*)t)->tp_alloc((PyTypeObject*)t, 0);
    }
    """
    Py_ssize_t _wc_slot_offset(object d)
    void _wc_slot_set(object o, Py_ssize_t off, object v)
    object _wc_alloc(object t)

cdef int _MAX_KEYS = 64  # a map with more keys goes the read_frame way (the duplicate check is quadratic)
cdef int _MAX_HOT = 8  # paths picked per kind
cdef int _MAX_BODY_DEPTH = 128  # deeper limits go the read_frame way (body_from builds under _MAX_NEST)
cdef unsigned long long _I64_MAX = 9223372036854775807ULL


cdef struct _Buf:
    char* p
    Py_ssize_t n
    Py_ssize_t cap
    bint ascii  # no byte over 0x7f written since n was last 0


cdef int _room(_Buf* b, Py_ssize_t more) except -1:
    cdef Py_ssize_t cap
    cdef char* p
    if b.n + more <= b.cap:
        return 0
    cap = b.cap * 2
    while cap < b.n + more:
        cap *= 2
    p = <char*>realloc(b.p, cap)
    if p == NULL:
        raise MemoryError()
    b.p = p
    b.cap = cap
    return 0


cdef inline int _put(_Buf* b, const char* s, Py_ssize_t k) except -1:
    _room(b, k)
    memcpy(b.p + b.n, s, k)
    b.n += k
    return 0


cdef inline int _putc(_Buf* b, char c) except -1:
    if b.n >= b.cap:
        _room(b, 1)
    b.p[b.n] = c
    b.n += 1
    return 0


cdef char* _HEX = "0123456789abcdef"


# what a byte of a str is to the JSON writer: 0 copied as it is, 1 escaped, 2 not ASCII
cdef unsigned char _CLASS[256]
cdef int _i
for _i in range(256):
    _CLASS[_i] = 1 if _i < 0x20 or _i == 34 or _i == 92 else (2 if _i >= 0x80 else 0)


cdef int _json_str(_Buf* b, const unsigned char* s, Py_ssize_t k) except -1:
    """``s[:k]`` as a JSON string, escaped as msgspec escapes: ``"`` and ``\\``, the control
    characters (\\b \\t \\n \\f \\r, else \\u00xx); nothing else. 1 (nothing to use) when
    ``s[:k]`` is not strict UTF-8, else 0; clears ``b.ascii`` at a byte over 0x7f."""
    cdef Py_ssize_t i
    cdef unsigned char c, cls
    cdef char* o
    cdef bint checked = False
    _room(b, 6 * k + 2)  # every byte escaped as \u00xx at most
    o = b.p + b.n
    o[0] = 34
    o += 1
    for i in range(k):
        c = s[i]
        cls = _CLASS[c]
        if cls == 0:
            o[0] = <char>c
            o += 1
            continue
        if cls == 2:
            if not checked:
                try:
                    PyUnicode_DecodeUTF8(<const char*>s, k, NULL)
                except UnicodeDecodeError:
                    return 1
                checked = True
                b.ascii = False
            o[0] = <char>c
            o += 1
            continue
        o[0] = 92
        if c == 34:
            o[1] = 34
        elif c == 92:
            o[1] = 92
        elif c == 8:
            o[1] = 98
        elif c == 9:
            o[1] = 116
        elif c == 10:
            o[1] = 110
        elif c == 12:
            o[1] = 102
        elif c == 13:
            o[1] = 114
        else:
            o[1] = 117
            o[2] = 48
            o[3] = 48
            o[4] = _HEX[c >> 4]
            o[5] = _HEX[c & 15]
            o += 4
        o += 2
    o[0] = 34
    o += 1
    b.n = o - b.p
    return 0


cdef int _json_int(_Buf* b, long long v) except -1:
    cdef char tmp[24]
    cdef int i = 24
    cdef unsigned long long u
    if v < 0:
        u = <unsigned long long>(-(v + 1)) + 1
    else:
        u = <unsigned long long>v
    while True:
        i -= 1
        tmp[i] = <char>(48 + u % 10)
        u //= 10
        if u == 0:
            break
    if v < 0:
        i -= 1
        tmp[i] = 45
    return _put(b, tmp + i, 24 - i)


from cpython.ref cimport PyObject, Py_XDECREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM


cdef struct _Hot:
    int n  # paths
    const unsigned char* k1[8]
    Py_ssize_t n1[8]
    const unsigned char* k2[8]  # NULL: a path of one key
    Py_ssize_t n2[8]
    PyObject* vals[8]  # the values found (new references), NULL where none


cdef inline Py_ssize_t _str_len(_Reader* r, unsigned char c) except -2:
    """The length of the str whose header byte ``c`` was just read (its length bytes read
    too), or -1 if ``c`` is no str header."""
    cdef Py_ssize_t k
    if 0xa0 <= c <= 0xbf:
        return c & 0x1f
    if c == 0xd9 and _need(r, 1):
        r.pos += 1
        return r.p[r.pos - 1]
    if c == 0xda and _need(r, 2):
        r.pos += 2
        return <Py_ssize_t>_be(r.p + r.pos - 2, 2)
    if c == 0xdb and _need(r, 4):
        r.pos += 4
        return <Py_ssize_t>_be(r.p + r.pos - 4, 4)
    return -1


cdef int _jvalue(_Reader* r, _Buf* b, int depth, int max_depth, _Hot* hot, int level, unsigned int want) except -1:
    """Check the body value at ``r`` and write it as JSON; 1 when it is not a plain JSON value
    (or not one this reader takes), else 0. ``level`` 0 is the body's own map, whose keys
    are matched against ``hot``'s first keys; ``want`` the paths whose first key led here."""
    cdef unsigned char c
    cdef Py_ssize_t k, i, j, kl
    cdef unsigned long long v
    cdef long long iv
    cdef const unsigned char* ks
    cdef Py_ssize_t koff[64]
    cdef Py_ssize_t klen[64]
    cdef unsigned int sub
    cdef int h, rc
    if not _need(r, 1):
        return 1
    c = r.p[r.pos]
    r.pos += 1
    if c <= 0x7f:
        return _json_int(b, c)
    if c >= 0xe0:
        return _json_int(b, <signed char>c)
    if c == 0xc0:
        return _put(b, "null", 4)
    if c == 0xc2:
        return _put(b, "false", 5)
    if c == 0xc3:
        return _put(b, "true", 4)
    if 0xcc <= c <= 0xd3:
        k = 1 << ((c - 0xcc) & 3)
        if not _need(r, k):
            return 1
        v = _be(r.p + r.pos, <int>k)
        r.pos += k
        if c <= 0xcf:
            if v > _I64_MAX:
                return 1  # the body check refuses it: the careful path says so
            return _json_int(b, <long long>v)
        if k == 1:
            iv = <signed char>v
        elif k == 2:
            iv = <short>v
        elif k == 4:
            iv = <int>v
        else:
            iv = <long long>v
        return _json_int(b, iv)
    k = _str_len(r, c)
    if k >= 0:
        if not _need(r, k) or _json_str(b, r.p + r.pos, k):
            return 1
        r.pos += k
        return 0
    # containers
    if 0x90 <= c <= 0x9f:
        k = c & 0x0f
    elif 0x80 <= c <= 0x8f:
        k = c & 0x0f
    elif (c == 0xdc or c == 0xde) and _need(r, 2):
        k = <Py_ssize_t>_be(r.p + r.pos, 2)
        r.pos += 2
    elif (c == 0xdd or c == 0xdf) and _need(r, 4):
        k = <Py_ssize_t>_be(r.p + r.pos, 4)
        r.pos += 4
    else:
        return 1  # bin, float, extension types, c1
    if depth + 1 >= max_depth:
        return 1
    if c <= 0x8f or c == 0xde or c == 0xdf:  # a map
        if k > _MAX_KEYS or k > (r.n - r.pos) // 2:
            return 1
        _putc(b, 123)
        for i in range(k):
            if not _need(r, 1):
                return 1
            c = r.p[r.pos]
            r.pos += 1
            kl = _str_len(r, c)
            if kl < 0 or not _need(r, kl):
                return 1
            ks = r.p + r.pos
            for j in range(i):
                if klen[j] == kl and memcmp(r.p + koff[j], ks, kl) == 0:
                    return 1  # a key twice
            koff[i] = r.pos
            klen[i] = kl
            if i:
                _putc(b, 44)
            if _json_str(b, ks, kl):
                return 1
            _putc(b, 58)
            r.pos += kl
            sub = 0
            if hot != NULL and level <= 1:
                for h in range(hot.n):
                    if level == 0:
                        if hot.n1[h] == kl and memcmp(hot.k1[h], ks, kl) == 0:
                            sub |= 1u << h
                    elif (want >> h) & 1 and hot.n2[h] == kl and memcmp(hot.k2[h], ks, kl) == 0:
                        sub |= 1u << h
            if sub:
                rc = _jpick(r, b, depth + 1, max_depth, hot, level, sub)
            else:
                rc = _jvalue(r, b, depth + 1, max_depth, NULL, 2, 0)
            if rc:
                return rc
        return _putc(b, 125)
    if k > r.n - r.pos:
        return 1
    _putc(b, 91)
    for i in range(k):
        if i:
            _putc(b, 44)
        rc = _jvalue(r, b, depth + 1, max_depth, NULL, 2, 0)
        if rc:
            return rc
    return _putc(b, 93)


cdef int _jpick(_Reader* r, _Buf* b, int depth, int max_depth, _Hot* hot, int level, unsigned int sub) except -1:
    """:func:`_jvalue` of a value that paths ``sub`` of ``hot`` lead to: a map at level 0 is
    walked for their second keys; an int or a str where a path ends is kept."""
    cdef Py_ssize_t start = r.pos
    cdef int h, rc
    cdef unsigned char c
    cdef unsigned int ends = 0, deeper = 0
    for h in range(hot.n):
        if (sub >> h) & 1:
            if level == 0 and hot.k2[h] != NULL:
                deeper |= 1u << h
            else:
                ends |= 1u << h
    c = r.p[r.pos] if _need(r, 1) else 0
    if deeper and ((c & 0xf0) == 0x80 or c == 0xde or c == 0xdf):
        return _jvalue(r, b, depth, max_depth, hot, 1, deeper)
    rc = _jvalue(r, b, depth, max_depth, NULL, 2, 0)
    if rc or not ends:
        return rc
    value = _scalar_at(r.p + start, r.pos - start)
    if value is not None:
        for h in range(hot.n):
            if (ends >> h) & 1 and hot.vals[h] == NULL:
                Py_INCREF(value)
                hot.vals[h] = <PyObject*>value
    return 0


cdef object _scalar_at(const unsigned char* s, Py_ssize_t n):
    """The int or str that the (checked) MessagePack ``s[:n]`` holds, else None."""
    cdef _Reader rr
    cdef unsigned char c = s[0]
    if c <= 0x7f or c >= 0xe0 or 0xcc <= c <= 0xd3 or 0xa0 <= c <= 0xbf or 0xd9 <= c <= 0xdb:
        rr.p = s
        rr.n = n
        rr.pos = 0
        return _value(&rr, 0)
    return None


cdef int _hot_of(_Hot* hot, object paths) except -1:
    """``hot`` from a kind's paths: a tuple of (first key, second key or None) bytes pairs."""
    cdef Py_ssize_t i
    hot.n = len(paths)
    if hot.n > _MAX_HOT:
        raise ValueError(f"at most {_MAX_HOT} paths per kind")
    for i in range(hot.n):
        k1, k2 = paths[i]
        hot.vals[i] = NULL
        hot.k1[i] = <const unsigned char*>PyBytes_AS_STRING(k1)
        hot.n1[i] = PyBytes_GET_SIZE(k1)
        if k2 is None:
            hot.k2[i] = NULL
            hot.n2[i] = 0
        else:
            hot.k2[i] = <const unsigned char*>PyBytes_AS_STRING(k2)
            hot.n2[i] = PyBytes_GET_SIZE(k2)
    return 0


cdef int _F_RID = 1, _F_LANE = 2, _F_TXN = 4, _F_KIND = 8, _F_AT = 16, _F_BODY = 32


cdef int _record_key(const unsigned char* s, Py_ssize_t k) noexcept:
    """Which record field the key ``s[:k]`` names (a _F_ bit), 0 for none."""
    if k == 9 and memcmp(s, b"record_id", 9) == 0:
        return _F_RID
    if k == 4 and memcmp(s, b"lane", 4) == 0:
        return _F_LANE
    if k == 6 and memcmp(s, b"txn_id", 6) == 0:
        return _F_TXN
    if k == 4 and memcmp(s, b"kind", 4) == 0:
        return _F_KIND
    if k == 8 and memcmp(s, b"at_utc_s", 8) == 0:
        return _F_AT
    if k == 4 and memcmp(s, b"body", 4) == 0:
        return _F_BODY
    return 0


cdef bint _ids_ok(object rid, object lane, object txn, object kind, object at,
                  const unsigned char* site, Py_ssize_t ns):
    """The record's own fields as :func:`records_fast` checks them."""
    cdef Py_ssize_t nr, nt, nl, i
    cdef const unsigned char* s
    cdef int overflow
    cdef long long at_v
    if not PyUnicode_CheckExact(rid) or not PyUnicode_IS_ASCII(rid):
        return False
    nr = PyUnicode_GET_LENGTH(rid)
    if nr != ns + 27:
        return False
    s = <const unsigned char*>PyUnicode_DATA(rid)
    for i in range(ns):
        if s[i] != site[i]:
            return False
    if s[ns] != 45 or not _ulid(s + ns + 1):
        return False
    if not _ascii_name(lane, False) or not _ascii_name(kind, True):
        return False
    if not PyUnicode_CheckExact(txn) or not PyUnicode_IS_ASCII(txn):
        return False
    nt = PyUnicode_GET_LENGTH(txn)
    nl = nt - ns - 1 - 27
    if nl < 1:
        return False
    s = <const unsigned char*>PyUnicode_DATA(txn)
    for i in range(ns):
        if s[i] != site[i]:
            return False
    if s[ns] != 58 or s[nt - 27] != 45:
        return False
    if not _name(s + ns + 1, nl, False) or not _ulid(s + nt - 26):
        return False
    if not PyLong_CheckExact(at):
        return False
    at_v = PyLong_AsLongLongAndOverflow(at, &overflow)
    return not overflow and at_v >= 0


cdef object _text(_Buf* b):
    """The JSON text in ``b`` as a str (copied as it is when it is all ASCII)."""
    if not b.ascii:
        return PyUnicode_DecodeUTF8(b.p, b.n, NULL)
    out = PyUnicode_New(b.n, 127)
    memcpy(PyUnicode_DATA(out), b.p, b.n)
    return out


cdef struct _Slots:
    Py_ssize_t at[9]  # record_id, site_id, lane, txn_id, kind, at_utc_s, body_packed, body_json, body_fields


cdef object _SLOT_NAMES = ("record_id", "site_id", "lane", "txn_id", "kind", "at_utc_s", "body_packed", "body_json",
                           "body_fields")


cdef int _slots_of(_Slots* sl, object record_type) except -1:
    """The slot offsets of ``record_type``'s fields (``wire.messages.WireRecord``'s), or -1
    for any that is not a plain slot (then it is set through setattr)."""
    cdef int i
    cdef dict d = record_type.__dict__ if type(record_type.__dict__) is dict else dict(record_type.__dict__)
    for i in range(9):
        desc = d.get(_SLOT_NAMES[i])
        sl.at[i] = -1 if desc is None else _wc_slot_offset(desc)
    return 0


cdef inline int _set(object w, _Slots* sl, int i, object v) except -1:
    if sl.at[i] >= 0:
        _wc_slot_set(w, sl.at[i], v)
    else:
        PyObject_GenericSetAttr(w, _SLOT_NAMES[i], v)
    return 0


cdef object _hot_values(_Hot* hot):
    """The values ``hot`` found, as a tuple (None where none); its references handed over."""
    cdef int h
    out = PyTuple_New(hot.n)
    for h in range(hot.n):
        if hot.vals[h] == NULL:
            Py_INCREF(None)
            PyTuple_SET_ITEM(out, h, None)
        else:
            PyTuple_SET_ITEM(out, h, <object>hot.vals[h])  # steals the reference vals[h] held
            hot.vals[h] = NULL
    return out


cdef void _hot_clear(_Hot* hot) noexcept:
    cdef int h
    for h in range(hot.n):
        if hot.vals[h] != NULL:
            Py_XDECREF(hot.vals[h])
            hot.vals[h] = NULL


cdef object _read_record(_Reader* r, _Buf* b, int max_depth, dict hot_index, _Hot* hots, object site_id,
                         const unsigned char* site, Py_ssize_t ns, object record_type, _Slots* sl):
    """One record map at ``r``: a ``record_type`` with its body kept as bytes and JSON, or
    None if anything is off."""
    cdef unsigned char c
    cdef Py_ssize_t k, kl, i, body_at = -1, body_end = 0
    cdef int f, seen = 0
    cdef _Hot* hp = NULL
    rid = lane = txn = kind = at = None
    fields = None
    if not _need(r, 1):
        return None
    c = r.p[r.pos]
    r.pos += 1
    if c != 0x86:  # a fixmap of the 6 fields (what every packer writes for 6 entries)
        return None
    for i in range(6):
        if not _need(r, 1):
            return None
        c = r.p[r.pos]
        r.pos += 1
        kl = _str_len(r, c)
        if kl < 0 or not _need(r, kl):
            return None
        f = _record_key(r.p + r.pos, kl)
        r.pos += kl
        if f == 0 or seen & f:
            return None
        seen |= f
        if f == _F_BODY:
            if not _need(r, 1):
                return None
            c = r.p[r.pos]
            if not ((c & 0xf0) == 0x80 or c == 0xde or c == 0xdf):
                return None  # not a map: the careful path says so
            at_hot = hot_index.get(kind) if kind is not None else None
            if at_hot is not None:
                hp = hots + <int>at_hot
            body_at = r.pos
            b.n = 0
            b.ascii = True
            try:
                if _jvalue(r, b, -1, max_depth, hp, 0, 0):
                    return None
                if hp != NULL:
                    fields = _hot_values(hp)
            finally:
                if hp != NULL:
                    _hot_clear(hp)
            body_end = r.pos
            continue
        v = _value(r, 4)
        if f == _F_RID:
            rid = v
        elif f == _F_LANE:
            lane = v
        elif f == _F_TXN:
            txn = v
        elif f == _F_KIND:
            kind = v
        else:
            at = v
    if not _ids_ok(rid, lane, txn, kind, at, site, ns):
        return None
    # what the frozen dataclass's __init__ does (each field set once, in order), slot by slot
    w = _wc_alloc(record_type)
    _set(w, sl, 0, rid)
    _set(w, sl, 1, site_id)
    _set(w, sl, 2, lane)
    _set(w, sl, 3, txn)
    _set(w, sl, 4, kind)
    _set(w, sl, 5, at)
    _set(w, sl, 6, PyBytes_FromStringAndSize(<const char*>(r.p + body_at), body_end - body_at))
    _set(w, sl, 7, _text(b))
    _set(w, sl, 8, fields)
    return w


def read_batch(bytes data not None, int max_depth, int max_records, dict hot_paths not None, object record_type):
    """``(version, site, batch_seq, created_utc_s, records, signature)`` of a batch frame whose
    every record is well formed (the answer of :func:`read_frame` then :func:`records_fast`,
    the records as ``record_type`` objects with their bodies as bytes, JSON text and the
    ``hot_paths`` values, see above), else None. ``hot_paths``: kind -> tuple of (first key,
    second key or None) as bytes. The version, site, batch number and time, and the
    signature are not checked here; the records' count is (at most ``max_records``)."""
    cdef _Reader r
    cdef _Buf b
    cdef unsigned char c
    cdef Py_ssize_t k, n, i, ns
    cdef int seen = 0
    cdef _Hot hots[8]
    cdef int nh = 0
    cdef _Slots sl
    if max_depth > _MAX_BODY_DEPTH:
        return None
    if len(hot_paths) > 8:
        raise ValueError("at most 8 kinds of hot paths")
    _slots_of(&sl, record_type)
    hot_index = {}
    for kind, paths in hot_paths.items():
        _hot_of(&hots[nh], paths)
        hot_index[kind] = nh
        nh += 1
    r.p = <const unsigned char*>PyBytes_AS_STRING(data)
    r.n = PyBytes_GET_SIZE(data)
    r.pos = 0
    if r.n < 1 or r.p[0] != 0x95:
        return None
    r.pos = 1
    try:
        version = _value(&r, 1)
        mtype = _value(&r, 1)
        if mtype != "batch" or not PyUnicode_CheckExact(mtype):
            return None
        site_id = _value(&r, 1)
    except Exception:
        return None
    if not PyUnicode_CheckExact(site_id) or not PyUnicode_IS_ASCII(site_id):
        return None
    site = <const unsigned char*>PyUnicode_DATA(site_id)
    ns = PyUnicode_GET_LENGTH(site_id)
    if not _need(&r, 1) or r.p[r.pos] != 0x83:
        return None
    r.pos += 1
    b.cap = 4096
    b.n = 0
    b.p = <char*>malloc(b.cap)
    if b.p == NULL:
        raise MemoryError()
    seq = created = records = None
    try:
        for i in range(3):
            if not _need(&r, 1):
                return None
            c = r.p[r.pos]
            r.pos += 1
            k = _str_len(&r, c)
            if k < 0 or not _need(&r, k):
                return None
            key = r.p + r.pos
            r.pos += k
            if k == 9 and memcmp(key, b"batch_seq", 9) == 0 and not seen & 1:
                seen |= 1
                seq = _value(&r, 2)
            elif k == 13 and memcmp(key, b"created_utc_s", 13) == 0 and not seen & 2:
                seen |= 2
                created = _value(&r, 2)
            elif k == 7 and memcmp(key, b"records", 7) == 0 and not seen & 4:
                seen |= 4
                if not _need(&r, 1):
                    return None
                c = r.p[r.pos]
                r.pos += 1
                if 0x90 <= c <= 0x9f:
                    n = c & 0x0f
                elif c == 0xdc and _need(&r, 2):
                    n = <Py_ssize_t>_be(r.p + r.pos, 2)
                    r.pos += 2
                elif c == 0xdd and _need(&r, 4):
                    n = <Py_ssize_t>_be(r.p + r.pos, 4)
                    r.pos += 4
                else:
                    return None
                if n > max_records or n > r.n - r.pos:
                    return None
                out = []
                ids = set()
                for _ in range(n):
                    w = _read_record(&r, &b, max_depth, hot_index, hots, site_id, site, ns, record_type, &sl)
                    if w is None:
                        return None
                    rid = (<object>w).record_id
                    if rid in ids:
                        return None
                    ids.add(rid)
                    out.append(w)
                records = tuple(out)
            else:
                return None
        tag = _value(&r, 1)
    except Exception:  # _Stop, or e.g. MemoryError: read_frame and the strict reader decide
        return None
    finally:
        free(b.p)
    if r.pos != r.n:
        return None
    return version, site_id, seq, created, records, tag


def body_from(bytes packed not None):
    """The dict a body's MessagePack bytes hold (bytes :func:`read_batch` checked): the
    dict ``read_frame`` builds of it."""
    cdef _Reader r
    r.p = <const unsigned char*>PyBytes_AS_STRING(packed)
    r.n = PyBytes_GET_SIZE(packed)
    r.pos = 0
    out = _value(&r, 0)
    if r.pos != r.n:
        raise ValueError("trailing bytes after a body")
    return out


cdef class LazyBody:
    """The ``body`` field of ``wire.messages.WireRecord``: the dict the record holds, built
    on first read from the MessagePack bytes decode kept (``body_packed``) when decode did
    not build it."""

    cdef object _get, _set, _packed

    def __init__(self, slot, packed_slot):
        self._get = slot.__get__
        self._set = slot.__set__
        self._packed = packed_slot.__get__

    def __get__(self, obj, cls):
        if obj is None:
            return self
        try:
            return self._get(obj)
        except AttributeError:
            packed = self._packed(obj)
            if packed is None:
                raise
        body = body_from(packed)
        self._set(obj, body)
        return body

    def __set__(self, obj, value):
        self._set(obj, value)

    def __delete__(self, obj):
        raise AttributeError("body cannot be deleted")

    def built(self, obj):
        """Whether ``obj``'s body is built (a dict in its slot) yet: for tests."""
        try:
            self._get(obj)
        except AttributeError:
            return False
        return True
