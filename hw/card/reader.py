"""The PC/SC card reader driver (pyscard over pcscd), with an asyncio API.

``async with CardReader("Virtual PCD 00 00") as r:`` owns one reader. ``async for ev in
r.events():`` yields :class:`CardInserted` / :class:`CardRemoved` as pcscd reports them, and
``await r.transmit(apdu, timeout=0.5)`` exchanges one APDU with the card in the reader and
returns the parsed :class:`hw.card.apdu.Response`.

PC/SC calls block, so they run in threads: one thread watches the reader
(``SCardGetStatusChange``) and posts events into the event loop; one worker thread owns the
card connection and runs every exchange in order. Each uses its own PC/SC context (pcsc-lite
serializes calls per context). Every failure becomes a :class:`hw.errors.CardError`:

* pcscd not running, reader unknown or gone: :class:`NoReaderError`
* no card, or the card pulled during the exchange: :class:`CardRemovedError`
* no answer within the timeout: :class:`CardTimeoutError` (the exchange may still finish;
  the connection is reset afterwards, so the card session (selection, PIN) is over)
* a short, overlong or garbage answer: :class:`CardResponseError`
* any other PC/SC failure: :class:`CardIOError`

Unexpected status words are the application's business (``hw.card.application``), not the
driver's. Note: pcscd polls readers like vpcd every 400 ms, so an insertion or a removal is
reported up to 0.4 s after it happens.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

from smartcard import scard

from hw.card.apdu import Command, Response, parse_response
from hw.errors import (
    CardError,
    CardIOError,
    CardRemovedError,
    CardTimeoutError,
    NoReaderError,
)

__all__ = ["CardReader", "CardInserted", "CardRemoved", "CardEvent", "list_readers"]

log = logging.getLogger("edgepos.hw.card.reader")
T = TypeVar("T")

_REMOVED = {scard.SCARD_W_REMOVED_CARD, scard.SCARD_E_NO_SMARTCARD, scard.SCARD_W_RESET_CARD,
            scard.SCARD_W_UNPOWERED_CARD}
_NO_READER = {scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED, scard.SCARD_E_UNKNOWN_READER,
              scard.SCARD_E_READER_UNAVAILABLE, scard.SCARD_E_NO_READERS_AVAILABLE}
_CLOSED = object()
_SCARD_PRESENT = 0x0004  # pcsclite.h card state bit (SCardStatus), not exported by pyscard


@dataclass(frozen=True, slots=True)
class CardInserted:
    """A card is in the reader; ``atr`` is its answer to reset."""

    reader: str
    atr: bytes


@dataclass(frozen=True, slots=True)
class CardRemoved:
    """The card left the reader."""

    reader: str


CardEvent = CardInserted | CardRemoved


def _msg(hr: int) -> str:
    try:
        return f"{scard.SCardGetErrorMessage(hr).strip()} ({hr & 0xFFFFFFFF:#010x})"
    except Exception:  # pragma: no cover - pyscard always has a message
        return f"{hr & 0xFFFFFFFF:#010x}"


def _error(hr: int, what: str) -> CardError:
    """The CardError for a failed PC/SC call."""
    if hr in _NO_READER:
        return NoReaderError(f"{what}: {_msg(hr)}")
    if hr in _REMOVED:
        return CardRemovedError(f"{what}: {_msg(hr)}")
    return CardIOError(f"{what}: {_msg(hr)}", hr)


def _establish() -> int:
    hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hr != scard.SCARD_S_SUCCESS:
        if hr in (scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED):
            raise NoReaderError(f"pcscd is not running: {_msg(hr)}")
        raise _error(hr, "SCardEstablishContext")
    return ctx


def _list(ctx: int) -> list[str]:
    hr, readers = scard.SCardListReaders(ctx, [])
    if hr == scard.SCARD_E_NO_READERS_AVAILABLE:
        return []
    if hr != scard.SCARD_S_SUCCESS:
        raise _error(hr, "SCardListReaders")
    return list(readers)


def list_readers() -> list[str]:
    """The names of the readers pcscd knows; raise NoReaderError when pcscd is not running."""
    ctx = _establish()
    try:
        return _list(ctx)
    finally:
        scard.SCardReleaseContext(ctx)


def _resolve(name: str | None, readers: list[str]) -> str:
    if not readers:
        raise NoReaderError("pcscd has no readers")
    if name is None:
        return readers[0]
    if name in readers:
        return name
    matches = [r for r in readers if r.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    raise NoReaderError(f"no reader {name!r}; pcscd has: {', '.join(readers)}")


class _Worker:
    """One daemon thread running submitted calls in order. Daemon, so an exchange stuck
    on a card that never answers cannot hold up interpreter exit."""

    def __init__(self, name: str) -> None:
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._q.put((fn, fut))
        return fut

    def stop(self) -> None:
        self._q.put(None)

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            fn, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # delivered to the awaiting coroutine
                fut.set_exception(exc)


class CardReader:
    """One PC/SC reader: its card events and APDU exchange. Use as ``async with``.

    ``name`` is a reader name as pcscd lists it, or a unique prefix of one, or None for the
    first reader. ``removal_grace_s`` bounds how long an exchange that got no answer waits
    for pcscd to confirm the card is gone (vpcd answers a pulled card with nothing, and
    pcscd notices the removal at its next poll, within 0.4 s).
    """

    def __init__(self, name: str | None = None, *, exclusive: bool = True,
                 open_timeout_s: float = 5.0, removal_grace_s: float = 1.0,
                 poll_s: float = 0.25) -> None:
        self.requested_name = name
        self.name: str = name or ""
        self.exclusive = exclusive
        self.open_timeout_s = open_timeout_s
        self.removal_grace_s = removal_grace_s
        self.poll_s = poll_s
        self.card_present = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._worker: _Worker | None = None
        self._monitor: threading.Thread | None = None
        self._stop = threading.Event()
        self._io_ctx: int | None = None
        self._mon_ctx: int | None = None  # the monitor thread's; released by it, cancelled under _mon_lock
        self._mon_lock = threading.Lock()
        self._handle: int | None = None
        self._protocol: int = 0
        self._closed = False

    # --- lifecycle -----------------------------------------------------------------
    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._worker = _Worker(f"pcsc-io-{self.requested_name or 'any'}")
        try:
            first_state = await self._run(self._open, self.open_timeout_s, "opening the reader")
        except BaseException:
            self._worker.stop()
            raise
        self._monitor = threading.Thread(target=self._watch, args=(first_state,), daemon=True,
                                         name=f"pcsc-events-{self.name}")
        self._monitor.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop watching, reset and release the card, release the contexts; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with self._mon_lock:  # the monitor thread releases the context under the same lock
            if self._mon_ctx is not None:
                scard.SCardCancel(self._mon_ctx)
        if self._monitor is not None:
            await asyncio.wait_for(asyncio.to_thread(self._monitor.join, 2.0), 3.0)
        if self._worker is not None:
            try:
                await asyncio.wait_for(asyncio.wrap_future(self._worker.submit(self._close_io)), 2.0)
            except (TimeoutError, CardError):
                log.warning("reader %s: closing did not finish (an exchange is still stuck)", self.name)
            self._worker.stop()
        self._events.put_nowait(_CLOSED)

    def _open(self) -> int:
        self._io_ctx = _establish()
        self.name = _resolve(self.requested_name, _list(self._io_ctx))
        self._mon_ctx = _establish()
        hr, states = scard.SCardGetStatusChange(self._mon_ctx, 0, [(self.name, scard.SCARD_STATE_UNAWARE)])
        if hr != scard.SCARD_S_SUCCESS:
            raise _error(hr, f"reader {self.name}")
        _, state, atr = states[0]
        self._note(state, atr, None)
        return state

    def _close_io(self) -> None:
        self._drop_handle(scard.SCARD_RESET_CARD)
        if self._io_ctx is not None:
            scard.SCardReleaseContext(self._io_ctx)
            self._io_ctx = None

    # --- events ----------------------------------------------------------------------
    def _watch(self, state: int) -> None:
        """The monitor thread: wait for reader state changes, post them as events."""
        try:
            while not self._stop.is_set():
                hr, states = scard.SCardGetStatusChange(
                    self._mon_ctx, int(self.poll_s * 1000), [(self.name, state & ~scard.SCARD_STATE_CHANGED)])
                if hr == scard.SCARD_E_TIMEOUT:
                    continue
                if hr == scard.SCARD_E_CANCELLED or self._stop.is_set():
                    break
                if hr != scard.SCARD_S_SUCCESS:
                    self._post(_error(hr, f"watching reader {self.name}"))
                    break
                _, new_state, atr = states[0]
                self._note(new_state, atr, state)
                state = new_state
        finally:
            with self._mon_lock:
                if self._mon_ctx is not None:
                    scard.SCardReleaseContext(self._mon_ctx)
                    self._mon_ctx = None

    def _note(self, state: int, atr: list[int], old: int | None) -> None:
        """Post the events a state change means. pcsc-lite counts insertions and removals
        in the high 16 bits, so a card pulled and reinserted between two looks shows up."""
        # UNAVAILABLE (e.g. after a failed reset) counts as "no usable card", not as a lost
        # reader: a reader that is really gone fails SCardGetStatusChange itself.
        present = bool(state & scard.SCARD_STATE_PRESENT) and not state & (
            scard.SCARD_STATE_MUTE | scard.SCARD_STATE_UNAVAILABLE)
        was = self.card_present
        bounced = old is not None and was and present and ((state >> 16) - (old >> 16)) & 0xFFFF >= 2
        if was and (not present or bounced):
            self.card_present = False
            self._post(CardRemoved(self.name))
        if present and (not was or bounced):
            self.card_present = True
            self._post(CardInserted(self.name, bytes(atr)))

    def _post(self, item: Any) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        try:
            self._loop.call_soon_threadsafe(self._deliver, item)
        except RuntimeError:  # loop closed between the check and the call
            pass

    def _deliver(self, item: Any) -> None:
        if isinstance(item, CardRemoved) and self._worker is not None and not self._closed:
            # The session on that card is over: the next exchange connects afresh.
            self._worker.submit(lambda: self._drop_handle(scard.SCARD_LEAVE_CARD))
        self._events.put_nowait(item)

    async def events(self) -> AsyncIterator[CardEvent]:
        """CardInserted / CardRemoved as they happen (a card already in the reader when it
        was opened comes first as CardInserted). Ends when the reader is closed; raises
        NoReaderError when the reader or pcscd goes away."""
        while True:
            item = await self._events.get()
            if item is _CLOSED:
                self._events.put_nowait(_CLOSED)
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    # --- exchange --------------------------------------------------------------------
    async def _run(self, fn: Callable[[], T], timeout: float, what: str) -> T:
        if self._worker is None:
            raise CardIOError(f"reader {self.name or self.requested_name}: not open (use async with)")
        fut = self._worker.submit(fn)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), timeout)
        except TimeoutError:
            if not fut.cancel():
                # Running: PC/SC cannot abort it. Once it ends, reset the card so the
                # next exchange starts a clean session.
                self._worker.submit(lambda: self._drop_handle(scard.SCARD_RESET_CARD))
            raise CardTimeoutError(f"reader {self.name}: {what} took longer than {timeout:.3f} s") from None

    async def transmit(self, apdu: Command | bytes, *, timeout: float) -> Response:
        """Send one APDU to the card in the reader and return its parsed response.

        Connects to the card first if needed. Raises CardRemovedError, CardTimeoutError,
        CardResponseError, NoReaderError or CardIOError.
        """
        if self._closed:
            raise CardIOError(f"reader {self.name}: closed")
        raw = apdu.to_bytes() if isinstance(apdu, Command) else bytes(apdu)
        deadline = time.monotonic() + timeout
        return await self._run(lambda: self._exchange(raw, deadline), timeout, "the exchange")

    async def reset(self, *, timeout: float = 2.0) -> None:
        """End the card session: disconnect with a reset (the next exchange reconnects)."""
        await self._run(lambda: self._drop_handle(scard.SCARD_RESET_CARD), timeout, "the reset")

    def _connect(self) -> int:
        share = scard.SCARD_SHARE_EXCLUSIVE if self.exclusive else scard.SCARD_SHARE_SHARED
        for attempt in range(5):
            hr, handle, protocol = scard.SCardConnect(self._io_ctx, self.name, share,
                                                      scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1)
            # another PC/SC client (a diagnostic tool, a status query) may hold the card for a
            # moment: wait a little before calling the card unreadable
            if hr != scard.SCARD_E_SHARING_VIOLATION:
                break
            time.sleep(0.05 * (attempt + 1))
        if hr != scard.SCARD_S_SUCCESS:
            raise _error(hr, f"connecting to the card in {self.name}")
        self._handle, self._protocol = handle, protocol
        return handle

    def _drop_handle(self, disposition: int) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        if disposition != scard.SCARD_LEAVE_CARD and not self._still_there(handle):
            # Resetting a card that is gone fails, and pcscd then shows the slot empty
            # without having noticed the removal itself: a card inserted before its next
            # poll would never be reported. So only reset a card that is still there.
            disposition = scard.SCARD_LEAVE_CARD
        scard.SCardDisconnect(handle, disposition)

    def _still_there(self, handle: int) -> bool:
        """Does pcscd still see the card of ``handle`` (not removed, not reset)?"""
        try:
            hr, _reader, state, _protocol, _atr = scard.SCardStatus(handle)
        except Exception:  # pragma: no cover - pyscard signature differences
            return False
        return hr == scard.SCARD_S_SUCCESS and bool(state & _SCARD_PRESENT) and self.card_present

    def _exchange(self, raw: bytes, deadline: float) -> Response:
        handle = self._handle if self._handle is not None else self._connect()
        hr, resp = scard.SCardTransmit(handle, self._protocol, list(raw))
        if hr != scard.SCARD_S_SUCCESS:
            self._drop_handle(scard.SCARD_LEAVE_CARD)
            err = _error(hr, f"exchange with the card in {self.name}")
            if isinstance(err, CardIOError) and self._card_gone(deadline):
                raise CardRemovedError(f"card pulled from {self.name} during the exchange ({_msg(hr)})")
            raise err
        if not resp and self._card_gone(deadline):
            self._drop_handle(scard.SCARD_LEAVE_CARD)
            raise CardRemovedError(f"card pulled from {self.name} during the exchange")
        return parse_response(resp)

    def _card_gone(self, deadline: float) -> bool:
        """Wait (until ``deadline``, at most removal_grace_s) for pcscd to say whether the
        card left the reader. Runs on the worker's own context."""
        end = min(deadline, time.monotonic() + self.removal_grace_s)
        state = scard.SCARD_STATE_UNAWARE
        while True:
            wait_ms = max(0, int((end - time.monotonic()) * 1000)) if state != scard.SCARD_STATE_UNAWARE else 0
            hr, states = scard.SCardGetStatusChange(self._io_ctx, wait_ms, [(self.name, state)])
            if hr == scard.SCARD_E_TIMEOUT:
                return False
            if hr != scard.SCARD_S_SUCCESS:
                return hr in _NO_READER
            _, new_state, _ = states[0]
            if new_state & scard.SCARD_STATE_EMPTY:
                return True
            if state != scard.SCARD_STATE_UNAWARE and new_state >> 16 != state >> 16:
                return True  # removed and already back: still a different card session
            if time.monotonic() >= end:
                return False
            state = new_state & ~scard.SCARD_STATE_CHANGED

    def __repr__(self) -> str:
        return f"CardReader({self.name or self.requested_name!r}, present={self.card_present})"
