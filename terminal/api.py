"""The local API: HTTP + JSON on loopback for tills, pump consoles and operators.

Every request but ``GET /openapi.json`` carries a client's bearer token and a Host header
that names this daemon; the token's role decides what it reaches (terminal/apiauth.py).
Hostile input is answered with a 4xx in bounded time and one log line (terminal/api_input.py):
bodies nested too deeply, lone surrogates, over-long text, Unicode digits where ASCII digits
are meant, and headers or bodies that stall (``api.header_timeout_s``, ``api.body_timeout_s``).

Every state-changing request (POST) but the simulation's must carry an ``Idempotency-Key``
header. The first answer is journaled with the request's records in one transaction; a retry with the same key
and the same body gets that answer again (with ``Idempotent-Replayed: true``), the same key
with a different body is refused, and ``GET /v1/requests/{key}`` tells what became of a
request whose answer was lost. ``GET /v1/events`` is a server-sent event stream. The OpenAPI
description is served at ``/openapi.json`` (terminal/openapi.py). Documented for integrators
in docs/local-api.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from weakref import WeakValueDictionary

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from authz.club_model import ClubPayment
from authz.errors import RequestError

from .api_input import MAX_DEPTH, Abandoned, Runner, ascii_int, check_tree, shown
from .apiauth import Principal, TokenTable, allowed, host_allowed, server_ssl_context
from .config import ApiRole, ConfigError
from .fuel_core import FuelLaneError, Refusal
from .journal import JournalClosedError, JournalDiskError, JournalError
from .openapi import openapi_document
from .till import IdemSpec, LaneError, parse_lines, same_request

log = logging.getLogger("edgepos.api")

IDEM_KEY = re.compile(r"[A-Za-z0-9._:-]{8,128}", re.ASCII)
CARD_NO = re.compile(r"[0-9]{13}", re.ASCII)
PAYMENT_METHOD = re.compile(r"[a-z][a-z0-9_]{0,31}", re.ASCII)
MAX_BODY = 256 * 1024
PUBLIC = frozenset({"/openapi.json"})
#: What answers while a new site waits for its replica (everything else: 503 provisioning).
PROVISIONING_OPEN = frozenset({"/v1/health", "/v1/events"})
PRINCIPAL = web.RequestKey("principal", Principal)
#: The status and code of the answer for each way the fuel lane refuses a request (the lane
#: names the kind; HTTP is decided here).
FUEL_REFUSALS: dict[Refusal, tuple[int, str]] = {
    Refusal.NOT_NOW: (409, "not_possible_now"),
    Refusal.INVALID: (422, "invalid_request"),
    Refusal.UNAVAILABLE: (503, "device_unavailable"),
}


Handler = Callable[[Any, IdemSpec], Awaitable[tuple[int, dict]]]


def error(status: int, code: str, message: str) -> web.Response:
    """A JSON error answer: ``{"error": {"code", "message"}}``."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class LocalApi:
    """The aiohttp application over a running daemon (see terminal/daemon.py)."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.settings = daemon.config.api
        self.tokens = TokenTable(self.settings.clients)
        self._key_locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()
        self._streams: set[asyncio.Task] = set()
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._errors, self._guard])
        r = app.router
        r.add_get("/openapi.json", self.openapi)
        r.add_get("/v1/health", self.health)
        r.add_get("/v1/lanes", self.lanes)
        r.add_get("/v1/journal", self.journal_tail)
        r.add_get("/v1/events", self.events)
        r.add_get("/v1/requests/{key}", self.request_status)
        r.add_post("/v1/tills/{till}/sales", self.open_sale)
        r.add_get("/v1/tills/{till}/sales/{sale}", self.get_sale)
        r.add_post("/v1/tills/{till}/sales/{sale}/card", self.attach_card)
        r.add_get("/v1/tills/{till}/sales/{sale}/quote", self.quote)
        r.add_post("/v1/tills/{till}/sales/{sale}/commit", self.commit)
        r.add_post("/v1/tills/{till}/sales/{sale}/void", self.void)
        r.add_post("/v1/tills/{till}/returns", self.return_sale)
        r.add_post("/v1/tills/{till}/topups", self.top_up)
        for route in getattr(daemon, "extra_routes", list)():
            r.add_route(*route)
        self.app = app

    async def listen(self, sock: socket.socket | None = None) -> tuple[web.AppRunner, int]:
        """Listen on ``sock`` (bound already, by the daemon's start-up checks) or on ``[api]
        host:port`` (TLS when configured); the runner and the bound port. A TLS file that
        cannot be loaded is a ConfigError naming its setting."""
        s = self.settings
        try:
            ctx = server_ssl_context(s)
        except (OSError, ssl.SSLError) as exc:
            which = "tls_client_ca_file" if s.tls_client_ca_file and "verify" in repr(exc).lower() else "tls_cert_file"
            raise ConfigError(f"api.{which}: cannot load the TLS files: {exc}") from None
        if not len(self.tokens):
            log.warning("no [[api.clients]] configured: every request but GET /openapi.json is refused")
        runner = Runner(self.app, access_log=None, keepalive_timeout=s.header_timeout_s)
        await runner.setup()
        site = (web.SockSite(runner, sock, ssl_context=ctx) if sock is not None
                else web.TCPSite(runner, s.host, s.port, ssl_context=ctx))
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner, port

    # -- plumbing --

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        """The Host check, then the bearer token and its role, before any handler runs."""
        if not host_allowed(request.headers.get("Host"), self.settings):
            log.warning("400 bad Host %s for %s %s from %s", shown(request.headers.get("Host", "")),
                        request.method, shown(request.path, 80), request.remote)
            return error(400, "bad_host", "the Host header must name this daemon (localhost, a loopback "
                         "address, api.host or one of api.host_names)")
        if request.path in PUBLIC:
            return await handler(request)
        principal = self.tokens.authenticate(request.headers.get("Authorization"))
        if principal is None:
            why = "no bearer token" if "Authorization" not in request.headers else "an unknown or malformed token"
            log.warning("401 %s %s from %s: %s", request.method, shown(request.path, 80), request.remote, why)
            resp = error(401, "unauthorized", f"{why}: send Authorization: Bearer <the client's token>")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="edgepos"'
            return resp
        request[PRINCIPAL] = principal
        if not getattr(self.daemon, "serving", True) and request.path not in PROVISIONING_OPEN:
            return error(503, "provisioning", "this site is not serving yet: it waits for the host's replica "
                         "snapshots (GET /v1/health says how far it got)")
        match = request.match_info
        if match.http_exception is not None:
            raise match.http_exception
        resource = match.route.resource
        route = resource.canonical if resource is not None else request.path
        method = "GET" if request.method == "HEAD" else request.method
        if not allowed(principal, method, route, dict(match)):
            log.warning("403 %s %s for client %s (%s)", request.method, shown(request.path, 80), principal.name,
                        principal.role.value)
            return error(403, "forbidden", f"client {principal.name!r} ({principal.role.value}) may not "
                         f"{method} {route} here")
        return await handler(request)

    @staticmethod
    def principal(request: web.Request) -> Principal:
        """The client the request's token names (set by the guard)."""
        return request[PRINCIPAL]

    @web.middleware
    async def _errors(self, request: web.Request, handler):
        try:
            return await handler(request)
        except Abandoned as exc:
            log.warning("%d %s %s from %s: %s", exc.status, request.method, shown(request.path, 80),
                        request.remote, exc)
            resp = error(exc.status, exc.code, str(exc))
            resp.force_close()
            return resp
        except web.HTTPException as exc:
            if exc.status >= 400 and exc.content_type != "application/json":
                resp = error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
                if "Allow" in exc.headers:  # a 405 must say which methods are allowed (RFC 9110)
                    resp.headers["Allow"] = exc.headers["Allow"]
                return resp
            raise
        except RequestError as exc:
            return error(422, "invalid_request", str(exc)[:300])
        except FuelLaneError as exc:
            status, code = FUEL_REFUSALS[exc.kind]
            return error(status, code, str(exc)[:300])
        except LaneError as exc:  # a message may quote a value: cut it
            return error(exc.status, "not_possible_now" if exc.status == 409 else "invalid_request", str(exc)[:300])
        except (JournalDiskError, JournalClosedError) as exc:
            # the evaluator may be ahead of the disk: stop, and let the restart rebuild from the journal
            log.critical("journal failure, stopping the daemon: %s", exc)
            self.daemon.fatal(exc)
            return error(503, "journal_failure", "the journal could not be written; the daemon is restarting")
        except JournalError as exc:  # a bug of ours (a body the journal refuses): say so, change nothing more
            log.exception("journal refused a record")
            return error(500, "internal_error", f"the journal refused the record: {exc}")

    async def _body(self, request: web.Request) -> bytes:
        """The whole body, within ``api.body_timeout_s``; a client that stalls or goes away
        is one log line and a closed connection, not a traceback."""
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                return await request.read()
        except TimeoutError:
            raise Abandoned(408, "request_timeout",
                             f"the body did not arrive within {self.settings.body_timeout_s} s") from None
        except (ConnectionError, HttpProcessingError) as exc:
            raise Abandoned(400, "incomplete_body", f"the client went away mid-body ({type(exc).__name__})") from None

    async def _json(self, request: web.Request) -> Any:
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="send the body as application/json")
        raw = await self._body(request)
        try:
            value = json.loads(raw, parse_constant=_no_constant)
        except RecursionError:
            raise LaneError(f"the body nests deeper than {MAX_DEPTH} levels", 400) from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise LaneError(f"the body is not valid JSON: {str(exc)[:120]}", 400) from None
        check_tree(value)
        return value

    async def _idempotent(self, request: web.Request, endpoint: str, handler: Handler,
                          body: Any = None) -> web.Response:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return error(400, "idempotency_key_required",
                         "state-changing requests need an Idempotency-Key header (8-128 of A-Z a-z 0-9 . _ : -)")
        if not IDEM_KEY.fullmatch(key):
            return error(400, "bad_idempotency_key", "the Idempotency-Key must be 8-128 of A-Z a-z 0-9 . _ : -")
        raw = await self._body(request)
        digest = hashlib.sha256(endpoint.encode() + b"\0" + raw).hexdigest()
        lock = self._key_locks.get(key)
        if lock is None:
            lock = self._key_locks[key] = asyncio.Lock()
        async with lock:
            prior = await self.daemon.journal.lookup_request(key)
            if prior is not None:
                if not same_request(prior.request_digest, digest):
                    return error(422, "idempotency_key_reused",
                                 f"Idempotency-Key {key!r} was used for a different request")
                return web.json_response(prior.response, status=prior.status,
                                         headers={"Idempotent-Replayed": "true"})
            parsed = await self._json(request) if body is None else body
            status, response = await handler(parsed, IdemSpec(key, endpoint, digest))
            return web.json_response(response, status=status)

    def _till(self, request: web.Request):
        till = self.daemon.tills.get(request.match_info["till"])
        if till is None:
            raise LaneError(f"no till {shown(request.match_info['till'])} on this site", 404)
        return till

    def _lanes(self) -> list[str]:
        return [t.lane for t in self.daemon.tills.values()] + [p.lane for p in self.daemon.pumps.values()]

    @staticmethod
    def _fields(body: Any, allowed: set[str], required: set[str]) -> dict:
        if not isinstance(body, dict):
            raise LaneError("the body must be a JSON object", 422)
        extra = set(body) - allowed
        if extra:
            raise LaneError(f"unknown field(s): {', '.join(sorted(extra))}", 422)
        missing = required - set(body)
        if missing:
            raise LaneError(f"missing field(s): {', '.join(sorted(missing))}", 422)
        return body

    # -- operators --

    async def openapi(self, request: web.Request) -> web.Response:
        """The OpenAPI description of this API."""
        return web.json_response(openapi_document())

    async def health(self, request: web.Request) -> web.Response:
        """Is the daemon up, and what does it hold."""
        return web.json_response(self.daemon.health())

    async def lanes(self, request: web.Request) -> web.Response:
        """Every lane and its state."""
        return web.json_response({"lanes": self.daemon.lane_views()})

    async def journal_tail(self, request: web.Request) -> web.Response:
        """The latest journal records (card numbers masked)."""
        limit = ascii_int(request.query.get("limit", "50"), "limit", 1, 1000)
        lane = request.query.get("lane")
        return web.json_response({"records": self.daemon.journal_view(limit, lane)})

    async def request_status(self, request: web.Request) -> web.Response:
        """What became of the request with this Idempotency-Key."""
        key = request.match_info["key"]
        if not IDEM_KEY.fullmatch(key):
            return error(400, "bad_idempotency_key", "an Idempotency-Key is 8-128 of A-Z a-z 0-9 . _ : -")
        prior = await self.daemon.journal.lookup_request(key)
        lane = prior.endpoint.split(":")[1] if prior is not None and ":" in prior.endpoint else ""
        if prior is None or not self.principal(request).may_see_lane(lane):
            return error(404, "unknown_request", "no request with this key reached the journal: it had no "
                         "effect, and it is safe to send it again")
        return web.json_response({"key": key, "endpoint": prior.endpoint, "status": prior.status,
                                  "response": prior.response})

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``id``, ``event`` (type) and ``data`` (JSON) per event."""
        who = self.principal(request)
        asked = request.query.get("lanes")
        lanes: frozenset[str] | None
        if asked is not None:
            lanes = frozenset(asked.split(","))
            hidden = sorted(lane for lane in lanes if not who.may_see_lane(lane))
            if hidden:
                return error(403, "forbidden", f"client {who.name!r} may not follow lane(s) {shown(', '.join(hidden))}")
        elif who.role is ApiRole.OPERATOR:
            lanes = None
        else:
            lanes = frozenset(lane for lane in self._lanes() if who.may_see_lane(lane))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        task = asyncio.current_task()
        assert task is not None  # a handler runs in a task
        self._streams.add(task)
        try:
            await self._stream(resp, lanes)
        except asyncio.CancelledError:
            pass  # the daemon is stopping
        finally:
            self._streams.discard(task)
        return resp

    def close_streams(self) -> None:
        """End every event stream (the daemon is stopping)."""
        for task in list(self._streams):
            task.cancel()

    async def _stream(self, resp: web.StreamResponse, lanes: frozenset[str] | None) -> None:
        with self.daemon.bus.subscribe(lanes) as sub:
            await resp.write(b": edgepos events\n\n")
            while True:
                try:
                    ev = await sub.get(timeout=15)
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                data = json.dumps({"lane": ev.lane, "at_utc_s": ev.at_utc_s, **ev.data}, separators=(",", ":"))
                await resp.write(f"id: {ev.event_id}\nevent: {ev.type}\ndata: {data}\n\n".encode())

    # -- tills --

    async def open_sale(self, request: web.Request) -> web.Response:
        """Open a sale with its lines."""
        till = self._till(request)

        async def run(body, idem):
            b = self._fields(body, {"lines"}, {"lines"})
            return await till.open(parse_lines(b["lines"]), idem)
        return await self._idempotent(request, f"open_sale:{till.lane}", run)

    async def get_sale(self, request: web.Request) -> web.Response:
        """A sale's state."""
        return web.json_response(self._till(request).sale(request.match_info["sale"]).view())

    async def attach_card(self, request: web.Request) -> web.Response:
        """Attach a keyed club card number to the open sale."""
        till = self._till(request)
        sale_id = request.match_info["sale"]

        async def run(body, idem):
            b = self._fields(body, {"card_no"}, {"card_no"})
            card = b["card_no"]
            if not isinstance(card, str) or not CARD_NO.fullmatch(card):
                raise LaneError("card_no must be the 13 ASCII digits of the club card", 422)
            return await till.attach(sale_id, card, source="keyed", idem=idem)
        return await self._idempotent(request, f"attach:{till.lane}:{sale_id}", run)

    async def quote(self, request: web.Request) -> web.Response:
        """Points to accrue, most redeemable (within the offline allowance), balance."""
        till = self._till(request)
        method = _payment_method(request.query.get("payment_method", "cash"))
        return web.json_response(till.quote(request.match_info["sale"], method))

    async def commit(self, request: web.Request) -> web.Response:
        """Commit the sale with its payments."""
        till = self._till(request)
        sale_id = request.match_info["sale"]

        async def run(body, idem):
            b = self._fields(body, {"payment", "payment_method"}, {"payment"})
            p = self._fields(b["payment"], {"points", "card_balance_kop", "money_kop"}, set())
            payment = ClubPayment(p.get("points", 0), p.get("card_balance_kop", 0), p.get("money_kop", 0))
            return await till.commit(sale_id, payment, _payment_method(b.get("payment_method", "cash")), idem)
        return await self._idempotent(request, f"commit:{till.lane}:{sale_id}", run)

    async def void(self, request: web.Request) -> web.Response:
        """Void the open sale."""
        till = self._till(request)
        sale_id = request.match_info["sale"]

        async def run(body, idem):
            return await till.void(sale_id, idem)
        return await self._idempotent(request, f"void:{till.lane}:{sale_id}", run, body={})

    async def return_sale(self, request: web.Request) -> web.Response:
        """Return part or all of a committed sale."""
        till = self._till(request)

        async def run(body, idem):
            b = self._fields(body, {"sale_id", "returned_kop"}, {"sale_id", "returned_kop"})
            if not isinstance(b["sale_id"], str):
                raise LaneError("sale_id must be text", 422)
            return await till.return_sale(b["sale_id"], b["returned_kop"], idem)
        return await self._idempotent(request, f"return:{till.lane}", run)

    async def top_up(self, request: web.Request) -> web.Response:
        """Cash top-up of a club card."""
        till = self._till(request)

        async def run(body, idem):
            b = self._fields(body, {"card_no", "amount_kop"}, {"card_no", "amount_kop"})
            if not isinstance(b["card_no"], str) or not CARD_NO.fullmatch(b["card_no"]):
                raise LaneError("card_no must be the 13 ASCII digits of the club card", 422)
            if type(b["amount_kop"]) is not int or not 1 <= b["amount_kop"] <= 10**12:
                raise LaneError(f"amount_kop must be a whole number 1..10^12, got {b['amount_kop']!r}", 422)
            return await till.top_up(b["card_no"], b["amount_kop"], idem)
        return await self._idempotent(request, f"topup:{till.lane}", run)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _payment_method(value: Any) -> str:
    if not isinstance(value, str) or not PAYMENT_METHOD.fullmatch(value):
        raise LaneError(f"payment_method must be a method name (a-z, 0-9, _), got {value!r:.40}", 422)
    return value
