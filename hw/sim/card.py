"""The virtual fuel card: the card side of ``docs/card-application.md`` behind vpcd.

Three layers:

* :class:`CardState` is the card's non-volatile memory (files, PIN and its tries counter,
  transaction counter, spent counters), saved to a JSON file after every change so a card
  pulled and reinserted (or a simulator restarted) keeps its counters.
* :class:`CardApplet` is the application: C-APDU bytes in, R-APDU bytes out, plus power
  on/off/reset, exactly per the doc. It is sans-IO, so tests can drive it directly.
* :class:`VirtualCard` connects the applet to vpcd (the virtual reader driver of pcscd) at
  127.0.0.1:35963 (reader "Virtual PCD 00 00"; 35964 is "... 00 01"). vpcd frames every
  message with a 2-byte big-endian length; a 1-byte message is a control code (00 power
  off, 01 power on, 02 reset, 04 get ATR), anything longer an APDU. Connecting the socket
  inserts the card; closing it pulls the card. The card can be told to misbehave
  (:meth:`VirtualCard.inject`): garbage or short answers, a wrong MAC, a slow answer, or
  being pulled in the middle of a write (before or after applying it).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from hw.card.apdu import SW, ApduFormatError, Command, parse_command
from hw.card.application import (
    AID,
    APP_VERSION,
    CLA_ISO,
    CLA_PROPRIETARY,
    INS,
    PIN_P2,
    PIN_TRIES,
    REC_CONTROLS,
    REC_DATA_MAC,
    REC_IDENTITY,
    SFI_CONTROLS,
    SFI_IDENTITY,
    SFI_LIMITS,
    TAG_COMMIT,
    TAG_COMMIT_RECEIPT,
    TAG_COUNTERS,
    TAG_RESERVE,
    TAG_RESERVE_RECEIPT,
)
from hw.card.keys import MAC_LEN, cmac
from hw.card.records import (
    CHALLENGE_LEN,
    NO_WRITE,
    CounterState,
    decode_counter_write,
    encode_counter_state,
    limit_id_of_record,
)
from hw.errors import CardDataError

__all__ = ["CardState", "CardApplet", "VirtualCard", "Fault", "atr", "VPCD_HOST", "VPCD_PORT",
           "DirectChannel"]

VPCD_HOST = "127.0.0.1"
VPCD_PORT = 35963
_CTRL_OFF, _CTRL_ON, _CTRL_RESET, _CTRL_ATR = 0, 1, 2, 4
_STATE_FORMAT = 1
_MAX_U32 = 0xFFFFFFFF


def atr(historical: bytes = b"EDGEPOS") -> bytes:
    """A valid ATR offering T=0 and T=1 with ``historical`` bytes (at most 15) and its TCK."""
    if len(historical) > 15:
        raise ValueError("at most 15 historical bytes")
    body = bytes((0x80 | len(historical), 0x80, 0x01)) + historical
    tck = 0
    for b in body:
        tck ^= b
    return b"\x3b" + body + bytes((tck,))


ATR = atr()


@dataclass(slots=True)
class CardState:
    """The card's persistent memory. ``card_key`` is the diversified key loaded at
    personalisation; files are kept as the raw records the card serves (``controls``, the
    SFI 3 record, only on a card of format 02: None otherwise, and in state files written
    before it existed)."""

    card_key: bytes
    key_version: int
    identity: bytes
    limits: list[bytes]
    data_mac: bytes
    pin: str
    pin_tries_left: int = PIN_TRIES
    txn_counter: int = 0
    last_write_id: bytes = NO_WRITE
    reservation_open: bool = False
    #: [limit_id, spent, period_start] per limit, in the order of the limit records
    counters: list[list[int]] = field(default_factory=list)
    controls: bytes | None = None

    def __repr__(self) -> str:  # never show the key or the PIN
        return (f"CardState(key_version={self.key_version}, limits={len(self.limits)}, "
                f"txn_counter={self.txn_counter}, pin_tries_left={self.pin_tries_left})")

    def to_json(self) -> str:
        d = asdict(self)
        for k in ("card_key", "identity", "data_mac", "last_write_id"):
            d[k] = d[k].hex()
        d["limits"] = [r.hex() for r in self.limits]
        d["controls"] = None if self.controls is None else self.controls.hex()
        d["format"] = _STATE_FORMAT
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "CardState":
        try:
            d = json.loads(text)
            if d.pop("format", None) != _STATE_FORMAT:
                raise CardDataError("virtual card state file has an unknown format")
            for k in ("card_key", "identity", "data_mac", "last_write_id"):
                d[k] = bytes.fromhex(d[k])
            d["limits"] = [bytes.fromhex(r) for r in d["limits"]]
            if d.get("controls") is not None:
                d["controls"] = bytes.fromhex(d["controls"])
            return cls(**d)
        except (ValueError, KeyError, TypeError) as exc:
            raise CardDataError(f"virtual card state does not load: {type(exc).__name__}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "CardState":
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a card pulled mid-save keeps the old or the new state."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        os.replace(tmp, path)

    def counter_state(self) -> CounterState:
        from authz.fuel_model import LimitCounter

        return CounterState(self.txn_counter, self.last_write_id, self.reservation_open,
                            tuple((c[0], LimitCounter(c[1], c[2])) for c in self.counters))


class Fault(Enum):
    """Ways the virtual card can misbehave, for tests of the terminal's error paths."""

    GARBAGE = "garbage"  #: answer random bytes ending in an undefined status word
    SHORT = "short"  #: answer a single byte
    WRONG_MAC = "wrong_mac"  #: corrupt the MAC of the next answer that has one (data MAC
    #: record, GET COUNTERS, RESERVE/COMMIT receipts); other answers pass untouched
    SLOW = "slow"  #: answer after ``delay_s``
    PULL_BEFORE_APPLY = "pull_before_apply"  #: drop out of the reader without applying
    PULL_AFTER_APPLY = "pull_after_apply"  #: apply (and persist), then drop out unanswered


