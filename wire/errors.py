"""The errors of the wire layer: one base type, :class:`WireError`, for everything that can be
wrong with a topic, a message or a key.

A caller that receives bytes from the broker catches :class:`WireError` and nothing else:
:func:`wire.codec.decode` turns every failure (truncated input, a bad signature, a float
where an integer belongs, ...) into one of these, and its message names what was wrong and
with which value. Messages never contain key material.
"""

from __future__ import annotations

__all__ = [
    "WireError", "WireFormatError", "WireTooLarge", "WireVersionError", "WireSignatureError",
    "WireTopicError", "WireKeyError",
]


class WireError(Exception):
    """Anything wrong on the wire; the one type callers of :mod:`wire` must catch."""


class WireFormatError(WireError, ValueError):
    """The bytes are not a well-formed message: bad MessagePack, a missing or unknown field,
    a wrong type, a value out of range, a duplicate id."""


class WireTooLarge(WireFormatError):
    """A message is over a size limit: too many bytes, records, rows or parts."""


class WireVersionError(WireError):
    """The message is of a protocol version this code does not speak; the message names the
    version and the supported ones."""


class WireSignatureError(WireError):
    """The message's signature does not verify: a site message's or ack's HMAC under the key
    of the site it claims to come from (or to be addressed to), a replica message's Ed25519
    signature under the host's replica verify key; or a replica message carries an HMAC; or
    the key to sign or verify with is not known on this side."""


class WireTopicError(WireError, ValueError):
    """A topic is malformed, or a message arrived on a topic that is not its own (another
    site's, another table's)."""


class WireKeyError(WireError):
    """A key or key file is unusable: missing, unreadable, the wrong length, not hex."""
