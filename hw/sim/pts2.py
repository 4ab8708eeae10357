"""A simulated Technotrade PTS-2 forecourt controller: jsonPTS over HTTP on loopback.

It drives several simulated pumps with several nozzles, meters fuel in ticks like
``hw.sim.pump`` (volumes from the tick count, never the wall clock), keeps its totalizers
and its transaction log in a JSON file so they survive a restart, answers bad packets with
error packets, and has knobs for what a real controller does on a bad day:

- ``drop_link()`` / ``restore_link()``: the edge loses the controller (connections are
  closed unanswered). What a delivery in progress does then is ``on_link_loss``:
  ``"continue"`` (it runs to its preset, as a controller in standalone mode does) or
  ``"stop"`` (it is stopped once no request has arrived for ``link_timeout_s``);
- ``set_pump_offline(pump, True)``: the controller answers, but reports the dispenser
  behind it offline (PumpOfflineStatus);
- ``fail_next(type, code, message)``: the next packet of that type gets an error packet;
- ``garble_next(kind)``: the next answer is garbage, truncated, duplicated or out of order.

A sale authorized with ``AutoCloseTransaction: false`` stays in EndOfTransaction until
PumpCloseTransaction; the controller refuses to authorize the pump again until then.
Error codes and messages are this simulator's own (docs/dispensers.md): the real
controller's numbering is not public.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import ssl
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from authz.money import amount_for_volume, max_volume_for_amount
from hw.dispensers.pts2_protocol import (
    Packet,
    decode_request,
    dumps,
    from_kop,
    from_ml,
    to_int,
    to_kop,
    to_ml,
)
from hw.pump import PumpProtocolError

__all__ = ["ERRORS", "Pts2Simulator"]

ERRORS = {
    1: "Unknown request type",
    2: "Wrong parameters",
    3: "Pump is not configured",
    4: "Pump is offline",
    5: "Pump is busy",
    6: "Transaction not found",
    7: "Transaction is not finished",
    8: "Previous transaction is not closed",
    9: "Pump is not filling",
}
"""The simulator's error codes (by meaning; the real controller's numbers are not public)."""

_GARBLE = ("garbage", "truncated", "duplicate", "wrong_id", "missing", "http500")


@dataclass
class _Txn:
    """One transaction in the controller's log (persisted)."""

    number: int
    pump: int
    nozzle: int
    kind: str  # "Volume" | "Amount"
    dose: int  # ml or kop
    price_kop: int
    limit_ml: int
    auto_close: bool
    state: str = "Authorized"  # Authorized | Filling | EndOfTransaction | Finished
    volume_ml: int = 0
    started: float = 0.0

    @property
    def amount_kop(self) -> int:
        return amount_for_volume(self.volume_ml, self.price_kop)


@dataclass
class _PumpSim:
    number: int
    nozzles: dict[int, str]
    nozzle_up: int = 0
    offline: bool = False
    suspended: bool = False
    prices: dict[int, int] = field(default_factory=dict)
    current: int = 0  # the open transaction's number (Authorized / Filling / EndOfTransaction)
    flow: asyncio.Task[None] | None = None


