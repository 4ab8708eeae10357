"""The local API: HTTP + JSON on loopback for tills, pump consoles and operators.

Every state-changing request (POST) must carry an ``Idempotency-Key`` header. The first
answer is journaled with the request's records in one transaction; a retry with the same key
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
from collections.abc import Awaitable, Callable
from typing import Any
from weakref import WeakValueDictionary

from aiohttp import web

from authz.club_model import ClubPayment
from authz.errors import RequestError

from .journal import JournalClosedError, JournalDiskError, JournalError
from .openapi import openapi_document
from .till import IdemSpec, LaneError, parse_lines, same_request

log = logging.getLogger("edgepos.api")

IDEM_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
MAX_BODY = 256 * 1024

Handler = Callable[[Any, IdemSpec], Awaitable[tuple[int, dict]]]


def error(status: int, code: str, message: str) -> web.Response:
    """A JSON error answer: ``{"error": {"code", "message"}}``."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class LocalApi:
    """The aiohttp application over a running daemon (see terminal/daemon.py)."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self._key_locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()
        self._streams: set[asyncio.Task] = set()
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._errors])
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
        for route in getattr(daemon, "extra_routes", lambda: [])():
            r.add_route(*route)
        self.app = app

    # -- plumbing --

    @web.middleware
    async def _errors(self, request: web.Request, handler):
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400 and exc.content_type != "application/json":
                resp = error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
                if "Allow" in exc.headers:  # a 405 must say which methods are allowed (RFC 9110)
                    resp.headers["Allow"] = exc.headers["Allow"]
                return resp
            raise
        except RequestError as exc:
            return error(422, "invalid_request", str(exc))
        except LaneError as exc:
            return error(exc.status, "not_possible_now" if exc.status == 409 else "invalid_request", str(exc))
        except (JournalDiskError, JournalClosedError) as exc:
            # the evaluator may be ahead of the disk: stop, and let the restart rebuild from the journal
            log.critical("journal failure, stopping the daemon: %s", exc)
            self.daemon.fatal(exc)
            return error(503, "journal_failure", "the journal could not be written; the daemon is restarting")
        except JournalError as exc:  # a bug of ours (a body the journal refuses): say so, change nothing more
            log.exception("journal refused a record")
            return error(500, "internal_error", f"the journal refused the record: {exc}")

    async def _json(self, request: web.Request) -> Any:
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="send the body as application/json")
        try:
            return json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as exc:
            raise LaneError(f"the body is not valid JSON: {exc}", 400) from None

    async def _idempotent(self, request: web.Request, endpoint: str, handler: Handler,
                          body: Any = None) -> web.Response:
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return error(400, "idempotency_key_required",
                         "state-changing requests need an Idempotency-Key header (8-128 of A-Z a-z 0-9 . _ : -)")
        if not IDEM_KEY.match(key):
            return error(400, "bad_idempotency_key", "the Idempotency-Key must be 8-128 of A-Z a-z 0-9 . _ : -")
        raw = await request.read()
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
            raise LaneError(f"no till {request.match_info['till']!r} on this site", 404)
        return till

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
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            raise LaneError("limit must be a whole number", 422) from None
        if not 1 <= limit <= 1000:
            raise LaneError("limit must be 1..1000", 422)
        lane = request.query.get("lane")
        return web.json_response({"records": self.daemon.journal_view(limit, lane)})

    async def request_status(self, request: web.Request) -> web.Response:
        """What became of the request with this Idempotency-Key."""
        key = request.match_info["key"]
        prior = await self.daemon.journal.lookup_request(key)
        if prior is None:
            return error(404, "unknown_request", "no request with this key reached the journal: it had no "
                         "effect, and it is safe to send it again")
        return web.json_response({"key": key, "endpoint": prior.endpoint, "status": prior.status,
                                  "response": prior.response})

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``id``, ``event`` (type) and ``data`` (JSON) per event."""
        lanes = request.query.get("lanes")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        task = asyncio.current_task()
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

    async def _stream(self, resp: web.StreamResponse, lanes: str | None) -> None:
        with self.daemon.bus.subscribe(frozenset(lanes.split(",")) if lanes else None) as sub:
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
            if not isinstance(card, str) or not card.isdigit() or len(card) != 13:
                raise LaneError("card_no must be the 13 digits of the club card", 422)
            return await till.attach(sale_id, card, source="keyed", idem=idem)
        return await self._idempotent(request, f"attach:{till.lane}:{sale_id}", run)

    async def quote(self, request: web.Request) -> web.Response:
        """Points to accrue, most redeemable (within the offline allowance), balance."""
        till = self._till(request)
        method = request.query.get("payment_method", "cash")
        return web.json_response(till.quote(request.match_info["sale"], method))

    async def commit(self, request: web.Request) -> web.Response:
        """Commit the sale with its payments."""
        till = self._till(request)
        sale_id = request.match_info["sale"]

        async def run(body, idem):
            b = self._fields(body, {"payment", "payment_method"}, {"payment"})
            p = self._fields(b["payment"], {"points", "card_balance_kop", "money_kop"}, set())
            payment = ClubPayment(p.get("points", 0), p.get("card_balance_kop", 0), p.get("money_kop", 0))
            return await till.commit(sale_id, payment, b.get("payment_method", "cash"), idem)
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
            return await till.top_up(b["card_no"], b["amount_kop"], idem)
        return await self._idempotent(request, f"topup:{till.lane}", run)
