"""The fuel-card application over PC/SC: APDUs, card records, keys, the terminal side of
the application, and the pyscard reader driver.

``CardReader`` and its events import pyscard, so they load on first use; everything else
(APDU shapes, records, keys, the application) is pure Python plus ``cryptography``.
"""

from hw.card.apdu import SW, Command, Response, parse_response
from hw.card.application import AID, AppInfo, CardData, FuelCardApplication, WriteOutcome
from hw.card.keys import KeyStore, SoftwareKeyStore
from hw.card.records import CounterState, CounterWrite

__all__ = [
    "SW", "Command", "Response", "parse_response",
    "AID", "AppInfo", "CardData", "FuelCardApplication", "WriteOutcome",
    "KeyStore", "SoftwareKeyStore", "CounterState", "CounterWrite",
    "CardReader", "CardInserted", "CardRemoved", "CardEvent", "list_readers",
]

_READER_NAMES = {"CardReader", "CardInserted", "CardRemoved", "CardEvent", "list_readers"}


def __getattr__(name: str):
    if name in _READER_NAMES:
        from hw.card import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'hw.card' has no attribute {name!r}")
