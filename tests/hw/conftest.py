"""Fixtures for ``hw`` tests: a real pty pair, the serial line a scanner driver opens."""

from __future__ import annotations

import os
import tty
from collections.abc import Iterator

import pytest


class PtyPair:
    """A raw-mode pty: write device output to the master; a driver opens ``path``."""

    def __init__(self) -> None:
        """Open the pair in raw mode (no CR/LF translation, no echo)."""
        master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self.master: int | None = master
        self.slave: int | None = slave

    def write(self, data: bytes) -> None:
        """Write all of ``data`` as the device would send it."""
        assert self.master is not None, "pty master already closed"
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view) :]

    def hang_up(self) -> None:
        """Close both ends held here, as an unplugged USB adapter would vanish."""
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)
        self.master = self.slave = None


@pytest.fixture
def pty_pair() -> Iterator[PtyPair]:
    """A pty pair the test writes to and a driver opens by path; fails loudly without ptys.

    The fixture keeps the slave open so its raw line settings hold until the driver
    opens the path, and closes what is still open afterwards.
    """
    if not os.path.exists("/dev/ptmx"):
        pytest.fail("no /dev/ptmx: this machine cannot create ptys, which hw tests need")
    try:
        pair = PtyPair()
    except OSError as exc:
        pytest.fail(f"cannot create a pty pair: {exc}")
    try:
        yield pair
    finally:
        pair.hang_up()