class Pts2Simulator:
    """A PTS-2 controller on ``127.0.0.1`` (see the module docstring for the knobs).

    ``pumps`` maps pump numbers to ``{nozzle: product}``; ``state_path`` is the JSON file
    its totals and transactions persist in (a new simulator on the same file continues).
    """

    def __init__(
        self,
        pumps: dict[int, dict[int, str]],
        state_path: str | os.PathLike[str],
        *,
        username: str | None = None,
        password: str | None = None,
        auth: str = "basic",
        flow_ml_per_min: int = 40_000,
        time_scale: float = 1.0,
        tick_ms: int = 1000,
        on_link_loss: str = "continue",
        link_timeout_s: float = 1.0,
    ) -> None:
        """See the class docstring. ``time_scale``: simulated seconds per real second."""
        if on_link_loss not in ("continue", "stop"):
            raise ValueError(f"on_link_loss must be 'continue' or 'stop', got {on_link_loss!r}")
        if auth not in ("basic", "digest"):
            raise ValueError(f"auth must be 'basic' or 'digest', got {auth!r}")
        self.pumps = {n: _PumpSim(n, dict(nz)) for n, nz in pumps.items()}
        self.state_path = Path(state_path)
        self.username, self.password, self.auth = username, password, auth
        self.flow_ml_per_min = flow_ml_per_min
        self.time_scale = time_scale
        self.tick_ms = tick_ms
        self.on_link_loss = on_link_loss
        self.link_timeout_s = link_timeout_s
        self.link_up = True
        self.requests = 0
        self.last_request = time.monotonic()
        self._failures: dict[str, tuple[int, str]] = {}
        self._garble: list[str] = []
        self._nonce = secrets.token_hex(8)
        self._txns: dict[int, _Txn] = {}
        self._next_txn = 1
        self._totals: dict[str, list[int]] = {}  # "pump/nozzle" -> [ml, kop]
        self._runner: web.AppRunner | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.url = ""
        self._load()

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self, port: int = 0, ssl_context: ssl.SSLContext | None = None) -> str:
        """Listen on 127.0.0.1 (a free port unless given; https with ``ssl_context``);
        return the base URL."""
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/jsonPTS", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=ssl_context)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{sockets[0].getsockname()[1]}"
        self._watchdog = asyncio.get_running_loop().create_task(self._watch_link())
        for p in self.pumps.values():  # a delivery cut by the restart ends where it was
            txn = self._txns.get(p.current)
            if txn is not None and txn.state == "Filling":
                self._end(p, txn)
        return self.url

    async def close(self) -> None:
        """Stop serving (the state file keeps everything for the next simulator)."""
        for p in self.pumps.values():
            if p.flow is not None:
                p.flow.cancel()
                p.flow = None
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._save()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- knobs: the physical world and the link --------------------------------------------------
    def lift_nozzle(self, pump: int, nozzle: int) -> None:
        """The customer lifts ``nozzle``; an authorized sale on it starts to flow."""
        p = self.pumps[pump]
        if nozzle not in p.nozzles or p.nozzle_up:
            raise ValueError(f"pump {pump}: cannot lift nozzle {nozzle} (up: {p.nozzle_up})")
        p.nozzle_up = nozzle
        txn = self._txns.get(p.current)
        if txn is not None and txn.state == "Authorized" and txn.nozzle == nozzle:
            txn.state = "Filling"
            self._save()
            self._start_flow(p)

    def hang_up(self, pump: int) -> None:
        """The customer hangs the nozzle up; a delivery in progress ends there."""
        p = self.pumps[pump]
        if not p.nozzle_up:
            raise ValueError(f"pump {pump}: no nozzle is up")
        p.nozzle_up = 0
        txn = self._txns.get(p.current)
        if txn is not None and txn.state == "Filling":
            self._end(p, txn)

    def drop_link(self) -> None:
        """The edge's link to the controller goes down (requests are dropped unanswered)."""
        self.link_up = False
        self.last_request = time.monotonic()

    def restore_link(self) -> None:
        """The link comes back."""
        self.link_up = True

    def set_pump_offline(self, pump: int, offline: bool) -> None:
        """The dispenser behind the controller stops (or resumes) answering it; a delivery
        in progress halts where it is."""
        p = self.pumps[pump]
        p.offline = offline
        txn = self._txns.get(p.current)
        if offline and txn is not None and txn.state == "Filling":
            self._end(p, txn)

    def fail_next(self, packet_type: str, code: int, message: str | None = None) -> None:
        """The next ``packet_type`` packet is answered with error ``code``."""
        self._failures[packet_type] = (code, message or ERRORS.get(code, "Error"))

    def garble_next(self, kind: str) -> None:
        """The next answer is spoiled: one of ``garbage``, ``truncated``, ``duplicate``,
        ``wrong_id``, ``missing``, ``http500``."""
        if kind not in _GARBLE:
            raise ValueError(f"garble kind must be one of {_GARBLE}, got {kind!r}")
        self._garble.append(kind)

    def totals(self, pump: int, nozzle: int) -> tuple[int, int]:
        """The totalizer of a nozzle (ml, kop), the running delivery included."""
        ml, kop = self._totals.get(f"{pump}/{nozzle}", [0, 0])
        txn = self._txns.get(self.pumps[pump].current)
        if txn is not None and txn.nozzle == nozzle and txn.state == "Filling":
            ml, kop = ml + txn.volume_ml, kop + txn.amount_kop
        return ml, kop

    def meter_untracked(self, pump: int, nozzle: int, volume_ml: int) -> None:
        """Fuel flows outside any transaction (manual mode): only the totalizer sees it."""
        p = self.pumps[pump]
        t = self._totals.setdefault(f"{pump}/{nozzle}", [0, 0])
        t[0] += volume_ml
        t[1] += amount_for_volume(volume_ml, p.prices.get(nozzle, 0))
        self._save()

    def transaction(self, number: int) -> dict[str, Any]:
        """One transaction of the log, as persisted."""
        return asdict(self._txns[number])

    # --- HTTP ------------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self.link_up:
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=503)
        self.requests += 1
        self.last_request = time.monotonic()
        denied = self._check_auth(request)
        if denied is not None:
            return denied
        body = await request.read()
        try:
            packets = decode_request(body)
        except PumpProtocolError as e:
            return web.Response(status=400, text=str(e))
        answers = [self._answer(p) for p in packets]
        garble = self._garble.pop(0) if self._garble else None
        if garble == "http500":
            return web.Response(status=500, text="internal error")
        if garble == "duplicate":
            answers = answers + answers[:1]
        elif garble == "wrong_id":
            answers[0] = {**answers[0], "Id": answers[0]["Id"] + 1000}
        elif garble == "missing":
            answers = answers[1:] or [{"Id": 0, "Type": "X"}]
        text = dumps({"Protocol": "jsonPTS", "Packets": answers})
        if garble == "garbage":
            text = "\x00<html>oops" + text[:7]
        elif garble == "truncated":
            text = text[: len(text) // 2]
        return web.Response(text=text, content_type="application/json")

    def _check_auth(self, request: web.Request) -> web.Response | None:
        if self.username is None:
            return None
        header = request.headers.get("Authorization", "")
        if self.auth == "basic":
            expected = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            if secrets.compare_digest(header, expected):
                return None
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="PTS-2"'})
        if header.startswith("Digest "):
            f = dict(re.findall(r'(\w+)="?([^",]*)"?', header[7:]))
            ha1 = _md5(f"{self.username}:PTS-2:{self.password}")
            ha2 = _md5(f"{request.method}:{f.get('uri', '')}")
            want = _md5(f"{ha1}:{self._nonce}:{f.get('nc', '')}:{f.get('cnonce', '')}:auth:{ha2}")
            if f.get("nonce") == self._nonce and f.get("username") == self.username and \
                    secrets.compare_digest(f.get("response", ""), want):
                return None
        challenge = f'Digest realm="PTS-2", qop="auth", nonce="{self._nonce}", opaque="pts"'
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    # --- the controller ------------------------------------------------------------------------------
    def _error(self, packet: Packet, code: int, message: str | None = None) -> dict[str, Any]:
        return {"Id": packet.id, "Type": packet.type, "Error": True, "Code": code,
                "Message": message or ERRORS[code]}

    def _answer(self, packet: Packet) -> dict[str, Any]:
        if packet.type in self._failures:
            code, message = self._failures.pop(packet.type)
            return self._error(packet, code, message)
        handler = getattr(self, f"_do_{packet.type}", None)
        if handler is None:
            return self._error(packet, 1)
        try:
            pump_no = to_int(packet.data.get("Pump"), "Pump")
        except PumpProtocolError:
            return self._error(packet, 2, "Pump number is missing or wrong")
        p = self.pumps.get(pump_no)
        if p is None:
            return self._error(packet, 3)
        if p.offline and packet.type != "PumpGetStatus":
            return self._error(packet, 4)
        try:
            result = handler(p, packet.data)
        except (PumpProtocolError, KeyError, ValueError) as e:
            return self._error(packet, 2, f"Wrong parameters: {str(e)[:80]}")
        if isinstance(result, int):
            return self._error(packet, result)
        ptype, data = result if result is not None else (packet.type, None)
        out: dict[str, Any] = {"Id": packet.id, "Type": ptype}
        if data is not None:
            out["Data"] = data
        else:
            out["Message"] = "OK"
        return out

    def _do_PumpGetStatus(self, p: _PumpSim, d: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        txn = self._txns.get(p.current)
        if p.offline:
            return "PumpOfflineStatus", {"Pump": p.number}
        if txn is None:
            last = self._last_txn(p)
            data: dict[str, Any] = {"Pump": p.number, "NozzleUp": p.nozzle_up, "Nozzle": p.nozzle_up}
            if last is not None:
                data.update(LastNozzle=last.nozzle, LastTransaction=last.number,
                            LastVolume=from_ml(last.volume_ml), LastAmount=from_kop(last.amount_kop),
                            LastPrice=from_kop(last.price_kop))
            return "PumpIdleStatus", data
        if txn.state == "Authorized":
            return "PumpIdleStatus", {"Pump": p.number, "NozzleUp": p.nozzle_up, "Nozzle": p.nozzle_up,
                                      "Transaction": txn.number}
        common = {"Pump": p.number, "Nozzle": txn.nozzle, "Transaction": txn.number,
                  "Volume": from_ml(txn.volume_ml), "Amount": from_kop(txn.amount_kop),
                  "Price": from_kop(txn.price_kop)}
        if txn.state == "Filling":
            return "PumpFillingStatus", common
        ml, kop = self.totals(p.number, txn.nozzle)
        return "PumpEndOfTransactionStatus", {**common, "NozzleUp": p.nozzle_up,
                                              "TotalVolume": from_ml(ml), "TotalAmount": from_kop(kop)}

    def _do_PumpAuthorize(self, p: _PumpSim, d: dict[str, Any]) -> tuple[str, dict[str, Any]] | int:
        current = self._txns.get(p.current)
        if current is not None:
            return 8 if current.state == "EndOfTransaction" else 5
        nozzle = to_int(d["Nozzle"], "Nozzle")
        if nozzle not in p.nozzles:
            return 2
        kind = d.get("Type")
        if kind not in ("Volume", "Amount"):
            return 2
        price = to_kop(d["Price"], "Price") if "Price" in d else p.prices.get(nozzle, 0)
        if price <= 0:
            return 2
        dose = to_ml(d["Dose"], "Dose") if kind == "Volume" else to_kop(d["Dose"], "Dose")
        limit = dose if kind == "Volume" else max_volume_for_amount(dose, price)
        if limit <= 0:
            return 2
        auto_close = d.get("AutoCloseTransaction", True) in (True, "true")
        txn = _Txn(self._next_txn, p.number, nozzle, kind, dose, price, limit, auto_close,
                   started=time.time())
        self._next_txn += 1
        self._txns[txn.number] = txn
        p.current = txn.number
        p.suspended = False
        if p.nozzle_up == nozzle:
            txn.state = "Filling"
            self._start_flow(p)
        self._save()
        return "PumpAuthorizeConfirmation", {"Pump": p.number, "Transaction": txn.number}

    def _stop(self, p: _PumpSim) -> None:
        txn = self._txns.get(p.current)
        if txn is None or txn.state == "EndOfTransaction":
            return
        if txn.state == "Authorized":  # nothing flowed: the authorization is dropped
            del self._txns[txn.number]
            p.current = 0
            self._save()
            return
        self._end(p, txn)

    def _do_PumpStop(self, p: _PumpSim, d: dict[str, Any]) -> None:
        self._stop(p)

    def _do_PumpEmergencyStop(self, p: _PumpSim, d: dict[str, Any]) -> None:
        self._stop(p)

    def _do_PumpSuspend(self, p: _PumpSim, d: dict[str, Any]) -> int | None:
        txn = self._txns.get(p.current)
        if txn is None or txn.state != "Filling":
            return 9
        p.suspended = True
        return None

    def _do_PumpResume(self, p: _PumpSim, d: dict[str, Any]) -> int | None:
        txn = self._txns.get(p.current)
        if txn is None or txn.state != "Filling" or not p.suspended:
            return 9
        p.suspended = False
        return None

    def _do_PumpSetPrices(self, p: _PumpSim, d: dict[str, Any]) -> int | None:
        prices = d["Prices"]
        if not isinstance(prices, list) or len(prices) != len(p.nozzles):
            return 2
        p.prices = {n: to_kop(v, "Price") for n, v in zip(sorted(p.nozzles), prices, strict=True)}
        return None

    def _do_PumpGetPrices(self, p: _PumpSim, d: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        top = max(p.nozzles)
        return "PumpPrices", {"Pump": p.number,
                              "Prices": [from_kop(p.prices.get(n, 0)) for n in range(1, top + 1)]}

    def _do_PumpGetTotals(self, p: _PumpSim, d: dict[str, Any]) -> tuple[str, dict[str, Any]] | int:
        nozzle = to_int(d["Nozzle"], "Nozzle")
        if nozzle not in p.nozzles:
            return 2
        ml, kop = self.totals(p.number, nozzle)
        return "PumpTotals", {"Pump": p.number, "Nozzle": nozzle, "Volume": from_ml(ml),
                              "Amount": from_kop(kop), "Transaction": self._next_txn - 1}

    def _do_PumpGetTransactionInformation(self, p: _PumpSim, d: dict[str, Any]) -> tuple[str, dict[str, Any]] | int:
        txn = self._txns.get(to_int(d["Transaction"], "Transaction"))
        if txn is None or txn.pump != p.number:
            return 6
        return "PumpTransactionInformation", {
            "Pump": p.number, "Transaction": txn.number, "State": txn.state, "Nozzle": txn.nozzle,
            "Volume": from_ml(txn.volume_ml), "Amount": from_kop(txn.amount_kop),
            "Price": from_kop(txn.price_kop), "Type": txn.kind,
            "Dose": from_ml(txn.dose) if txn.kind == "Volume" else from_kop(txn.dose)}

    def _do_PumpCloseTransaction(self, p: _PumpSim, d: dict[str, Any]) -> int | None:
        txn = self._txns.get(to_int(d["Transaction"], "Transaction"))
        if txn is None or txn.pump != p.number:
            return 6
        if txn.state == "Finished":
            return None
        if txn.state != "EndOfTransaction":
            return 7
        txn.state = "Finished"
        p.current = 0
        self._save()
        return None

    # --- flow -------------------------------------------------------------------------------------------
    def _start_flow(self, p: _PumpSim) -> None:
        if p.flow is None or p.flow.done():
            p.flow = asyncio.get_running_loop().create_task(self._run_flow(p))

    async def _run_flow(self, p: _PumpSim) -> None:
        while True:
            await asyncio.sleep(self.tick_ms / 1000 / self.time_scale)
            txn = self._txns.get(p.current)
            if txn is None or txn.state != "Filling":
                return
            if p.suspended:
                continue
            step = self.flow_ml_per_min * self.tick_ms // 60_000
            txn.volume_ml = min(txn.volume_ml + step, txn.limit_ml)
            if txn.volume_ml >= txn.limit_ml:
                p.flow = None
                self._end(p, txn)
                return
            self._save()

    def _end(self, p: _PumpSim, txn: _Txn) -> None:
        """The delivery ends: totals advance, EndOfTransaction (or Finished if auto-closed)."""
        if p.flow is not None and p.flow is not asyncio.current_task():
            p.flow.cancel()
        p.flow = None
        t = self._totals.setdefault(f"{p.number}/{txn.nozzle}", [0, 0])
        t[0] += txn.volume_ml
        t[1] += txn.amount_kop
        txn.state = "EndOfTransaction"
        p.suspended = False
        if txn.auto_close:
            txn.state = "Finished"
            p.current = 0
        self._save()

    async def _watch_link(self) -> None:
        """With ``on_link_loss="stop"``: stop deliveries once the edge has been silent for
        ``link_timeout_s``."""
        while True:
            await asyncio.sleep(min(self.link_timeout_s / 4, 0.05))
            if self.on_link_loss != "stop" or time.monotonic() - self.last_request < self.link_timeout_s:
                continue
            for p in self.pumps.values():
                txn = self._txns.get(p.current)
                if txn is not None and txn.state == "Filling":
                    self._end(p, txn)

    def _last_txn(self, p: _PumpSim) -> _Txn | None:
        done = [t for t in self._txns.values() if t.pump == p.number and t.state == "Finished"]
        return max(done, key=lambda t: t.number) if done else None

    # --- persistence ------------------------------------------------------------------------------------
    def _save(self) -> None:
        state = {
            "next_transaction": self._next_txn,
            "totals": self._totals,
            "transactions": [asdict(t) for t in self._txns.values()],
            "pumps": {str(p.number): {"current": p.current, "nozzle_up": p.nozzle_up,
                                      "prices": {str(k): v for k, v in p.prices.items()}}
                      for p in self.pumps.values()},
        }
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    def _load(self) -> None:
        if not self.state_path.exists():
            return
        state = json.loads(self.state_path.read_text())
        self._next_txn = state["next_transaction"]
        self._totals = {k: list(v) for k, v in state["totals"].items()}
        self._txns = {t["number"]: _Txn(**t) for t in state["transactions"]}
        for key, ps in state["pumps"].items():
            p = self.pumps.get(int(key))
            if p is None:
                continue
            p.current, p.nozzle_up = ps["current"], ps["nozzle_up"]
            p.prices = {int(k): v for k, v in ps["prices"].items()}


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
