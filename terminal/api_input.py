"""What the local API takes from the wire, and how it refuses the rest (terminal/api.py).

Checks that do not depend on an endpoint: JSON bodies nested no deeper than MAX_DEPTH, texts
no longer than MAX_TEXT and without lone surrogates, numbers in ASCII digits only, values cut
before they are quoted in a message; and aiohttp's connection handler, answering malformed
HTTP (an over-long request line or header, broken framing) in the API's JSON error format with
one log line instead of a traceback.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from .till import LaneError

log = logging.getLogger("edgepos.api")

SURROGATE = re.compile(r"[\ud800-\udfff]")
MAX_DEPTH = 16  #: levels of JSON arrays and objects in a body
MAX_TEXT = 4096  #: characters in one JSON string (or object key) of a body


def shown(value: str, limit: int = 40) -> str:
    """``value`` for an error message or a log line: quoted, cut to ``limit`` characters."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def ascii_int(text: str, what: str, low: int, high: int) -> int:
    """A whole number given as ASCII digits (``int()`` would take Unicode digits too)."""
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(high))) or not low <= int(text) <= high:
        raise LaneError(f"{what} must be a whole number {low}..{high} in ASCII digits, got {shown(text)}", 422)
    return int(text)


def check_tree(value: Any) -> None:
    """Refuse a parsed JSON body that nests deeper than MAX_DEPTH, or holds a string (or key)
    longer than MAX_TEXT or with a lone surrogate (it cannot be stored as UTF-8)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > MAX_DEPTH:
                raise LaneError(f"the body nests deeper than {MAX_DEPTH} levels", 400)
            items = list(v.items()) if isinstance(v, dict) else [(None, x) for x in v]
            for k, x in items:
                if k is not None:
                    stack.append((k, depth))
                stack.append((x, depth + 1))
        elif isinstance(v, str):
            if len(v) > MAX_TEXT:
                raise LaneError(f"a text in the body is longer than {MAX_TEXT} characters", 400)
            if SURROGATE.search(v):
                raise LaneError("a text in the body has a lone UTF-16 surrogate (\\ud800-\\udfff escape): "
                                "send real characters", 400)


class Abandoned(Exception):
    """The request's body stalled or its client went away: answer (if anyone listens) and close."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class _Protocol(RequestHandler):
    """aiohttp's connection handler, with malformed HTTP (over-long lines, bad framing)
    answered in the API's JSON error format and logged in one line, not a traceback."""

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status == 500:  # a bug of ours: keep aiohttp's traceback
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already sent; the connection is broken")
        if isinstance(exc, LineTooLong):
            text = "the request line or a header field is too long (at most 8190 bytes)"
        elif isinstance(exc, HttpProcessingError):
            text = f"malformed HTTP request: {type(exc).__name__}"
        else:
            text = "malformed HTTP request"
        log.warning("%d from %s: %s", status, request.remote, text)
        resp = web.json_response({"error": {"code": "bad_http_request", "message": text}}, status=status)
        resp.force_close()
        return resp


class _Server(web.Server):
    """aiohttp's server, making _Protocol connection handlers."""

    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """aiohttp's application runner, serving with :class:`_Protocol` connection handlers."""

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        return _Server(base.request_handler, request_factory=base.request_factory,
                       handler_cancellation=base.handler_cancellation, **self._kwargs)
