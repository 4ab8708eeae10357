"""A simulated line of АЗТ 2.0 dispensers (Топаз, Нара) at the master end of a pty.

The driver opens the pty's slave path with pyserial as it would a USB-RS485 adapter; the
simulator reads requests from the master with the same sans-I/O decoder
(``hw.dispensers.azt2_codec``) and answers as each channel's state machine says:

    0 off, nozzle down   1 off, nozzle up   2 authorized   3 dispensing
    4 finished, waiting for the sale to be confirmed (+ reason: 0 normal, 1 overfill)

Flow is metered in ticks as in ``hw.sim.pump``. Fault knobs: ``silent`` (no answers at
all), ``spoil_next(kind)`` (the next answer has a bad checksum or complement, is truncated,
is garbage, is sent twice, is the previous answer again, or is a NAK/CAN), and
``meter_untracked`` (fuel flows outside a sale, as in a dispenser's manual mode).

A pty carries bytes, not the line's 7E2 character format: parity and stop bits are not
simulated (the bytes themselves are 7-bit, as 7E2 requires).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from authz.money import amount_for_volume, max_volume_for_amount
from hw.dispensers.azt2_codec import (
    ACK,
    CAN,
    NAK,
    Cmd,
    Frame,
    FrameDecoder,
    digits,
    encode_reply,
    encode_short,
)

__all__ = ["Azt2Simulator"]

SPOILS = ("checksum", "complement", "truncated", "garbage", "duplicate", "stale", "nak", "can")


@dataclass
class _Hose:
    """One channel: state, preset, the sale, totalizers (centilitres, kopecks)."""

    channel: int
    state: int = 0
    reason: int = 0
    nozzle_up: bool = False
    price: int = 0
    dose_cl: int = 0
    dose_kop: int = 0
    limit_cl: int = 0
    volume_cl: int = 0
    total_cl: int = 0
    total_kop: int = 0
    flow: asyncio.Task[None] | None = None

    @property
    def amount_kop(self) -> int:
        return amount_for_volume(self.volume_cl * 10, self.price)


class Azt2Simulator:
    """Dispensers on channels ``channels`` at the master end ``master_fd`` of a pty."""

    def __init__(self, master_fd: int, channels: list[int], *, flow_ml_per_min: int = 40_000,
                 time_scale: float = 1.0, tick_ms: int = 1000) -> None:
        """``time_scale``: simulated seconds per real second; ``tick_ms``: flow step."""
        self.fd = master_fd
        self.hoses = {ch: _Hose(ch) for ch in channels}
        self.flow_ml_per_min, self.time_scale, self.tick_ms = flow_ml_per_min, time_scale, tick_ms
        self.silent = False
        self.requests = 0
        self._spoil: list[str] = []
        self._decoder = FrameDecoder(requests=True)
        self._last_answer = encode_short(ACK)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Serve on the running event loop."""
        os.set_blocking(self.fd, False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.fd, self._readable)

    def close(self) -> None:
        """Stop serving (the hoses keep their state: a driver restart sees it again)."""
        if self._loop is not None:
            self._loop.remove_reader(self.fd)
            self._loop = None
        for h in self.hoses.values():
            if h.flow is not None:
                h.flow.cancel()
                h.flow = None

    # --- the physical world --------------------------------------------------------------------
    def lift_nozzle(self, channel: int) -> None:
        """The customer lifts the hose's nozzle; an authorized hose starts to deliver."""
        h = self.hoses[channel]
        h.nozzle_up = True
        if h.state == 0:
            h.state = 1
        elif h.state == 2:
            self._start(h)

    def hang_up(self, channel: int) -> None:
        """The nozzle goes back: a delivery ends with what has flowed."""
        h = self.hoses[channel]
        h.nozzle_up = False
        if h.state == 1:
            h.state = 0
        elif h.state == 3:
            self._finish(h)

    def meter_untracked(self, channel: int, volume_ml: int) -> None:
        """Fuel flows outside any sale: only the totalizers see it."""
        h = self.hoses[channel]
        h.total_cl += volume_ml // 10
        h.total_kop += amount_for_volume(volume_ml // 10 * 10, h.price)

    def spoil_next(self, kind: str) -> None:
        """Spoil the next answer (one of ``SPOILS``)."""
        if kind not in SPOILS:
            raise ValueError(f"spoil kind must be one of {SPOILS}, got {kind!r}")
        self._spoil.append(kind)

    # --- the line ----------------------------------------------------------------------------------
    def _readable(self) -> None:
        try:
            chunk = os.read(self.fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the driver closed the slave end: wait for it to reopen
            return
        for item in self._decoder.feed(chunk):
            if isinstance(item, Frame) and item.channel is not None:
                self.requests += 1
                if self.silent:
                    continue
                self._send(self._answer(item))

    def _send(self, answer: bytes) -> None:
        spoil = self._spoil.pop(0) if self._spoil else None
        out = answer
        if spoil == "checksum" and len(answer) > 2:
            out = answer[:-1] + bytes(((answer[-1] ^ 0x01) | 0x40,))
        elif spoil == "complement" and len(answer) > 4:
            out = answer[:3] + bytes((answer[3] ^ 0x02,)) + answer[4:]
        elif spoil == "truncated":
            out = answer[: max(1, len(answer) // 2)]
        elif spoil == "garbage":
            out = b"\x11\x42\x7f\x01zz"
        elif spoil == "duplicate":
            out = answer + answer
        elif spoil == "stale":
            out = self._last_answer
        elif spoil == "nak":
            out = encode_short(NAK)
        elif spoil == "can":
            out = encode_short(CAN)
        self._last_answer = answer
        try:
            os.write(self.fd, out)
        except OSError:
            pass

    def _answer(self, frame: Frame) -> bytes:
        assert frame.channel is not None
        h = self.hoses.get(frame.channel)
        if h is None:
            return b""  # nobody at that address: silence
        cmd, args = frame.data[0], frame.data[1:]
        if cmd == Cmd.STATUS:
            return encode_reply(bytes((0x30 + h.state,)) + (bytes((0x30 + h.reason,)) if h.state == 4 else b""))
        if cmd == Cmd.SET_PRICE:
            if h.state not in (0, 1) or len(args) != 4 or not args.isdigit() or int(args) == 0:
                return encode_short(CAN if h.state not in (0, 1) else NAK)
            h.price = int(args)
            return encode_short(ACK)
        if cmd == Cmd.SET_VOLUME_DOSE:
            if h.state not in (0, 1) or len(args) != 6 or not args.isdigit() or int(args[:5]) == 0:
                return encode_short(CAN if h.state not in (0, 1) else NAK)
            h.dose_cl, h.dose_kop = int(args[:5]), 0
            return encode_short(ACK)
        if cmd == Cmd.SET_MONEY_DOSE:
            if h.state not in (0, 1) or len(args) != 6 or not args.isdigit() or int(args) == 0:
                return encode_short(CAN if h.state not in (0, 1) else NAK)
            h.dose_kop, h.dose_cl = int(args), 0
            return encode_short(ACK)
        if cmd == Cmd.AUTHORIZE:
            if h.state not in (0, 1) or not h.price or not (h.dose_cl or h.dose_kop):
                return encode_short(CAN)
            h.limit_cl = h.dose_cl or max_volume_for_amount(h.dose_kop, h.price) // 10
            if h.limit_cl <= 0:
                return encode_short(CAN)
            h.volume_cl, h.state = 0, 2
            if h.nozzle_up:
                self._start(h)
            return encode_short(ACK)
        if cmd == Cmd.RESET:
            if h.state == 2:
                h.state = 1 if h.nozzle_up else 0
                h.dose_cl = h.dose_kop = 0
                return encode_short(ACK)
            if h.state == 3:
                self._finish(h)
                return encode_short(ACK)
            return encode_short(CAN)
        if cmd == Cmd.CURRENT_VOLUME:
            return encode_reply(digits(h.volume_cl, 6))
        if cmd == Cmd.SALE_DATA:
            return encode_reply(digits(h.volume_cl, 5) + digits(h.amount_kop, 7) + digits(h.price, 4))
        if cmd == Cmd.TOTALS:
            running_cl = h.volume_cl if h.state == 3 else 0
            running_kop = h.amount_kop if h.state == 3 else 0
            return encode_reply(digits(h.total_cl + running_cl, 10) + digits(h.total_kop + running_kop, 10))
        if cmd == Cmd.CONFIRM:
            if h.state != 4:
                return encode_short(CAN)
            h.state, h.reason = (1 if h.nozzle_up else 0), 0
            h.dose_cl = h.dose_kop = h.volume_cl = 0
            return encode_short(ACK)
        if cmd == Cmd.VERSION:
            return encode_reply(b"00000020")
        return encode_short(NAK)

    # --- flow --------------------------------------------------------------------------------------
    def _start(self, h: _Hose) -> None:
        h.state = 3
        if self._loop is not None:
            h.flow = self._loop.create_task(self._run(h))

    async def _run(self, h: _Hose) -> None:
        while h.state == 3:
            await asyncio.sleep(self.tick_ms / 1000 / self.time_scale)
            step_cl = self.flow_ml_per_min * self.tick_ms // 60_000 // 10
            h.volume_cl = min(h.volume_cl + step_cl, h.limit_cl)
            if h.volume_cl >= h.limit_cl:
                h.flow = None
                self._finish(h)
                return

    def _finish(self, h: _Hose) -> None:
        if h.flow is not None and h.flow is not asyncio.current_task():
            h.flow.cancel()
        h.flow = None
        h.total_cl += h.volume_cl
        h.total_kop += h.amount_kop
        h.state, h.reason = 4, 0
