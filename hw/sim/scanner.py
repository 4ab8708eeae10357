"""A simulated serial barcode scanner on a pty pair, for tests and for demos without hardware.

The driver opens the pty's slave path exactly as it would ``/dev/ttyUSB0``; the simulator
writes to the master what a real scanner sends: prefix, optional AIM identifier, code,
suffix. Unplugging closes the pty (the driver's reads fail, as on a USB unplug); replugging
makes a new one. A new pty gets a new ``/dev/pts/N``, so the simulator also keeps a stable
symlink that it repoints, like udev's ``/dev/serial/by-id/...``: point the driver at
``sim.link`` to test reconnects.

Run ``python -m hw.sim.scanner --help`` for a small CLI that types scans from stdin.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import sys
import tempfile
import time
import tty
from collections.abc import Iterable
from types import TracebackType

from hw.errors import ScannerError
from hw.scanner import TERMINATORS

__all__ = ["ScannerSim", "main"]

_WRITE_TIMEOUT_S = 2.0


class ScannerSim:
    """A scanner on a pty: ``scan()`` sends a framed code, ``unplug()``/``replug()`` remove
    and restore it behind the stable path ``link``.

    Framing is set like on the real device (``suffix``, ``prefix``, ``aim``) and must match
    the driver's config, or the driver reports noise: that mismatch is testable too.
    Use as a context manager (or call ``close()``) to remove the pty and the temp dir.
    """

    def __init__(
        self,
        *,
        suffix: str = "CR",
        prefix: bytes | str | None = None,
        aim: bool = False,
    ) -> None:
        """Create the pty and the stable symlink; the scanner starts plugged in."""
        if suffix not in TERMINATORS:
            raise ScannerError(f"suffix must be one of {', '.join(TERMINATORS)}, got {suffix!r}")
        self._term = TERMINATORS[suffix]
        self._prefix = prefix.encode("ascii") if isinstance(prefix, str) else (prefix or b"")
        self._aim = aim
        self._dir = tempfile.mkdtemp(prefix="edgepos-scanner-sim-")
        self._link = os.path.join(self._dir, "usb-EdgePOS_Scanner_Sim-if00")
        self._master: int | None = None
        self._slave: int | None = None
        self._port: str | None = None
        self._plug()

    @property
    def link(self) -> str:
        """Stable path to the scanner (a symlink to the current pty); gone while unplugged."""
        return self._link

    @property
    def port(self) -> str:
        """The current pty slave path (``/dev/pts/N``); changes on every replug."""
        if self._port is None:
            raise ScannerError("the simulated scanner is unplugged")
        return self._port

    @property
    def plugged(self) -> bool:
        """True while the pty exists."""
        return self._master is not None

    def _plug(self) -> None:
        """Make a new pty in raw mode and point the stable link at it."""
        master, slave = os.openpty()
        # Raw: no CR/LF translation, no echo, so the driver sees exactly our bytes. The sim
        # keeps the slave open so the line settings hold before the driver opens it.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave, self._port = master, slave, os.ttyname(slave)
        tmp = self._link + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(self._port, tmp)
        os.replace(tmp, self._link)  # atomic, as udev does it

    def frame(self, code: str, symbology: str | None = None) -> bytes:
        """The bytes this scanner sends for ``code``: prefix, AIM id, code, suffix.

        With ``aim`` on and no ``symbology`` given, EAN-13 (``]E0``) is used for 13-digit
        codes and Code 128 (``]C0``) for anything else.
        """
        aim = b""
        if self._aim:
            if symbology is None:
                symbology = "]E0" if len(code) == 13 and code.isdigit() else "]C0"
            aim = symbology.encode("ascii")
        elif symbology is not None:
            raise ScannerError("this simulated scanner is not set to send AIM identifiers")
        return self._prefix + aim + code.encode("ascii") + self._term

    def scan(self, code: str, symbology: str | None = None) -> None:
        """Send one scan of ``code``, framed as configured."""
        self.write(self.frame(code, symbology))

    def noise(self, data: int | bytes) -> None:
        """Send garbage. An int sends that many random non-ASCII bytes and then the suffix,
        so the driver sees exactly one noise frame; bytes are sent as they are."""
        if isinstance(data, int):
            data = bytes(0x80 | b for b in os.urandom(data)) + self._term
        self.write(data)

    def write(self, data: bytes) -> None:
        """Write raw bytes to the scanner's side of the line.

        Raises ScannerError if unplugged, or if the line stays full for 2 s (nobody reads
        the port): a test then fails instead of hanging.
        """
        if self._master is None:
            raise ScannerError("the simulated scanner is unplugged")
        view = memoryview(data)
        deadline = time.monotonic() + _WRITE_TIMEOUT_S
        while view:
            try:
                view = view[os.write(self._master, view) :]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ScannerError("pty buffer full: nobody is reading the scanner") from None
                select.select([], [self._master], [], left)

    def unplug(self) -> None:
        """Pull the cable: remove the stable link and close the pty, so the driver's
        reads fail and the device path disappears."""
        if self._master is None:
            return
        if os.path.lexists(self._link):
            os.unlink(self._link)
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = self._port = None

    def replug(self) -> None:
        """Plug back in: a new pty behind the same stable ``link``."""
        if self._master is None:
            self._plug()

    def close(self) -> None:
        """Unplug and remove the temporary directory."""
        self.unplug()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ScannerSim:
        """Return self; the pty already exists."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the simulator."""
        self.close()


def main(argv: Iterable[str] | None = None) -> int:
    """CLI: create a simulated scanner, print its paths, and scan each line of input."""
    parser = argparse.ArgumentParser(
        prog="python -m hw.sim.scanner",
        description="Simulated serial barcode scanner on a pty. Prints the port path, "
        "then sends each non-empty input line as a scan. Keeps the port open after the "
        "input ends until Ctrl-C.",
    )
    parser.add_argument("--suffix", choices=list(TERMINATORS), default="CR")
    parser.add_argument(
        "--prefix", default=None, help=r"prefix before each code; escapes allowed (\x02)"
    )
    parser.add_argument("--aim", action="store_true", help="send AIM ids (]E0, ]C0)")
    parser.add_argument("--file", default=None, help="read codes from this file, not stdin")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between scans")
    args = parser.parse_args(None if argv is None else list(argv))

    prefix = None
    if args.prefix:
        prefix = args.prefix.encode("latin-1").decode("unicode_escape").encode("latin-1")
    with ScannerSim(suffix=args.suffix, prefix=prefix, aim=args.aim) as sim:
        print(f"port: {sim.port}", flush=True)
        print(f"link: {sim.link}", flush=True)
        source = open(args.file, encoding="utf-8") if args.file else sys.stdin
        try:
            with source:
                for line in source:
                    code = line.strip()
                    if code:
                        sim.scan(code)
                        time.sleep(args.delay)
            print("input done; port stays open, Ctrl-C to unplug", file=sys.stderr, flush=True)
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
