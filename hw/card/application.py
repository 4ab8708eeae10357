"""The terminal side of the fuel-card application: select, read, check MACs, verify the PIN,
reserve and commit spend, read back whether a write happened.

Each method is one or a few APDUs from ``docs/card-application.md``, sent through any
:class:`ApduChannel` (the PC/SC :class:`hw.card.reader.CardReader`, or an in-process channel
to the simulator). Card data is refused unless its MAC verifies under the card's key from
the :class:`hw.card.keys.KeyStore`. Nothing here logs a key, a PIN or a full card number.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from authz.fuel_model import FuelCard, mask_card_no
from hw.card.apdu import SW, Command, Response
from hw.card.keys import MAC_LEN, KeyStore
from hw.card.records import (
    CHALLENGE_LEN,
    FORMAT_V2,
    WRITE_ID_LEN,
    CardRecords,
    Counters,
    CounterState,
    CounterWrite,
    decode_counter_state,
    decode_identity,
    decode_records,
    encode_counter_write,
)
from hw.errors import (
    CardDataError,
    CardFormatError,
    CardNotGenuineError,
    CardResponseError,
    CardStatusError,
    CloneSuspectedError,
    CounterMismatchError,
    PinBlockedError,
    PinFormatError,
    WrongPinError,
)

__all__ = [
    "AID", "APP_VERSION", "INS", "SFI_IDENTITY", "SFI_LIMITS", "SFI_CONTROLS", "REC_IDENTITY", "REC_DATA_MAC",
    "REC_CONTROLS",
    "TAG_STATIC", "TAG_COUNTERS", "TAG_RESERVE", "TAG_COMMIT", "TAG_RESERVE_RECEIPT",
    "TAG_COMMIT_RECEIPT", "PIN_TRIES", "ApduChannel", "AppInfo", "CardData", "WriteOutcome",
    "FuelCardApplication", "pin_block", "read_record_p2",
]

log = logging.getLogger("edgepos.hw.card")

#: The application identifier: a proprietary AID (RID category F), "EDGEPOS" + "FC" 01.
AID = bytes.fromhex("F045444745504F534643") + b"\x01"
APP_VERSION = 1
PIN_TRIES = 3


class INS:
    """Instruction bytes (CLA 00 for the ISO commands, 80 for the proprietary ones)."""

    SELECT = 0xA4
    READ_RECORD = 0xB2
    VERIFY = 0x20
    GET_COUNTERS = 0x32
    RESERVE = 0x34
    COMMIT = 0x36


CLA_ISO = 0x00
CLA_PROPRIETARY = 0x80
SFI_IDENTITY = 1
SFI_LIMITS = 2
SFI_CONTROLS = 3  #: card format 02: the card's controls (allowed products, windows, stations)
REC_IDENTITY = 1
REC_DATA_MAC = 2
REC_CONTROLS = 1
PIN_P2 = 0x80  #: VERIFY P2: the application's (global) PIN

# The first byte of every MAC input, so no MAC can be replayed as another kind.
TAG_STATIC = 0x01
TAG_COUNTERS = 0x02
TAG_RESERVE = 0x03
TAG_COMMIT = 0x04
TAG_RESERVE_RECEIPT = 0x05
TAG_COMMIT_RECEIPT = 0x06

_RECEIPT_LEN = 4 + MAC_LEN


class ApduChannel(Protocol):
    """Anything that exchanges one APDU with a card (the reader, or a test channel)."""

    async def transmit(self, apdu: Command | bytes, *, timeout: float) -> Response:
        """Send ``apdu``, return the parsed response; raise a CardError subclass."""
        ...


@dataclass(frozen=True, slots=True)
class AppInfo:
    """What SELECT answers: the application version, issuer key version, PIN tries left."""

    version: int
    key_version: int
    pin_tries_left: int


@dataclass(frozen=True, slots=True)
class CardData:
    """A card read and checked genuine: its model card and its dynamic counter state."""

    card: FuelCard
    state: CounterState
    info: AppInfo


class WriteOutcome(Enum):
    """What reading back says about a write whose answer was lost."""

    APPLIED = "applied"  #: the card applied this write (and nothing after it)
    NOT_APPLIED = "not_applied"  #: the card is still at the expected counter
    OVERTAKEN = "overtaken"  #: the card has moved on: this write applied and another after, or another write instead


def read_record_p2(sfi: int) -> int:
    """READ RECORD P2 for "record number in P1" of short file ``sfi``."""
    return (sfi << 3) | 0x04


def pin_block(pin: str) -> bytes:
    """The ISO 9564 format 2 plaintext PIN block: 2N, the digits, F padding, 8 bytes."""
    if not isinstance(pin, str) or not pin.isascii() or not pin.isdigit() or not 4 <= len(pin) <= 12:
        raise PinFormatError("a PIN is 4 to 12 digits")
    nibbles = pin + "F" * (14 - len(pin))
    return bytes((0x20 | len(pin),)) + bytes.fromhex(nibbles)


def _u32(b: bytes) -> int:
    return int.from_bytes(b, "big")


class FuelCardApplication:
    """The terminal's side of one card session, over ``channel``, with keys from ``keys``.

    Typical use: ``data = await app.read_card()``; ``await app.verify_pin(pin)``;
    ``after = await app.reserve(data.state, write_id, counters)``; later
    ``await app.commit(after, write_id2, counters)``. After a write whose answer was lost
    (card pulled, timeout), ``await app.write_outcome(expected_txn, write_id)`` on the
    reinserted card says whether it happened.
    """

    def __init__(self, channel: ApduChannel, keys: KeyStore, *, timeout_s: float = 1.0) -> None:
        self.channel = channel
        self.keys = keys
        self.timeout_s = timeout_s
        self.card_no: str | None = None

    async def _send(self, cmd: Command, what: str, expect: tuple[int, ...] = (SW.OK,)) -> Response:
        resp = await self.channel.transmit(cmd, timeout=self.timeout_s)
        if resp.sw not in expect:
            self._raise_status(resp.sw, what)
        return resp

    def _raise_status(self, sw: int, what: str) -> None:
        if sw & 0xFFF0 == SW.WRONG_PIN_BASE:
            raise WrongPinError(f"{what}: wrong PIN, {sw & 0xF} tries left", sw, sw & 0xF)
        if sw == SW.PIN_BLOCKED:
            raise PinBlockedError(f"{what}: the card's PIN is blocked", sw)
        if sw == SW.CONDITIONS:
            raise CounterMismatchError(f"{what}: transaction counter is not the card's current one", sw)
        names = {s.value: s.name for s in SW}
        raise CardStatusError(f"{what}: card answered {sw:04X} ({names.get(sw, 'unexpected')})", sw)

    def _need_card_no(self) -> str:
        if self.card_no is None:
            raise CardDataError("read the card (read_card) before this command")
        return self.card_no

    async def select(self) -> AppInfo:
        """SELECT the application by AID; return its version, key version and PIN tries."""
        resp = await self._send(Command(CLA_ISO, INS.SELECT, 0x04, 0x00, AID, 256), "SELECT")
        if len(resp.data) != 3:
            raise CardResponseError(f"SELECT answered {len(resp.data)} data bytes, expected 3")
        info = AppInfo(*resp.data)
        if info.version != APP_VERSION:
            raise CardDataError(f"card application version {info.version}, expected {APP_VERSION}")
        return info

    async def read_record(self, sfi: int, rec: int) -> bytes:
        """READ RECORD ``rec`` of short file ``sfi``."""
        resp = await self._send(Command(CLA_ISO, INS.READ_RECORD, rec, read_record_p2(sfi), b"", 256),
                                f"READ RECORD {sfi}/{rec}")
        return resp.data

    async def read_card(self, *, known_txn_counter: int | None = None) -> CardData:
        """Select, read identity, limits (and in card format 02 the controls) and counters,
        and check both MACs.

        ``known_txn_counter`` is the highest transaction counter the terminal has seen for
        this card (from its journal or replica): a card whose counter is behind it is a copy
        of an older state and raises :class:`CloneSuspectedError`. A MAC that fails raises
        :class:`CardNotGenuineError`; static records this terminal cannot read (an unknown
        format, a rule that cannot be) :class:`CardFormatError`; malformed counters
        :class:`CardDataError`.
        """
        info = await self.select()
        identity = await self.read_record(SFI_IDENTITY, REC_IDENTITY)
        try:
            ident = decode_identity(identity)
        except CardFormatError:
            raise
        except CardDataError as exc:
            raise CardFormatError(f"card identity record: {exc}") from None
        limits = tuple([await self.read_record(SFI_LIMITS, i) for i in range(1, ident.n_limits + 1)])
        controls = await self._read_controls(ident.card_no) if ident.version == FORMAT_V2 else None
        data_mac = await self.read_record(SFI_IDENTITY, REC_DATA_MAC)
        masked = mask_card_no(ident.card_no)
        records = CardRecords(identity, limits, controls)
        # The MAC is checked over the raw records before anything else of them is trusted.
        try:
            mac_input = records.mac_input()
        except CardDataError as exc:
            raise CardFormatError(f"card {masked}: {exc}") from None
        if len(data_mac) != MAC_LEN or not self.keys.verify(ident.card_no, mac_input, data_mac):
            raise CardNotGenuineError(f"card {masked}: the MAC over its data does not verify")
        try:
            card = decode_records(records)
        except CardDataError as exc:
            raise CardFormatError(f"card {masked}: its stored rules do not decode: {exc}") from None
        self.card_no = card.card_no
        state = await self.read_counters()
        if [i for i, _ in state.counters] != [lim.limit_id for lim in card.limits]:
            raise CardDataError(f"card {masked}: counters do not match its limits")
        if known_txn_counter is not None and state.txn_counter < known_txn_counter:
            raise CloneSuspectedError(
                f"card {masked}: transaction counter {state.txn_counter} is behind "
                f"{known_txn_counter} already seen")
        log.debug("card %s read: txn counter %d", masked, state.txn_counter)
        return CardData(card, state, info)

    async def _read_controls(self, card_no: str) -> bytes:
        """The controls record of a card of format 02; a card without one is not in its format."""
        try:
            return await self.read_record(SFI_CONTROLS, REC_CONTROLS)
        except CardStatusError as exc:
            if exc.sw in (SW.FILE_NOT_FOUND, SW.RECORD_NOT_FOUND):
                raise CardFormatError(f"card {mask_card_no(card_no)} of format 02 has no controls record "
                                      f"(SFI {SFI_CONTROLS} answered {exc.sw:04X})") from None
            raise

    async def read_counters(self) -> CounterState:
        """GET COUNTERS with a fresh challenge; check the card's MAC over the answer."""
        card_no = self._need_card_no()
        challenge = os.urandom(CHALLENGE_LEN)
        resp = await self._send(Command(CLA_PROPRIETARY, INS.GET_COUNTERS, 0, 0, challenge, 256),
                                "GET COUNTERS")
        if len(resp.data) < MAC_LEN:
            raise CardResponseError(f"GET COUNTERS answered {len(resp.data)} bytes, shorter than a MAC")
        body, mac = resp.data[:-MAC_LEN], resp.data[-MAC_LEN:]
        if not self.keys.verify(card_no, bytes((TAG_COUNTERS,)) + challenge + body, mac):
            raise CardNotGenuineError(f"card {mask_card_no(card_no)}: the MAC over its counters does not verify")
        return decode_counter_state(body)

    async def pin_tries_left(self) -> int:
        """VERIFY without data: the PIN tries left (0 when blocked; PIN_TRIES when the PIN
        is already verified in this session)."""
        resp = await self.channel.transmit(Command(CLA_ISO, INS.VERIFY, 0, PIN_P2), timeout=self.timeout_s)
        if resp.sw == SW.OK:
            return PIN_TRIES
        if resp.sw & 0xFFF0 == SW.WRONG_PIN_BASE:
            return resp.sw & 0xF
        if resp.sw == SW.PIN_BLOCKED:
            return 0
        self._raise_status(resp.sw, "VERIFY")
        raise AssertionError("unreachable")

    async def verify_pin(self, pin: str) -> None:
        """VERIFY the PIN; raise WrongPinError (with tries left) or PinBlockedError."""
        await self._send(Command(CLA_ISO, INS.VERIFY, 0, PIN_P2, pin_block(pin)), "VERIFY")

    async def _write(self, ins: int, tag: int, receipt_tag: int, state: CounterState,
                     write_id: bytes, counters: Counters, what: str) -> CounterState:
        card_no = self._need_card_no()
        if len(write_id) != WRITE_ID_LEN:
            raise CardDataError(f"write id must be {WRITE_ID_LEN} bytes")
        body = encode_counter_write(CounterWrite(state.txn_counter, write_id, tuple(counters)))
        mac = self.keys.mac(card_no, bytes((tag,)) + body)
        resp = await self._send(Command(CLA_PROPRIETARY, ins, 0, 0, body + mac, 256), what)
        if len(resp.data) != _RECEIPT_LEN:
            raise CardResponseError(f"{what} answered {len(resp.data)} bytes, expected {_RECEIPT_LEN}")
        txn_after = _u32(resp.data[:4])
        if not self.keys.verify(card_no, bytes((receipt_tag,)) + write_id + resp.data[:4], resp.data[4:]):
            raise CardNotGenuineError(f"card {mask_card_no(card_no)}: the {what} receipt MAC does not verify")
        if txn_after != state.txn_counter + 1:
            raise CardResponseError(f"{what} receipt counter {txn_after}, expected {state.txn_counter + 1}")
        return CounterState(txn_after, write_id, ins == INS.RESERVE, tuple(counters))

    async def reserve(self, state: CounterState, write_id: bytes, counters: Counters) -> CounterState:
        """RESERVE: set the counters to ``counters`` (spent including the reservation), if
        the card is still at ``state.txn_counter``; needs the PIN verified. Returns the
        state after. Raises CounterMismatchError for a stale counter."""
        return await self._write(INS.RESERVE, TAG_RESERVE, TAG_RESERVE_RECEIPT, state, write_id,
                                 counters, "RESERVE")

    async def commit(self, state: CounterState, write_id: bytes, counters: Counters) -> CounterState:
        """COMMIT: set the final counters (unused reservation given back) and close the
        reservation, if the card is still at ``state.txn_counter``."""
        return await self._write(INS.COMMIT, TAG_COMMIT, TAG_COMMIT_RECEIPT, state, write_id,
                                 counters, "COMMIT")

    async def write_outcome(self, expected_txn: int, write_id: bytes) -> WriteOutcome:
        """Read back whether the write ``write_id``, sent at ``expected_txn``, happened.

        Reads the card first (select, records, MACs) when this object has not read it yet,
        as after the card was pulled and reinserted; otherwise only GET COUNTERS.
        """
        if self.card_no is None:
            await self.read_card()
        state = await self.read_counters()
        if state.txn_counter == expected_txn:
            return WriteOutcome.NOT_APPLIED
        if state.txn_counter == expected_txn + 1 and state.last_write_id == write_id:
            return WriteOutcome.APPLIED
        return WriteOutcome.OVERTAKEN
