"""Serial barcode scanner driver: frames bytes from the till's scanner into scan events.

Three layers, so each can be tested on its own:

* :class:`Framer` is sans-IO: bytes in, :class:`Scan` / :class:`ScanNoise` events out. It
  splits the stream on the configured suffix, strips the prefix and the AIM symbology
  identifier, and turns anything a scanner would not send (binary garbage, overlong
  frames, 13-digit codes with a wrong EAN-13 check digit) into noise events.
* :class:`RepeatFilter` is sans-IO too: it drops the same code read again within
  ``repeat_window_s`` (a card held under the scanner is read many times a second).
* :class:`Scanner` owns the port: ``async with Scanner(cfg) as s: async for event in s``.
  It opens the port with pyserial, reads it on the event loop, and when the scanner is
  unplugged it waits for it to come back instead of failing.

Noise is an event, not an exception: a noisy cable must not stop the lane, and the daemon
wants to count it. Exceptions (:class:`hw.errors.ScannerError`) are for misuse and bugs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType

import serial

from hw.barcode import is_valid_ean13, mask_code
from hw.errors import ScannerError

__all__ = [
    "ScannerConfig",
    "ScanKind",
    "Scan",
    "ScanNoise",
    "ScanEvent",
    "Framer",
    "RepeatFilter",
    "Scanner",
    "TERMINATORS",
]

log = logging.getLogger("edgepos.hw.scanner")

#: Frame terminators by the name scanners use for them in their programming sheets.
TERMINATORS: dict[str, bytes] = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n"}

# ISO/IEC 15424 symbology identifier: "]", a code character (E = EAN/UPC, C = Code 128,
# Q = QR, d = Data Matrix, ...) and a modifier. Modifiers are digits for nearly every
# symbology; Aztec also uses A-C, so a letter is accepted there too.
_AIM_RE = re.compile(r"\][A-Za-z][0-9A-Za-z]")
_AIM_LEN = 3
_READ_CHUNK = 4096
_DEFAULT_QUEUE_LIMIT = 256


def _prefix_bytes(prefix: bytes | str | None) -> bytes:
    """Normalize a configured prefix to bytes (``b""`` for none) and check it can be framed."""
    if prefix is None:
        return b""
    if isinstance(prefix, str):
        try:
            prefix = prefix.encode("ascii")
        except UnicodeEncodeError:
            raise ScannerError(f"scanner prefix must be ASCII, got {prefix!r}") from None
    if not isinstance(prefix, bytes):
        raise ScannerError(f"scanner prefix must be bytes or str, got {type(prefix).__name__}")
    if b"\r" in prefix or b"\n" in prefix:
        raise ScannerError(f"scanner prefix must not contain CR or LF, got {prefix!r}")
    return prefix


def _check_suffix(suffix: str) -> bytes:
    """Return the terminator bytes for a suffix name, or raise ScannerError."""
    try:
        return TERMINATORS[suffix]
    except (KeyError, TypeError):
        raise ScannerError(
            f"scanner suffix must be one of {', '.join(TERMINATORS)}, got {suffix!r}"
        ) from None


def _check_club_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """Return club-card prefixes as a tuple of digit strings, or raise ScannerError."""
    if isinstance(prefixes, str):
        raise ScannerError("club_card_prefixes must be a collection of strings, not one string")
    result = tuple(prefixes)
    for p in result:
        if not isinstance(p, str) or not p.isascii() or not p.isdigit() or len(p) > 13:
            raise ScannerError(f"club card prefix must be 1 to 13 ASCII digits, got {p!r}")
    return result


@dataclass(frozen=True, slots=True)
class ScannerConfig:
    """How to reach one scanner and how it frames its output (set on the scanner itself
    by scanning programming barcodes; the daemon's config must match it).

    ``prefix`` is stripped from every frame; a frame without it is noise. ``aim`` means
    each frame starts with an AIM identifier such as ``]E0``, reported as the scan's
    symbology. ``repeat_window_s`` suppresses the same code read again within that many
    seconds (0 disables). ``max_frame_len`` bounds a frame (prefix and AIM included) so
    garbage without a terminator cannot grow a buffer. ``club_card_prefixes`` is the
    club's number range; empty means every valid EAN-13 is a club card.
    """

    port: str
    baudrate: int = 9600
    suffix: str = "CR"
    prefix: bytes | str | None = None
    aim: bool = False
    repeat_window_s: float = 1.0
    max_frame_len: int = 64
    reconnect_interval_s: float = 1.0
    club_card_prefixes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        """Validate every field so a bad config fails at startup, not on the first scan."""
        if not isinstance(self.port, str) or not self.port:
            raise ScannerError(f"scanner port must be a device path, got {self.port!r}")
        if not isinstance(self.baudrate, int) or self.baudrate <= 0:
            raise ScannerError(
                f"scanner baudrate must be a positive integer, got {self.baudrate!r}"
            )
        _check_suffix(self.suffix)
        prefix = _prefix_bytes(self.prefix)
        object.__setattr__(self, "prefix", prefix or None)
        if self.repeat_window_s < 0:
            raise ScannerError(f"repeat_window_s must be >= 0, got {self.repeat_window_s!r}")
        if self.reconnect_interval_s <= 0:
            raise ScannerError(
                f"reconnect_interval_s must be > 0, got {self.reconnect_interval_s!r}"
            )
        overhead = len(prefix) + (_AIM_LEN if self.aim else 0)
        if not isinstance(self.max_frame_len, int) or self.max_frame_len <= overhead:
            raise ScannerError(
                f"max_frame_len must leave room for a code after the prefix and AIM id "
                f"(> {overhead}), got {self.max_frame_len!r}"
            )
        object.__setattr__(
            self, "club_card_prefixes", _check_club_prefixes(self.club_card_prefixes)
        )


class ScanKind(StrEnum):
    """What a scanned code is, as far as the scanner layer can tell."""

    CLUB_CARD = "club_card"  # 13 digits, valid EAN-13, in the club's number range
    OTHER = "other"  # anything else that looks like a barcode (products, coupons...)


@dataclass(frozen=True, slots=True)
class Scan:
    """One code read by the scanner.

    ``symbology`` is the AIM identifier (``"]E0"``) when the scanner sends one, else
    ``None``; ``at`` is ``time.monotonic()`` when the frame was decoded. The repr masks
    the code, so logging an event never writes a full card number.
    """

    code: str
    symbology: str | None
    at: float
    kind: ScanKind = ScanKind.OTHER

    def __repr__(self) -> str:
        """Masked repr: first 2 and last 4 characters of the code only."""
        return (
            f"Scan(code={mask_code(self.code)!r}, symbology={self.symbology!r}, "
            f"at={self.at!r}, kind={self.kind.value!r})"
        )


@dataclass(frozen=True, slots=True)
class ScanNoise:
    """Bytes from the scanner that are not a valid scan; ``reason`` says why.

    ``raw_len`` is the number of bytes dropped (terminator not counted). The raw bytes are
    deliberately not kept: a misread card number must not end up in a log.
    """

    reason: str
    raw_len: int


ScanEvent = Scan | ScanNoise


class Framer:
    """Sans-IO scanner protocol: ``feed(bytes)`` returns the events those bytes complete.

    Handles partial reads, several frames per read and a CRLF split across reads. The
    events depend only on the byte stream, not on how it was chunked (a property test
    checks this), and the internal buffer never holds more than ``max_frame_len`` + 1
    bytes between calls.

    A frame with no terminator within ``max_frame_len`` bytes yields one noise event when
    it overflows; the bytes after it are skipped up to the next terminator, where framing
    resynchronizes.
    """

    def __init__(
        self,
        *,
        suffix: str = "CR",
        prefix: bytes | str | None = None,
        aim: bool = False,
        max_frame_len: int = 64,
        club_card_prefixes: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Build a framer; arguments mean what they mean on :class:`ScannerConfig`."""
        self._term = _check_suffix(suffix)
        self._suffix = suffix
        self._prefix = _prefix_bytes(prefix)
        self._aim = aim
        overhead = len(self._prefix) + (_AIM_LEN if aim else 0)
        if not isinstance(max_frame_len, int) or max_frame_len <= overhead:
            raise ScannerError(f"max_frame_len must be > {overhead}, got {max_frame_len!r}")
        self._max = max_frame_len
        self._club_prefixes = _check_club_prefixes(club_card_prefixes)
        self._clock = clock
        self._buf = bytearray()
        self._discarding = False

    @classmethod
    def from_config(
        cls, config: ScannerConfig, clock: Callable[[], float] = time.monotonic
    ) -> Framer:
        """Build the framer that matches a scanner's config."""
        return cls(
            suffix=config.suffix,
            prefix=config.prefix,
            aim=config.aim,
            max_frame_len=config.max_frame_len,
            club_card_prefixes=config.club_card_prefixes,
            clock=clock,
        )

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet terminated."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget a partial frame: after a reconnect its tail will never arrive."""
        self._buf.clear()
        self._discarding = False

    def _pending_tail(self) -> int:
        """Length of a terminator prefix at the end of the buffer (a CR waiting for LF)."""
        if len(self._term) > 1 and self._buf.endswith(self._term[:1]):
            return 1
        return 0

    def feed(self, data: bytes) -> list[ScanEvent]:
        """Add bytes read from the port; return the events they complete, in order."""
        self._buf += data
        events: list[ScanEvent] = []
        term = self._term
        while True:
            idx = self._buf.find(term)
            if self._discarding:
                if idx < 0:
                    tail = self._pending_tail()
                    del self._buf[: len(self._buf) - tail]
                    break
                del self._buf[: idx + len(term)]
                self._discarding = False
                continue
            content_len = idx if idx >= 0 else len(self._buf) - self._pending_tail()
            if content_len > self._max:
                events.append(
                    ScanNoise(
                        f"no terminator within {self._max} bytes; "
                        f"skipping to the next {self._suffix}",
                        self._max + 1,
                    )
                )
                del self._buf[: self._max + 1]
                self._discarding = True
                continue
            if idx < 0:
                break
            frame = bytes(self._buf[:idx])
            del self._buf[: idx + len(term)]
            events.append(self._decode(frame))
        return events

    def _decode(self, frame: bytes) -> ScanEvent:
        """Turn one terminated frame into a Scan, or into noise saying what is wrong."""
        raw_len = len(frame)
        if not frame:
            return ScanNoise("empty frame", 0)
        body = frame
        if self._prefix:
            if not frame.startswith(self._prefix):
                return ScanNoise(
                    f"frame does not start with the configured prefix {self._prefix!r}", raw_len
                )
            body = frame[len(self._prefix) :]
        for offset, byte in enumerate(body, start=len(self._prefix)):
            if 0x20 <= byte <= 0x7E:
                continue
            what = "non-ASCII" if byte >= 0x80 else "control"
            hint = ""
            if byte in (0x0D, 0x0A):
                stray = "CR" if byte == 0x0D else "LF"
                hint = f" (stray {stray}: is the scanner's suffix really {self._suffix}?)"
            return ScanNoise(f"{what} byte 0x{byte:02X} at offset {offset}{hint}", raw_len)
        text = body.decode("ascii")
        symbology: str | None = None
        if self._aim:
            if not _AIM_RE.match(text):
                return ScanNoise(
                    "missing AIM symbology identifier (expected ']' + letter + digit)", raw_len
                )
            symbology, text = text[:_AIM_LEN], text[_AIM_LEN:]
        if not text:
            return ScanNoise("frame has no code after its prefix/AIM identifier", raw_len)
        kind = ScanKind.OTHER
        if len(text) == 13 and text.isdigit():
            if not is_valid_ean13(text):
                return ScanNoise("bad EAN-13 check digit", raw_len)
            if not self._club_prefixes or text.startswith(self._club_prefixes):
                kind = ScanKind.CLUB_CARD
        return Scan(text, symbology, self._clock(), kind)