@dataclass(slots=True)
class _Injected:
    fault: Fault
    ins: int | None
    times: int
    delay_s: float


def _sw(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


class CardApplet:
    """The fuel-card application, sans-IO. ``path`` (optional) is where state persists."""

    def __init__(self, state: CardState, path: str | os.PathLike[str] | None = None) -> None:
        self.state = state
        self.path = Path(path) if path is not None else None
        self.selected = False
        self.pin_verified = False
        self.lock = threading.RLock()

    def _persist(self) -> None:
        if self.path is not None:
            self.state.save(self.path)

    def power(self, code: int) -> None:
        """Power off, power on or reset: the session (selection, PIN verified) ends."""
        with self.lock:
            self.selected = False
            self.pin_verified = False

    def process(self, raw: bytes) -> bytes:
        """Answer one command APDU."""
        with self.lock:
            try:
                cmd = parse_command(raw)
            except ApduFormatError:
                return _sw(SW.WRONG_LENGTH)
            iso = {INS.SELECT: self._select, INS.READ_RECORD: self._read_record, INS.VERIFY: self._verify}
            prop = {INS.GET_COUNTERS: self._get_counters, INS.RESERVE: self._reserve, INS.COMMIT: self._commit}
            if cmd.cla == CLA_ISO:
                handler = iso.get(cmd.ins)
            elif cmd.cla == CLA_PROPRIETARY:
                handler = prop.get(cmd.ins)
            else:
                return _sw(SW.CLA_NOT_SUPPORTED)
            if handler is None:
                known = cmd.ins in iso or cmd.ins in prop
                return _sw(SW.CLA_NOT_SUPPORTED if known else SW.INS_NOT_SUPPORTED)
            if cmd.ins != INS.SELECT and not self.selected:
                return _sw(SW.NOT_ALLOWED)
            return handler(cmd)

    def _select(self, cmd: Command) -> bytes:
        if (cmd.p1, cmd.p2) != (0x04, 0x00):
            return _sw(SW.WRONG_P1P2)
        self.pin_verified = False
        if cmd.data != AID:
            self.selected = False
            return _sw(SW.FILE_NOT_FOUND)
        self.selected = True
        s = self.state
        return bytes((APP_VERSION, s.key_version, s.pin_tries_left)) + _sw(SW.OK)

    def _read_record(self, cmd: Command) -> bytes:
        if cmd.p2 & 0x07 != 0x04 or cmd.data:
            return _sw(SW.WRONG_P1P2)
        sfi, rec, s = cmd.p2 >> 3, cmd.p1, self.state
        if sfi == SFI_IDENTITY:
            files = {REC_IDENTITY: s.identity, REC_DATA_MAC: s.data_mac}
            data = files.get(rec)
        elif sfi == SFI_LIMITS:
            data = s.limits[rec - 1] if 1 <= rec <= len(s.limits) else None
        elif sfi == SFI_CONTROLS and s.controls is not None:
            data = s.controls if rec == REC_CONTROLS else None
        else:
            return _sw(SW.FILE_NOT_FOUND)
        if data is None:
            return _sw(SW.RECORD_NOT_FOUND)
        return data + _sw(SW.OK)

    def _verify(self, cmd: Command) -> bytes:
        s = self.state
        if (cmd.p1, cmd.p2) != (0x00, PIN_P2):
            return _sw(SW.WRONG_P1P2)
        if s.pin_tries_left == 0:
            return _sw(SW.PIN_BLOCKED)
        if not cmd.data:
            return _sw(SW.OK if self.pin_verified else SW.WRONG_PIN_BASE | s.pin_tries_left)
        if len(cmd.data) != 8:
            return _sw(SW.WRONG_LENGTH)
        pin = _parse_pin_block(cmd.data)
        if pin is None:
            return _sw(SW.WRONG_DATA)
        # Count the try on "disk" before comparing: pulling the card mid-check costs a try.
        s.pin_tries_left -= 1
        self._persist()
        if _consttime_eq(pin, s.pin):
            s.pin_tries_left = PIN_TRIES
            self._persist()
            self.pin_verified = True
            return _sw(SW.OK)
        self.pin_verified = False
        return _sw(SW.PIN_BLOCKED if s.pin_tries_left == 0 else SW.WRONG_PIN_BASE | s.pin_tries_left)

    def _get_counters(self, cmd: Command) -> bytes:
        if (cmd.p1, cmd.p2) != (0, 0):
            return _sw(SW.WRONG_P1P2)
        if len(cmd.data) != CHALLENGE_LEN:
            return _sw(SW.WRONG_LENGTH)
        body = encode_counter_state(self.state.counter_state())
        mac = cmac(self.state.card_key, bytes((TAG_COUNTERS,)) + cmd.data + body)
        return body + mac + _sw(SW.OK)

    def _reserve(self, cmd: Command) -> bytes:
        return self._write(cmd, TAG_RESERVE, TAG_RESERVE_RECEIPT, reserve=True)

    def _commit(self, cmd: Command) -> bytes:
        return self._write(cmd, TAG_COMMIT, TAG_COMMIT_RECEIPT, reserve=False)

    def _write(self, cmd: Command, tag: int, receipt_tag: int, *, reserve: bool) -> bytes:
        s = self.state
        if (cmd.p1, cmd.p2) != (0, 0):
            return _sw(SW.WRONG_P1P2)
        if reserve:
            if s.pin_tries_left == 0:
                return _sw(SW.PIN_BLOCKED)
            if not self.pin_verified:
                return _sw(SW.SECURITY_STATUS)
        if len(cmd.data) < MAC_LEN + 21:
            return _sw(SW.WRONG_LENGTH)
        body, mac = cmd.data[:-MAC_LEN], cmd.data[-MAC_LEN:]
        try:
            w = decode_counter_write(body)
        except CardDataError:
            return _sw(SW.WRONG_DATA)
        if not _consttime_eq(cmac(s.card_key, bytes((tag,)) + body), mac):
            return _sw(SW.BAD_MAC)
        if w.expected_txn != s.txn_counter or s.txn_counter >= _MAX_U32:
            return _sw(SW.CONDITIONS)
        if not reserve and not s.reservation_open:
            return _sw(SW.NOT_ALLOWED)
        if [i for i, _ in w.counters] != [limit_id_of_record(r) for r in s.limits] or w.write_id == NO_WRITE:
            return _sw(SW.WRONG_DATA)
        # Apply all at once: the new state is saved by one atomic rename.
        s.counters = [[i, c.spent, c.period_start] for i, c in w.counters]
        s.txn_counter += 1
        s.last_write_id = w.write_id
        s.reservation_open = reserve
        self._persist()
        txn = s.txn_counter.to_bytes(4, "big")
        return txn + cmac(s.card_key, bytes((receipt_tag,)) + w.write_id + txn) + _sw(SW.OK)


def _consttime_eq(a: bytes | str, b: bytes | str) -> bool:
    import hmac

    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    return hmac.compare_digest(a, b)


def _parse_pin_block(block: bytes) -> str | None:
    """The PIN in an ISO 9564 format 2 block, or None when the block is malformed."""
    if block[0] >> 4 != 2:
        return None
    n = block[0] & 0x0F
    digits = block[1:].hex().upper()
    if not 4 <= n <= 12 or not digits[:n].isdigit() or digits[n:] != "F" * (14 - n):
        return None
    return digits[:n]


class DirectChannel:
    """An in-process :class:`hw.card.application.ApduChannel` to an applet (no pcscd):
    for unit tests of the application logic and of the applet."""

    def __init__(self, applet: CardApplet) -> None:
        self.applet = applet

    async def transmit(self, apdu, *, timeout: float):
        from hw.card.apdu import parse_response

        raw = apdu.to_bytes() if isinstance(apdu, Command) else bytes(apdu)
        return parse_response(self.applet.process(raw))


class VirtualCard:
    """A virtual card in a vpcd reader slot: ``insert()`` connects, ``pull()`` disconnects.

    The card's state is loaded from and saved to ``path``. One thread per insertion
    serves vpcd. ``port`` picks the slot (35963 is reader "Virtual PCD 00 00").
    """

    def __init__(self, path: str | os.PathLike[str], *, host: str = VPCD_HOST,
                 port: int = VPCD_PORT) -> None:
        self.path = Path(path)
        self.applet = CardApplet(CardState.load(self.path), self.path)
        self.host, self.port = host, port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._faults: list[_Injected] = []
        self._lock = threading.Lock()
        self.apdus_seen = 0

    @property
    def state(self) -> CardState:
        return self.applet.state

    @property
    def inserted(self) -> bool:
        """True while the card's socket to vpcd is open."""
        return self._sock is not None

    def insert(self, timeout: float = 2.0) -> None:
        """Put the card into the reader: connect to vpcd and serve it in a thread."""
        if self._sock is not None:
            raise RuntimeError("virtual card already inserted")
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        sock.settimeout(None)
        # Without these, each APDU waits out delayed ACKs (~40 ms) instead of ~0.1 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.applet.power(_CTRL_RESET)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, args=(sock,), daemon=True,
                                        name=f"vicc-{self.port}")
        self._thread.start()

    def pull(self, timeout: float = 2.0) -> None:
        """Take the card out of the reader: shut the socket down; idempotent.

        The serving thread may be inside a ``recv`` or a ``send`` on the socket: it is shut
        down (which wakes that thread) and closed by the serving thread itself, never under
        it (a socket closed by another thread lets its file descriptor be reused while the
        first one still reads it)."""
        sock, self._sock = self._sock, None
        t, self._thread = self._thread, None
        if sock is None:
            return
        if t is None or t is threading.current_thread():
            _close(sock)
            return
        _shutdown(sock)
        t.join(timeout)

    def __enter__(self) -> "VirtualCard":
        self.insert()
        return self

    def __exit__(self, *exc: object) -> None:
        self.pull()

    def inject(self, fault: Fault, *, ins: int | None = None, times: int = 1,
               delay_s: float = 0.5) -> None:
        """Misbehave on the next ``times`` APDUs with instruction ``ins`` (any when None)."""
        with self._lock:
            self._faults.append(_Injected(fault, ins, times, delay_s))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, apdu: bytes) -> _Injected | None:
        ins = apdu[1] if len(apdu) > 1 else None
        with self._lock:
            for f in self._faults:
                if f.fault is Fault.WRONG_MAC and not _carries_mac(apdu):
                    continue
                if f.ins is None or f.ins == ins:
                    f.times -= 1
                    if f.times <= 0:
                        self._faults.remove(f)
                    return f
        return None

    def _serve(self, sock: socket.socket) -> None:
        """The thread of one insertion: answers vpcd until the card is pulled, then closes
        the socket (it is the only one that uses it)."""
        try:
            self._serve_until_pulled(sock)
        finally:
            _close(sock)

    def _serve_until_pulled(self, sock: socket.socket) -> None:
        try:
            while True:
                msg = _recv_msg(sock)
                if msg is None:
                    return
                if len(msg) == 1:
                    if msg[0] == _CTRL_ATR:
                        _send_msg(sock, ATR)
                    elif msg[0] in (_CTRL_OFF, _CTRL_ON, _CTRL_RESET):
                        self.applet.power(msg[0])
                    continue
                self.apdus_seen += 1
                answer = self._answer(msg, sock)
                if answer is None:  # pulled mid-exchange
                    self._drop(sock)
                    return
                _send_msg(sock, answer)
        except OSError:
            return

    def _answer(self, apdu: bytes, sock: socket.socket) -> bytes | None:
        f = self._take_fault(apdu)
        if f is None:
            return self.applet.process(apdu)
        if f.fault is Fault.PULL_BEFORE_APPLY:
            return None
        if f.fault is Fault.PULL_AFTER_APPLY:
            self.applet.process(apdu)
            return None
        if f.fault is Fault.SLOW:
            time.sleep(f.delay_s)
            return self.applet.process(apdu)
        if f.fault is Fault.SHORT:
            return b"\x90"
        if f.fault is Fault.GARBAGE:
            return os.urandom(1 + os.urandom(1)[0] % 24) + b"\x13\x37"
        out = bytearray(self.applet.process(apdu))  # WRONG_MAC
        if len(out) > 2 + MAC_LEN - 1:
            out[-3] ^= 0x01
        return bytes(out)

    def _drop(self, sock: socket.socket) -> None:
        """Pulled mid-exchange (a fault): the card is out; ``_serve`` closes the socket."""
        if self._sock is sock:
            self._sock = None
            self._thread = None
        _shutdown(sock)


def _carries_mac(apdu: bytes) -> bool:
    """Does the answer to ``apdu`` end in a MAC (data MAC record, counters, receipts)?"""
    if len(apdu) < 4:
        return False
    if apdu[1] in (INS.GET_COUNTERS, INS.RESERVE, INS.COMMIT):
        return True
    return apdu[1] == INS.READ_RECORD and apdu[2] == REC_DATA_MAC and apdu[3] >> 3 == SFI_IDENTITY


def _shutdown(sock: socket.socket) -> None:
    """End the connection both ways (wakes a thread blocked on it); the socket stays open."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _close(sock: socket.socket) -> None:
    _shutdown(sock)
    sock.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        # Re-armed before every recv: Linux clears QUICKACK after a while on its own.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _recv_msg(sock: socket.socket) -> bytes | None:
    head = _recv_exact(sock, 2)
    if head is None:
        return None
    (n,) = struct.unpack(">H", head)
    return _recv_exact(sock, n) if n else b""


def _send_msg(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">H", len(payload)) + payload)
