"""The pump console's routes of the local API (mounted by the daemon through
``Daemon.extra_routes``; the plumbing, idempotency and error format are terminal/api.py's).

``GET /v1/pumps``, ``GET /v1/pumps/{pump}``; ``POST /v1/pumps/{pump}/pin``, ``/authorize``,
``/void``, and the operator's ``/suspend``, ``/resume``, ``/stop`` (emergency stop), ``/reset``,
each with an ``Idempotency-Key``; a pump console's token
reaches only its pumps (terminal/apiauth.py). When the daemon runs a simulation
(``api.simulation``, set by ``edgepos simulate``) the simulation's hands are here too: ``POST /v1/sim/pumps/{pump}/nozzle``,
``/link`` and ``/knobs`` lift and hang up the nozzle, drop and restore the dispenser's link,
and set its speed and fault knobs (they stand in for the physical world, so they are not
journaled, and take no ``Idempotency-Key``; a real site has none of them).
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from hw.pump import PumpError
from hw.sim.pump import SimulatedPump

from .fuel_core import PumpAction
from .till import LaneError

__all__ = ["routes"]

PUMP_ID = re.compile(r"[1-9][0-9]{0,2}", re.ASCII)  #: one spelling per pump: no Unicode digits, no leading 0
PIN = re.compile(r"[0-9]{4,12}", re.ASCII)


def routes(daemon: Any) -> list[tuple[str, str, Any]]:
    """The pump routes of ``daemon`` as ``(method, path, handler)`` for ``add_route``."""
    def lane(request: web.Request):
        raw = request.match_info["pump"]
        lane = daemon.pumps.get(int(raw)) if PUMP_ID.fullmatch(raw) else None
        if lane is None:
            raise LaneError(f"no pump {raw[:8]!r} on this site (pumps are 1-999 in ASCII digits)", 404)
        return lane

    def fields(body: Any, allowed: set[str], required: set[str]) -> dict:
        return daemon.api._fields(body, allowed, required)

    async def list_pumps(request: web.Request) -> web.Response:
        """Every pump and its state."""
        who = daemon.api.principal(request)
        return web.json_response({"pumps": [p.view() for p in daemon.pumps.values() if who.may_see_lane(p.lane)]})

    async def get_pump(request: web.Request) -> web.Response:
        """One pump's state: lane, card (masked), transaction, dispenser, last delivery."""
        return web.json_response(lane(request).view())

    async def pin(request: web.Request) -> web.Response:
        """The terminal's PIN pad: the card checks the PIN."""
        p = lane(request)

        async def run(body, idem):
            b = fields(body, {"pin"}, {"pin"})
            if not isinstance(b["pin"], str) or not PIN.fullmatch(b["pin"]):
                raise LaneError("pin must be text: 4 to 12 ASCII digits", 422)  # no try counted on the card
            return await p.pin(b["pin"], idem)
        return await daemon.api._idempotent(request, f"pin:{p.lane}", run)

    async def authorize(request: web.Request) -> web.Response:
        """Authorize a product (optional preset): decide, journal, reserve, preset."""
        p = lane(request)

        async def run(body, idem):
            b = fields(body, {"product", "preset_volume_ml", "preset_amount_kop"}, {"product"})
            return await p.authorize(b["product"], b.get("preset_volume_ml"), b.get("preset_amount_kop"), idem)
        return await daemon.api._idempotent(request, f"authorize:{p.lane}", run)

    async def void(request: web.Request) -> web.Response:
        """Release the authorization before fuel flows."""
        p = lane(request)

        async def run(body, idem):
            return await p.void(idem)
        return await daemon.api._idempotent(request, f"void:{p.lane}", run, body={})

    def operator(action: PumpAction, endpoint: str) -> Any:
        """The route of an operator's action on the pump (journaled by the lane)."""
        async def handler(request: web.Request) -> web.Response:
            p = lane(request)

            async def run(body, idem):
                return await p.operate(action, idem)
            return await daemon.api._idempotent(request, f"{endpoint}:{p.lane}", run, body={})
        handler.__doc__ = f"The operator's {action.value.replace('_', ' ')} of the pump."
        return handler

    out: list[tuple[str, str, Any]] = [
        ("GET", "/v1/pumps", list_pumps),
        ("GET", "/v1/pumps/{pump}", get_pump),
        ("POST", "/v1/pumps/{pump}/pin", pin),
        ("POST", "/v1/pumps/{pump}/authorize", authorize),
        ("POST", "/v1/pumps/{pump}/void", void),
        ("POST", "/v1/pumps/{pump}/suspend", operator(PumpAction.SUSPEND, "suspend")),
        ("POST", "/v1/pumps/{pump}/resume", operator(PumpAction.RESUME, "resume")),
        ("POST", "/v1/pumps/{pump}/stop", operator(PumpAction.EMERGENCY_STOP, "stop")),
        ("POST", "/v1/pumps/{pump}/reset", operator(PumpAction.RESET, "reset")),
    ]
    if daemon.config.api.simulation and any(isinstance(p.pump, SimulatedPump) for p in daemon.pumps.values()):
        out += _sim_routes(daemon, lane, fields)
    return out


