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

# character classes, one table each: 1 = allowed
cdef unsigned char _ULID_FIRST[256]
cdef unsigned char _ULID_REST[256]
cdef unsigned char _ALNUM[256]
cdef unsigned char _SITE_REST[256]
cdef unsigned char _KIND_REST[256]


cdef void _fill():
    cdef int c
    for c in range(256):
        _ULID_FIRST[c] = 0
        _ULID_REST[c] = 0
        _ALNUM[c] = 0
        _SITE_REST[c] = 0
        _KIND_REST[c] = 0
    for c in range(ord("0"), ord("7") + 1):
        _ULID_FIRST[c] = 1
    for ch in "0123456789ABCDEFGHJKMNPQRSTVWXYZ":
        _ULID_REST[ord(ch)] = 1
    for ch in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
        _ALNUM[ord(ch)] = 1
        _SITE_REST[ord(ch)] = 1
        _KIND_REST[ord(ch)] = 1
    for ch in "_.-":
        _SITE_REST[ord(ch)] = 1
        _KIND_REST[ord(ch)] = 1
    _KIND_REST[ord(":")] = 1


_fill()

cdef object _RECORD_ID = "record_id"
cdef object _SITE_ID = "site_id"
cdef object _LANE = "lane"
cdef object _TXN_ID = "txn_id"
cdef object _KIND = "kind"
cdef object _AT = "at_utc_s"
cdef object _BODY = "body"
cdef long long _INT64_MAX = 9223372036854775807


cdef inline bint _ulid(const unsigned char* s) noexcept:
    cdef int i
    if not _ULID_FIRST[s[0]]:
        return False
    for i in range(1, 26):
        if not _ULID_REST[s[i]]:
            return False
    return True


cdef inline bint _name(const unsigned char* s, Py_ssize_t n, const unsigned char* rest) noexcept:
    """``[A-Za-z0-9]`` then up to 63 of ``rest``."""
    cdef Py_ssize_t i
    if n < 1 or n > 64 or not _ALNUM[s[0]]:
        return False
    for i in range(1, n):
        if not rest[s[i]]:
            return False
    return True


cdef inline bint _ascii_name(object v, const unsigned char* rest):
    if not PyUnicode_CheckExact(v) or not PyUnicode_IS_ASCII(v):
        return False
    return _name(<const unsigned char*>PyUnicode_DATA(v), PyUnicode_GET_LENGTH(v), rest)


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
        if not _ascii_name(lane, _SITE_REST) or not _ascii_name(kind, _KIND_REST):
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
        if not _name(s + ns + 1, nl, _SITE_REST) or not _ulid(s + nt - 26):
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
