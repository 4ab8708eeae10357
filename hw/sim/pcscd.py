"""pcscd with the vpcd virtual readers: find it, or start it, for tests, benchmarks and the
simulated site.

``ensure_pcscd()`` checks that pcscd answers and lists the vpcd readers; when it is not
running it starts ``pcscd --foreground`` (no systemd in a container: a bare ``pcscd``
daemonizes, ``--foreground`` keeps it a child we can stop) and waits until the readers show.
When it cannot, it raises :class:`PcscdUnavailable` saying why and what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

READER = "Virtual PCD 00 00"  #: the vpcd slot a virtual card on port 35963 sits in
VPCD_CONF = Path("/etc/reader.conf.d/vpcd")
VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
POLL_S = 0.45  #: pcscd polls readers without hotplug support (vpcd) every 0.4 s
INSTALL_HINT = "apt-get install -y pcscd vsmartcard-vpcd pcsc-tools; pip install pyscard"


class PcscdUnavailable(RuntimeError):
    """pcscd with the vpcd readers is not running and could not be started."""


def _readers() -> list[str] | None:
    """The readers pcscd lists, or None when pcscd does not answer."""
    from smartcard import scard

    hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hr != scard.SCARD_S_SUCCESS:
        return None
    try:
        hr, readers = scard.SCardListReaders(ctx, [])
        if hr == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        return list(readers) if hr == scard.SCARD_S_SUCCESS else None
    finally:
        scard.SCardReleaseContext(ctx)


@dataclass
class Pcscd:
    """A running pcscd: its readers, and the process when this helper started it."""

    readers: list[str]
    process: subprocess.Popen | None
    log_path: Path | None

    def stop(self) -> None:
        """Stop pcscd if this helper started it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def ensure_pcscd(timeout_s: float = 10.0) -> Pcscd:
    """Return a running pcscd with the vpcd readers, starting one if needed.

    Raises PcscdUnavailable with the reason (not installed, vpcd not configured, pcscd
    exited, readers never appeared).
    """
    try:
        import smartcard.scard  # noqa: F401
    except ImportError as exc:
        raise PcscdUnavailable(f"pyscard is not installed ({exc}); {INSTALL_HINT}") from None
    readers = _readers()
    if readers is not None:
        if not any(r.startswith("Virtual PCD") for r in readers):
            raise PcscdUnavailable(
                f"pcscd is running but has no vpcd reader (readers: {readers}); was it started "
                f"before vsmartcard-vpcd was installed? restart it")
        return Pcscd(readers, None, None)
    binary = shutil.which("pcscd") or ("/usr/sbin/pcscd" if os.path.exists("/usr/sbin/pcscd") else None)
    if binary is None:
        raise PcscdUnavailable(f"pcscd is not installed; {INSTALL_HINT}")
    if not VPCD_CONF.exists() or not VPCD_DRIVER.exists():
        raise PcscdUnavailable(f"vpcd is not installed ({VPCD_CONF}, {VPCD_DRIVER}); {INSTALL_HINT}")
    log_path = Path(tempfile.gettempdir()) / f"edgepos-pcscd-{os.getpid()}.log"
    log = open(log_path, "wb")
    try:
        # -f: stay in the foreground as our child, logging to the file (not syslog).
        proc = subprocess.Popen([binary, "--foreground", "--info"], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        raise PcscdUnavailable(f"cannot start {binary}: {exc}") from None
    finally:
        log.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PcscdUnavailable(f"pcscd exited with {proc.returncode}: "
                                   f"{log_path.read_text(errors='replace')[-2000:]}")
        readers = _readers()
        if readers and any(r.startswith("Virtual PCD") for r in readers):
            return Pcscd(readers, proc, log_path)
        time.sleep(0.05)
    Pcscd([], proc, log_path).stop()
    raise PcscdUnavailable(f"pcscd started but no vpcd reader within {timeout_s} s: "
                           f"{log_path.read_text(errors='replace')[-2000:]}")


def wait_reader(name: str, present: bool, timeout_s: float = 3.0) -> None:
    """Block until pcscd reports a card in (or no card in) reader ``name``; raise
    TimeoutError. pcscd polls vpcd every 0.4 s, so allow for that."""
    from smartcard import scard

    hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    assert hr == scard.SCARD_S_SUCCESS, "pcscd went away"
    try:
        deadline = time.monotonic() + timeout_s
        state = scard.SCARD_STATE_UNAWARE
        while True:
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            hr, states = scard.SCardGetStatusChange(ctx, left_ms if state else 0, [(name, state)])
            if hr == scard.SCARD_S_SUCCESS:
                state = states[0][1] & ~scard.SCARD_STATE_CHANGED
                # "Out" means EMPTY, not merely "not PRESENT": after a failed reset pcscd
                # shows neither until its next poll, and a card connected to vpcd before
                # that poll would never be reported as a new insertion.
                if present and state & scard.SCARD_STATE_PRESENT:
                    return
                if not present and state & scard.SCARD_STATE_EMPTY:
                    return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"reader {name}: card {'in' if present else 'out'} not seen in {timeout_s} s")
    finally:
        scard.SCardReleaseContext(ctx)


def settle_empty_reader(name: str = READER) -> None:
    """Wait until pcscd shows ``name`` empty, then one more poll period: pcscd must itself
    poll vpcd once with no card connected, or a card inserted right away could be taken
    for the one before (vpcd accepts the new connection within the same presence check)."""
    wait_reader(name, present=False, timeout_s=5.0)
    time.sleep(POLL_S)
