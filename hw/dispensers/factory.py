"""From a pump's driver settings to a ``Pump``: the one place that knows which class drives
which dispenser, and that pumps on one controller or one RS-485 line share its link.

``Pts2Settings`` and ``Azt2Settings`` are the typed values the site configuration
(terminal/config.py) produces; ``DispenserLinks.pump`` builds the driver, reusing one
``Pts2Controller`` per controller and one ``Azt2Bus`` per serial port.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from hw.dispensers.azt2 import Azt2Bus, Azt2Pump
from hw.dispensers.pts2 import Pts2Controller, Pts2Pump
from hw.pump import Pump, PumpValueError

__all__ = ["Azt2Settings", "DispenserLinks", "Pts2Settings"]


@dataclass(frozen=True, slots=True)
class Pts2Settings:
    """A pump behind a PTS-2 controller: its URL, credentials (the password never shows
    in a repr), auth scheme, the pump's number in the controller and its nozzles."""

    url: str
    nozzles: tuple[tuple[int, str], ...]
    controller_pump: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    auth: str = "basic"
    poll_interval_ms: int = 200
    timeout_ms: int = 2_000
    tls_ca_file: str | None = None  #: the CA (or the controller's own certificate) to trust over https


@dataclass(frozen=True, slots=True)
class Azt2Settings:
    """A pump whose hoses are АЗТ 2.0 channels on an RS-485 port."""

    port: str
    channels: tuple[tuple[int, str], ...]
    baudrate: int = 4800
    line_format: str = "7E2"
    poll_interval_ms: int = 200
    answer_timeout_ms: int = 400
    retries: int = 3


class DispenserLinks:
    """The controllers and buses of one site, shared by the pumps built from them."""

    def __init__(self) -> None:
        """No link is opened here: each pump opens (and shares) its link in ``async with``."""
        self._controllers: dict[tuple[str, str | None, str], Pts2Controller] = {}
        self._buses: dict[str, Azt2Bus] = {}

    def pump(self, pump_id: int, settings: Pts2Settings | Azt2Settings) -> Pump:
        """The driver for ``pump_id``."""
        if isinstance(settings, Pts2Settings):
            key = (settings.url, settings.username, settings.auth)
            ctl = self._controllers.get(key)
            if ctl is None:
                context = None
                if settings.tls_ca_file is not None:
                    context = ssl.create_default_context(cafile=settings.tls_ca_file)
                ctl = self._controllers[key] = Pts2Controller(
                    settings.url, username=settings.username, password=settings.password,
                    auth=settings.auth, timeout_s=settings.timeout_ms / 1000, ssl_context=context)
            return Pts2Pump(ctl, pump_id, dict(settings.nozzles), controller_pump=settings.controller_pump,
                            poll_interval_s=settings.poll_interval_ms / 1000)
        if isinstance(settings, Azt2Settings):
            bus = self._buses.get(settings.port)
            if bus is None:
                bus = self._buses[settings.port] = Azt2Bus(
                    settings.port, baudrate=settings.baudrate, line_format=settings.line_format,
                    answer_timeout_s=settings.answer_timeout_ms / 1000, retries=settings.retries)
            elif (bus.baudrate, bus.line_format) != (settings.baudrate, settings.line_format):
                raise PumpValueError(f"pump {pump_id}: port {settings.port} is already set up at another speed or format")
            return Azt2Pump(bus, pump_id, dict(settings.channels), poll_interval_s=settings.poll_interval_ms / 1000)
        raise PumpValueError(f"pump {pump_id}: no driver for {settings!r}")
