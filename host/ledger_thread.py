"""A ledger connection with one owner: the thread that uses it.

The database drivers (sqlite3, psycopg) do not survive a connection closed by one thread
while another is still inside a statement on it: the worker used to crash that way when it
stopped (``asyncio.to_thread`` work is not stopped by cancelling its await, and ``run``'s
``finally`` closed the ledger under it). :class:`LedgerThread` makes that impossible by
construction: the connection is opened, used, reopened and closed only by its own thread,
which runs the calls given to it one at a time, in order; closing is that thread's last job,
after every call queued before it. The event loop only waits (:meth:`LedgerThread.call`,
:meth:`LedgerThread.close`), never touches the connection.

A stop is bounded: :meth:`LedgerThread.close` waits ``grace_s`` for the call in flight, then
interrupts it (SQLite ``interrupt``, PostgreSQL cancel: both are meant to be called from
another thread; the statement fails, its transaction rolls back, nothing is half applied),
waits again, and if the thread is still stuck (a database that does not answer at all) leaves
the connection to it rather than close it under it: the thread is a daemon, so the process
still exits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from .db import redact_url
from .errors import HostError
from .ledger import Ledger

__all__ = ["LedgerThread", "LedgerThreadClosed"]

log = logging.getLogger("edgepos.host.ledger_thread")

T = TypeVar("T")


class LedgerThreadClosed(HostError):
    """A call was given to a :class:`LedgerThread` that is closing or closed."""


class LedgerThread:
    """One ledger connection and the one thread that uses it.

    Functions given to :meth:`call` run in the thread; they reach the connection with
    :meth:`ledger` (opening it if there is none) and replace a broken one with
    :meth:`reopen`. Both refuse to run on any other thread.
    """

    def __init__(self, url: str, *, name: str, opener: Callable[[str], Ledger] = Ledger.open) -> None:
        self.url = url
        self.name = name
        self._opener = opener
        self._ledger: Ledger | None = None
        self._swap = threading.Lock()  # held while the connection is replaced, so interrupt() sees a live one
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple, concurrent.futures.Future] | None] = \
            queue.SimpleQueue()
        self._finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._finished.set_running_or_notify_cancel()  # nobody may cancel the thread's end
        self._closing = False
        self._running_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- from the event loop (or any thread) --

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the thread, after the calls given before it. Cancelling the await
        does not stop a call already running (nothing can): the thread finishes it, and the
        connection stays open until it has. Raises :class:`LedgerThreadClosed` once closing."""
        if self._closing:
            raise LedgerThreadClosed(f"ledger thread {self.name} is closing")
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((fn, args, fut))
        return await asyncio.wrap_future(fut)

    @property
    def busy(self) -> bool:
        """True while a call is running in the thread."""
        return self._running_since is not None

    def interrupt(self) -> bool:
        """Make the statement running on the connection fail (thread-safe). True if there
        was a connection to interrupt."""
        with self._swap:
            led = self._ledger
            if led is None:
                return False
            led.db.interrupt()
            return True

    async def close(self, grace_s: float = 5.0) -> bool:
        """Stop taking calls, let the thread finish those queued (each within ``grace_s``
        before it is interrupted) and close the connection in the thread. Idempotent.
        Returns True when the thread has closed the connection; False when a call was still
        stuck after the interrupt (the connection is then left to that thread)."""
        if not self._closing:
            self._closing = True
            self._jobs.put(None)
        done = asyncio.wrap_future(self._finished)
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(done), grace_s)
                return True
            except TimeoutError:
                since = self._running_since
                if since is not None and time.monotonic() - since >= grace_s:
                    if not self.interrupt():
                        break
                    log.warning("ledger %s: a call still running %.1f s after the stop was interrupted "
                                "(its transaction rolls back); it was in %s", self.name,
                                time.monotonic() - since, self._where())
                    try:
                        await asyncio.wait_for(asyncio.shield(done), grace_s)
                        return True
                    except TimeoutError:
                        break
        log.error("ledger %s: a call does not return even interrupted; its connection is left to it "
                  "(closed when the process exits)", self.name)
        return False

    def _where(self) -> str:
        """Where the thread is now, innermost last (for the log of a stop that waits)."""
        frame = sys._current_frames().get(self._thread.ident or -1)
        return " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
                          for f in reversed(traceback.extract_stack(frame, limit=6))) if frame else "?"

    # -- in the thread --

    def ledger(self) -> Ledger:
        """The connection, opened now if there is none. In the thread only. Raises what
        :meth:`Ledger.open` raises (:class:`~host.errors.LedgerUnavailable`, ...)."""
        self._check_thread()
        if self._ledger is None:
            if self._closing:
                raise LedgerThreadClosed(f"ledger thread {self.name} is closing")
            led = self._opener(self.url)
            with self._swap:
                self._ledger = led
        return self._ledger

    def reopen(self) -> Ledger | None:
        """Drop the connection (after a failure: it may be what broke) and open a new one.
        In the thread only. None if the ledger cannot be reached now (the next call tries
        again) or the thread is closing."""
        self._check_thread()
        self._drop()
        if self._closing:
            return None
        try:
            return self.ledger()
        except Exception as exc:  # noqa: BLE001 - said in the log; the next call tries again
            log.warning("ledger %s unreachable: %s", redact_url(self.url), exc)
            return None

    def _check_thread(self) -> None:
        if threading.current_thread() is not self._thread:
            raise RuntimeError(f"the connection of {self.name} is used only by its own thread")

    def _drop(self) -> None:
        with self._swap:
            led, self._ledger = self._ledger, None
        if led is not None:
            try:
                led.close()
            except Exception:  # noqa: BLE001 - it is broken already
                pass

    def _run(self) -> None:
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    break
                fn, args, fut = job
                if not fut.set_running_or_notify_cancel():
                    continue  # its await was cancelled before it started
                self._running_since = time.monotonic()
                try:
                    fut.set_result(fn(*args))
                except BaseException as exc:  # noqa: BLE001 - delivered to the awaiting coroutine
                    fut.set_exception(exc)
                finally:
                    self._running_since = None
            # calls given after the stop was asked for (none: call() refuses them) fail, not hang
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None and job[2].set_running_or_notify_cancel():
                    job[2].set_exception(LedgerThreadClosed(f"ledger thread {self.name} is closed"))
        finally:
            self._drop()
            self._finished.set_result(None)