class RepeatFilter:
    """Sans-IO suppression of repeated reads of the same code.

    A code equal to the previous one and read less than ``window_s`` after it is dropped.
    The window slides: each read, even a dropped one, restarts it, so a card held under
    the scanner is reported once, and a second report needs the card taken away for at
    least ``window_s``. A different code in between always passes.
    """

    def __init__(self, window_s: float) -> None:
        """``window_s`` <= 0 lets every scan through."""
        self._window_s = window_s
        self._last_code: str | None = None
        self._last_at = 0.0

    def admit(self, scan: Scan) -> bool:
        """Return True if ``scan`` should be delivered, False if it is a repeat."""
        repeat = (
            self._window_s > 0
            and scan.code == self._last_code
            and scan.at - self._last_at < self._window_s
        )
        self._last_code, self._last_at = scan.code, scan.at
        return not repeat


class _Closed:
    """Queue sentinel: the scanner was closed (or its reader failed)."""


_CLOSED = _Closed()


class Scanner:
    """An async context manager that owns one scanner port and yields its events.

    ``async with Scanner(cfg) as s: async for event in s: ...`` — events are :class:`Scan`
    and :class:`ScanNoise`. When the port fails (the device is unplugged: read error,
    EOF, the path vanishes or now names another device) the driver logs it, drops the
    partial frame, and reopens the port every ``reconnect_interval_s`` until it is back;
    the ``async for`` just waits meanwhile. A port that cannot be opened at start is
    waited for the same way. Leaving the ``async with`` closes the port and ends every
    ``async for`` on it.

    Raises :class:`ScannerError` when iterated outside ``async with`` and, from the
    ``async for``, if the reader task itself fails (a bug).
    """

    def __init__(
        self,
        config: ScannerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        queue_limit: int = _DEFAULT_QUEUE_LIMIT,
    ) -> None:
        """Prepare a scanner; nothing is opened until ``async with``."""
        self._config = config
        self._framer = Framer.from_config(config, clock)
        self._repeats = RepeatFilter(config.repeat_window_s)
        self._queue: asyncio.Queue[ScanEvent | _Closed] = asyncio.Queue()
        self._queue_limit = queue_limit
        self._dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failure: ScannerError | None = None
        self._connected = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._disconnected.set()

    @property
    def config(self) -> ScannerConfig:
        """The configuration this scanner was built with."""
        return self._config

    @property
    def connected(self) -> bool:
        """True while the port is open and being read."""
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Wait until the port is open (scans sent before that are lost, as on hardware)."""
        await self._connected.wait()

    async def wait_disconnected(self) -> None:
        """Wait until the driver has noticed the port is gone."""
        await self._disconnected.wait()

    async def __aenter__(self) -> Scanner:
        """Start the reader task; returns at once, the port is opened in the background."""
        if self._task is not None or self._closed:
            raise ScannerError("a Scanner can be entered only once")
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"scanner {self._config.port}"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the port and end iteration."""
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading, close the port and end every ``async for`` on this scanner."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._task is not None:
                self._task.cancel()
                # wait() rather than await: the task's CancelledError is expected; ours
                # (the caller being cancelled) must propagate.
                await asyncio.wait({self._task})
        finally:
            self._queue.put_nowait(_CLOSED)

    def __aiter__(self) -> Scanner:
        """The scanner is its own iterator."""
        return self

    async def __anext__(self) -> ScanEvent:
        """Wait for the next event; StopAsyncIteration once the scanner is closed."""
        if self._task is None:
            raise ScannerError("iterate a Scanner inside 'async with Scanner(...) as s'")
        item = await self._queue.get()
        if isinstance(item, _Closed):
            self._queue.put_nowait(item)  # wake the next waiter too
            if self._failure is not None:
                raise self._failure
            raise StopAsyncIteration
        return item

    # --- reader ----------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Open, read until the port fails, wait, reopen; forever until cancelled."""
        try:
            attempts = 0
            while True:
                port = self._open(attempts)
                if port is None:
                    attempts += 1
                    await asyncio.sleep(self._config.reconnect_interval_s)
                    continue
                attempts = 0
                try:
                    reason = await self._read_until_lost(port)
                finally:
                    self._close_port(port)
                log.warning(
                    "scanner on %s lost: %s; reopening every %gs",
                    self._config.port,
                    reason,
                    self._config.reconnect_interval_s,
                )
                # Always pause before reopening: a port that opens and fails at once
                # (a half-gone device) must not turn this loop into a busy spin.
                await asyncio.sleep(self._config.reconnect_interval_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("scanner reader on %s failed", self._config.port)
            failure = ScannerError(f"scanner reader on {self._config.port} failed: {exc!r}")
            failure.__cause__ = exc
            self._failure = failure
            self._queue.put_nowait(_CLOSED)

    def _open(self, attempts: int) -> serial.Serial | None:
        """Open the port like any serial device; None (logged) if it is not there yet.

        Opening a tty with O_NONBLOCK (as pyserial does) does not wait for the device, so
        it is done on the loop: a thread would leak an open port if cancelled mid-open.
        """
        cfg = self._config
        try:
            # exclusive: a second process reading the same scanner would steal scans.
            port = serial.Serial(cfg.port, baudrate=cfg.baudrate, timeout=0, exclusive=True)
        except (serial.SerialException, OSError) as exc:
            level = logging.WARNING if attempts == 0 else logging.DEBUG
            log.log(
                level,
                "cannot open scanner port %s: %s; retrying every %gs",
                cfg.port,
                exc,
                cfg.reconnect_interval_s,
            )
            return None
        log.info("scanner connected on %s", cfg.port)
        return port

    async def _read_until_lost(self, port: serial.Serial) -> str:
        """Read the port on the event loop until it fails; return why it failed.

        Why loop.add_reader and not a reader thread: a thread blocked in read() can only
        be stopped with pyserial's cancel_read() or by closing the fd under it, and the
        latter races with fd reuse; with add_reader, stopping is remove_reader(), every
        event is produced on the loop (no cross-thread queue), and a hang-up (EPOLLHUP)
        wakes the reader like data does. The cost, Unix-only, fits an edge box.
        """
        loop = asyncio.get_running_loop()
        fd = port.fileno()
        rdev = os.fstat(fd).st_rdev
        lost: asyncio.Future[str] = loop.create_future()
        self._framer.reset()
        loop.add_reader(fd, self._on_readable, loop, fd, lost)
        self._set_connected(True)
        try:
            while True:
                done, _ = await asyncio.wait({lost}, timeout=self._config.reconnect_interval_s)
                if done:
                    return lost.result()
                # Some USB serial drivers go quiet instead of hanging up when unplugged;
                # the udev path going away or being reused is then the only sign.
                gone = self._path_gone(rdev)
                if gone is not None:
                    return gone
        finally:
            loop.remove_reader(fd)
            self._set_connected(False)

    def _on_readable(
        self, loop: asyncio.AbstractEventLoop, fd: int, lost: asyncio.Future[str]
    ) -> None:
        """Reader callback: read what is there, frame it, queue the events."""
        if lost.done():
            return
        try:
            # os.read on the fd pyserial opened (O_NONBLOCK): Serial.read() would select()
            # again, which also breaks on fds >= 1024 in a busy daemon.
            data = os.read(fd, _READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            loop.remove_reader(fd)
            lost.set_result(f"read failed: {exc.strerror or exc}")
            return
        if not data:
            loop.remove_reader(fd)
            lost.set_result("end of file (device hung up)")
            return
        try:
            for event in self._framer.feed(data):
                self._emit(event)
        except Exception as exc:  # a bug: fail the reader loudly rather than spin
            loop.remove_reader(fd)
            lost.set_exception(exc)

    def _emit(self, event: ScanEvent) -> None:
        """Apply repeat suppression, log (masked) and queue one event."""
        port = self._config.port
        if isinstance(event, Scan):
            if not self._repeats.admit(event):
                log.debug("scanner %s: repeat of %s suppressed", port, mask_code(event.code))
                return
            log.debug(
                "scanner %s: %s %s symbology=%s",
                port,
                event.kind.value,
                mask_code(event.code),
                event.symbology,
            )
        else:
            log.debug("scanner %s: noise, %s (%d bytes)", port, event.reason, event.raw_len)
        if self._queue.qsize() >= self._queue_limit:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 100 == 0:
                log.warning(
                    "scanner %s: nobody is reading events; %d dropped", port, self._dropped
                )
            return
        self._queue.put_nowait(event)

    def _path_gone(self, rdev: int) -> str | None:
        """Why the configured path no longer names the open device, or None if it does."""
        try:
            st = os.stat(self._config.port)
        except FileNotFoundError:
            return "device path vanished"
        except OSError as exc:
            return f"device path unusable: {exc.strerror or exc}"
        if st.st_rdev != rdev:
            return "device path now names another device"
        return None

    def _set_connected(self, up: bool) -> None:
        """Flip the connected/disconnected events together."""
        if up:
            self._disconnected.clear()
            self._connected.set()
        else:
            self._connected.clear()
            self._disconnected.set()

    @staticmethod
    def _close_port(port: serial.Serial) -> None:
        """Close a port that may already be dead; closing must not raise."""
        try:
            port.close()
        except (serial.SerialException, OSError) as exc:
            log.debug("closing scanner port failed: %s", exc)