def _sim_routes(daemon: Any, lane, fields) -> list[tuple[str, str, Any]]:
    """The simulation's hands on its dispensers (only in a simulation, only for simulated ones)."""
    async def body_of(request: web.Request) -> Any:
        return await daemon.api._json(request)

    def sim(request: web.Request) -> SimulatedPump:
        p = lane(request)
        if not isinstance(p.pump, SimulatedPump):
            raise LaneError(f"pump {p.pump_id} is a real dispenser", 404)
        return p.pump

    async def nozzle(request: web.Request) -> web.Response:
        """Lift the nozzle of a product, or hang it up."""
        pump = sim(request)
        b = fields(await body_of(request), {"action", "product"}, {"action"})
        try:
            if b["action"] == "lift":
                if not isinstance(b.get("product"), str):
                    raise LaneError("lift needs the product whose nozzle is lifted", 422)
                pump.lift_nozzle(b["product"])
            elif b["action"] == "hang_up":
                pump.hang_up()
            else:
                raise LaneError("action must be 'lift' or 'hang_up'", 422)
        except PumpError as exc:
            raise LaneError(str(exc), 422 if isinstance(exc, ValueError) else 409) from None
        return web.json_response({"pump": pump.pump_id, "pump_state": pump.state.value})

    async def link(request: web.Request) -> web.Response:
        """Drop the dispenser's link (online: false) or restore it (online: true)."""
        pump = sim(request)
        b = fields(await body_of(request), {"online"}, {"online"})
        if not isinstance(b["online"], bool):
            raise LaneError("online must be true or false", 422)
        try:
            pump.come_back_online() if b["online"] else pump.go_offline()
        except PumpError as exc:
            raise LaneError(str(exc)) from None
        return web.json_response({"pump": pump.pump_id, "pump_state": pump.state.value})

    async def knobs(request: web.Request) -> web.Response:
        """Set the simulation speed and the one-shot fault knobs; ``meter_untracked``
        (``{"product", "volume_ml", "price_kop_per_l"}``) meters fuel outside any sale at
        once (only the totalizers see it: the next sale's totals disagree); ``lose_confirms``:
        the next that many confirms of a sale are lost on the line."""
        pump = sim(request)
        b = fields(await body_of(request), {"time_scale", "stop_early_at_ml", "go_offline_at_ml", "meter_untracked",
                                            "lose_confirms"}, set())
        lose = b.get("lose_confirms")
        if lose is not None and (type(lose) is not int or not 0 <= lose <= 100):
            raise LaneError("lose_confirms must be a whole number in 0..100", 422)
        untracked = b.get("meter_untracked")
        if untracked is not None:
            u = fields(untracked, {"product", "volume_ml", "price_kop_per_l"},
                       {"product", "volume_ml", "price_kop_per_l"})
            if not isinstance(u["product"], str) or any(type(u[k]) is not int or u[k] <= 0
                                                        for k in ("volume_ml", "price_kop_per_l")):
                raise LaneError("meter_untracked needs a product and positive whole volume_ml and "
                                "price_kop_per_l", 422)
        ts = b.get("time_scale")
        if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (int, float)) or not 0 < ts <= 100_000):
            raise LaneError("time_scale must be a number in (0, 100000]", 422)
        for k in ("stop_early_at_ml", "go_offline_at_ml"):
            v = b.get(k)
            if v is not None and (type(v) is not int or v <= 0):
                raise LaneError(f"{k} must be a positive whole number or null", 422)
        if untracked is not None:
            try:
                pump.meter_untracked(untracked["product"], untracked["volume_ml"], untracked["price_kop_per_l"])
            except PumpError as exc:
                raise LaneError(str(exc), 422) from None
        if ts is not None:
            pump.time_scale = ts
        if lose is not None:
            pump.lose_confirms = lose
        for k in ("stop_early_at_ml", "go_offline_at_ml"):
            if k in b:
                setattr(pump, k, b[k])
        return web.json_response({"pump": pump.pump_id, "time_scale": pump.time_scale,
                                  "stop_early_at_ml": pump.stop_early_at_ml,
                                  "go_offline_at_ml": pump.go_offline_at_ml, "lose_confirms": pump.lose_confirms})

    return [("POST", "/v1/sim/pumps/{pump}/nozzle", nozzle),
            ("POST", "/v1/sim/pumps/{pump}/link", link),
            ("POST", "/v1/sim/pumps/{pump}/knobs", knobs)]
