# cython: language_level=3
"""The characters of a record's ids, checked in C as wire.codec's regular expressions check
them: the one definition that wire._wirecheck (the host's decode) and wire._jsonpack (the
edge's packing) share. Inline, so each module compiles its own copy of the same source.

A ULID: 26 characters of Crockford's base32 (0-9 and A-Z without I, L, O and U), the first
0-7. A name (a site's lane, a record's kind): ``[A-Za-z0-9]`` then up to 63 of
``[A-Za-z0-9_.-]``, and ``:`` too in a kind."""


cdef inline bint ulid_first(unsigned char c) noexcept nogil:
    return 48 <= c <= 55  # '0'..'7'


cdef inline bint ulid_rest(unsigned char c) noexcept nogil:
    return (48 <= c <= 57) or (65 <= c <= 90 and c != 73 and c != 76 and c != 79 and c != 85)  # not I L O U


cdef inline bint alnum(unsigned char c) noexcept nogil:
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122)


cdef inline bint name_char(unsigned char c, bint colon) noexcept nogil:
    return alnum(c) or c == 95 or c == 46 or c == 45 or (colon and c == 58)  # _ . - and, in a kind, :


cdef inline bint ulid(const unsigned char* s) noexcept nogil:
    """The 26 characters at ``s`` are a ULID."""
    cdef int i
    if not ulid_first(s[0]):
        return False
    for i in range(1, 26):
        if not ulid_rest(s[i]):
            return False
    return True


cdef inline bint name(const unsigned char* s, Py_ssize_t n, bint colon) noexcept nogil:
    """The ``n`` characters at ``s`` are a name (``colon``: a kind, which may hold ``:``)."""
    cdef Py_ssize_t i
    if n < 1 or n > 64 or not alnum(s[0]):
        return False
    for i in range(1, n):
        if not name_char(s[i], colon):
            return False
    return True
