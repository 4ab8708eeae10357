"""Hostile input against the real daemon over loopback HTTP: bodies nested deeply, lone
surrogates, very long keys and path segments, Unicode digits where ASCII digits are meant,
stalled and aborted requests. Each gets a clear 4xx (or a closed connection) in bounded time,
one log line and no traceback, and changes nothing; hypothesis fuzzes each class beyond
schemathesis's defaults (tests/terminal/test_api_schema.py)."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import threading
import urllib.parse
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from terminal.config import load_config
from terminal.daemon import Daemon
from terminal.replica import Replica

from .apitokens import auth, with_clients

WAIT_S = 30  # a safety net for a daemon that never answers, not a timing assertion
LINES = [{"sku": "A1", "category": "shoes", "amount_kop": 500_000}]


class Site:
    """A daemon (tills only) in a thread with its own event loop, 1 s header and body timeouts."""

    def __init__(self, tmp) -> None:
        cfg = load_config(None)
        cfg = replace(cfg, data_dir=tmp, pumps=(),
                      api=replace(cfg.api, port=0, header_timeout_s=1, body_timeout_s=1))
        cfg = with_clients(cfg)
        self.replica = Replica.simulated(cfg, club_accounts=100, seed=4)
        self.loop = asyncio.new_event_loop()
        self.daemon = Daemon(cfg, self.replica)
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.daemon.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(WAIT_S), "the daemon did not start"
        self.port = self.daemon.port
        self.n = 0

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.daemon.stop(), self.loop).result(WAIT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT_S)

    def records(self) -> int:
        return asyncio.run_coroutine_threadsafe(self._count(), self.loop).result(WAIT_S)

    async def _count(self) -> int:
        return self.daemon.journal.counts().records

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                key: str | None = "auto") -> tuple[int, dict]:
        """One request on a fresh connection; the answer's status and JSON."""
        self.n += 1
        h = {"Content-Type": "application/json"} | auth(urllib.parse.unquote(path))
        if method == "POST" and key is not None:
            h["Idempotency-Key"] = f"hostile-{self.n:08d}" if key == "auto" else key
        h |= headers or {}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT_S)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            raw = r.read()
            assert r.getheader("Content-Type", "").startswith("application/json"), (r.status, raw[:200])
            return r.status, json.loads(raw)
        finally:
            conn.close()

    def raw(self, data: bytes, *, then_close: bool = False) -> bytes:
        """Send bytes on a new connection; everything the daemon answers until it closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=WAIT_S) as s:
            s.sendall(data)
            if then_close:
                return b""
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    s = Site(tmp_path_factory.mktemp("hostile"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def open_sale(site):
    st_, sale = site.request("POST", "/v1/tills/till-2/sales", json.dumps({"lines": LINES}).encode())
    assert st_ == 201
    return sale["sale_id"]


def nested(depth: int, kind: str = "list") -> str:
    """JSON text of ``depth`` arrays (or objects) around a 1 (as text: json.dumps recurses)."""
    return ("[" * depth + "1" + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)


DEEP_MARK = "__deep__"


def encoded(body: object, deep: str | None = None) -> bytes:
    """``body`` as JSON (lone surrogates as \\u escapes), ``DEEP_MARK`` replaced by ``deep``."""
    text = json.dumps(body)
    return (text.replace(json.dumps(DEEP_MARK), deep) if deep is not None else text).encode()


def no_tracebacks(caplog) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


# -- each class once, with its message -----------------------------------------------------------------

@pytest.mark.parametrize("depth, kind", [(17, "list"), (17, "dict"), (900, "list"), (3000, "dict")])
def test_a_body_nested_too_deeply_is_400(site, caplog, depth, kind):
    before = site.records()
    body = encoded({"lines": DEEP_MARK}, nested(depth, kind))
    st_, err = site.request("POST", "/v1/tills/till-1/sales", body)
    assert st_ == 400 and "nests deeper than 16" in err["error"]["message"]
    assert site.records() == before
    no_tracebacks(caplog)


def test_a_body_nested_past_the_parser_is_400_not_500(site, caplog):
    """100,000 levels: json.loads raises RecursionError (a 500 before)."""
    st_, err = site.request("POST", "/v1/tills/till-1/sales", b"[" * 100_000 + b"]" * 100_000)
    assert st_ == 400 and "nests deeper" in err["error"]["message"]
    no_tracebacks(caplog)


def test_sixteen_levels_are_still_fine(site):
    st_, err = site.request("POST", "/v1/tills/till-1/sales", encoded({"lines": [DEEP_MARK]}, nested(14)))
    assert st_ == 422 and "line 1 must be an object" in err["error"]["message"]


@pytest.mark.parametrize("body", [
    {"lines": [{"sku": "\ud800", "category": "shoes", "amount_kop": 5}]},
    {"lines": [{"sku": "A1", "category": "shoes\udfff", "amount_kop": 5}]},
    {"lines": [{"sku": "A1", "category": "shoes", "amount_kop": 5, "\udc80": 1}]},
])
def test_a_lone_surrogate_in_a_body_is_400(site, caplog, body):
    before = site.records()
    st_, err = site.request("POST", "/v1/tills/till-1/sales", json.dumps(body).encode())  # ensure_ascii: \\ud800
    assert st_ == 400 and "surrogate" in err["error"]["message"]
    assert site.records() == before
    no_tracebacks(caplog)


def test_a_lone_surrogate_in_a_return_or_payment_method_is_400(site, open_sale):
    st_, _ = site.request("POST", "/v1/tills/till-1/returns",
                          json.dumps({"sale_id": "\ud800", "returned_kop": 1}).encode())
    assert st_ == 400
    st_, _ = site.request("POST", f"/v1/tills/till-2/sales/{open_sale}/commit",
                          json.dumps({"payment": {"money_kop": 500_000}, "payment_method": "cash\ud800"}).encode())
    assert st_ == 400


@pytest.mark.parametrize("length", [129, 4000, 8000])
def test_a_long_idempotency_key_is_400(site, length):
    st_, err = site.request("POST", "/v1/tills/till-1/sales", json.dumps({"lines": LINES}).encode(), key="k" * length)
    assert st_ == 400 and err["error"]["code"] == "bad_idempotency_key"


def test_a_header_or_path_past_the_line_limit_is_a_json_400_with_one_log_line(site, caplog):
    with caplog.at_level(logging.INFO, logger="edgepos.api"):
        st_, err = site.request("POST", "/v1/tills/till-1/sales", json.dumps({"lines": LINES}).encode(),
                                key="k" * 9000)
        assert st_ == 400 and err["error"]["code"] == "bad_http_request" and "too long" in err["error"]["message"]
        st_, err = site.request("GET", "/v1/requests/" + "a" * 9000)
        assert st_ == 400 and err["error"]["code"] == "bad_http_request"
    lines = [r for r in caplog.records if r.name == "edgepos.api"]
    assert len(lines) == 2 and all(len(r.getMessage()) < 200 for r in lines)
    no_tracebacks(caplog)


@pytest.mark.parametrize("path", ["/v1/requests/" + "a" * 129, "/v1/requests/a%ED%A0%80bcdefgh",
                                  "/v1/requests/abc%00defgh", "/v1/tills/" + "t" * 5000 + "/sales/x"])
def test_a_long_or_strange_path_segment_is_4xx(site, path, caplog):
    st_, err = site.request("GET", path)
    assert st_ in (400, 403, 404), err
    assert len(err["error"]["message"]) < 300  # the value is not echoed whole
    no_tracebacks(caplog)


@pytest.mark.parametrize("limit", ["\u0663", "\u0661\u0660", "\uff15", "5\u0660", "+5", " 5"])
def test_unicode_digits_are_not_numbers(site, limit):
    st_, err = site.request("GET", "/v1/journal?limit=" + urllib.parse.quote(limit))
    assert st_ == 422 and "ASCII digits" in err["error"]["message"]


def test_a_card_number_in_unicode_digits_is_not_the_card(site, open_sale):
    """int() and str.isdigit() take Arabic-Indic digits: the card 29... written in them was
    attached as that card before."""
    card = next(c.card_no for c in site.replica.club_model.cards if c.status == 0)
    arabic = card.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    for path, body in ((f"/v1/tills/till-2/sales/{open_sale}/card", {"card_no": arabic}),
                       ("/v1/tills/till-2/topups", {"card_no": arabic, "amount_kop": 100})):
        st_, err = site.request("POST", path, json.dumps(body).encode())
        assert st_ == 422 and "ASCII digits" in err["error"]["message"], err
    st_, sale = site.request("GET", f"/v1/tills/till-2/sales/{open_sale}")
    assert sale["card"] is None


# -- stalled and aborted requests ----------------------------------------------------------------------

def test_headers_that_stall_are_closed(site):
    """Half a request's headers, then nothing: the daemon closes the connection (after
    api.header_timeout_s) instead of holding it open forever."""
    assert site.raw(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ") == b""


def test_a_body_that_stalls_is_408_and_closed(site, caplog):
    head = (b"POST /v1/tills/till-1/sales HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Idempotency-Key: stalled-body-1\r\nContent-Length: 100\r\n"
            + f"Authorization: {auth('/v1/tills/till-1/sales')['Authorization']}\r\n".encode() + b"\r\n{\"li")
    with caplog.at_level(logging.INFO, logger="edgepos.api"):
        answer = site.raw(head)
    assert answer.startswith(b"HTTP/1.1 408 ") and b'"request_timeout"' in answer
    assert [r.getMessage()[:4] for r in caplog.records if r.name == "edgepos.api"] == ["408 "]
    no_tracebacks(caplog)


def test_an_aborted_upload_is_one_log_line(site, caplog):
    head = (b"POST /v1/tills/till-1/sales HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Idempotency-Key: aborted-body-1\r\nContent-Length: 100\r\n"
            + f"Authorization: {auth('/v1/tills/till-1/sales')['Authorization']}\r\n".encode() + b"\r\n{\"li")
    before = site.records()
    with caplog.at_level(logging.INFO):
        site.raw(head, then_close=True)
        for _ in range(int(WAIT_S / 0.05)):  # until the daemon has noticed
            if any("went away" in r.getMessage() for r in caplog.records):
                break
            threading.Event().wait(0.05)
    api_lines = [r for r in caplog.records if r.name.startswith(("edgepos", "aiohttp"))]
    assert len(api_lines) == 1 and "went away mid-body" in api_lines[0].getMessage()
    assert site.records() == before
    no_tracebacks(caplog)


# -- fuzz: each class, generated ------------------------------------------------------------------------

SURROGATES = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=4)
UNICODE_DIGITS = st.text(st.characters(categories=["Nd"]).filter(lambda c: not c.isascii()), min_size=1, max_size=16)
LONG_TEXT = st.integers(4097, 20_000).map(lambda n: "x" * n)
DEEP = st.tuples(st.integers(17, 5000), st.sampled_from(["list", "dict"])).map(lambda a: nested(*a))  # JSON text


@st.composite
def hostile_body(draw):
    """A request body for one of the till endpoints with one hostile value somewhere in it."""
    path, body = draw(st.sampled_from([
        ("/v1/tills/till-1/sales", {"lines": [{"sku": "A1", "category": "shoes", "amount_kop": 100}]}),
        ("/v1/tills/till-1/returns", {"sale_id": "SIM-077-001:till-1-x", "returned_kop": 1}),
        ("/v1/tills/till-1/topups", {"card_no": "2990000000011", "amount_kop": 100}),
        ("/v1/tills/till-1/sales/SALE/card", {"card_no": "2990000000011"}),
        ("/v1/tills/till-1/sales/SALE/commit", {"payment": {"money_kop": 100}, "payment_method": "cash"}),
    ]))
    kind = draw(st.sampled_from(["surrogate", "long", "deep", "unicode_digits"]))
    if kind == "unicode_digits":
        if "card_no" not in body:
            path, body = "/v1/tills/till-1/topups", {"card_no": "", "amount_kop": 100}
        body = dict(body, card_no=draw(UNICODE_DIGITS))
        return path, encoded(body), kind
    value = {"surrogate": st.tuples(st.text(max_size=5), SURROGATES).map("".join),
             "long": LONG_TEXT, "deep": DEEP}[kind]
    hostile, deep = draw(value), None
    if kind == "deep":
        hostile, deep = DEEP_MARK, hostile
    where = draw(st.sampled_from(["value", "key", "line"]))
    if where == "key" and kind != "deep":
        body = dict(body, **{hostile: 1})
    elif where == "line" and "lines" in body:
        body = {"lines": [dict(body["lines"][0], sku=hostile)]}
    else:
        first = next(iter(body))
        body = dict(body, **{first: hostile})
    return path, encoded(body, deep), kind


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=hostile_body())
def test_fuzz_hostile_bodies_are_4xx_and_change_nothing(site, caplog, case):
    path, body, kind = case
    before = site.records()
    st_, err = site.request("POST", path, body)
    assert 400 <= st_ < 500, (kind, st_, err)
    assert err["error"]["code"] and err["error"]["message"]
    assert site.records() == before
    no_tracebacks(caplog)


PATH_SEGMENTS = st.one_of(SURROGATES, UNICODE_DIGITS, LONG_TEXT.map(lambda t: t[:7000]),
                          st.text(min_size=1, max_size=40))


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(segment=PATH_SEGMENTS, where=st.sampled_from(["till", "sale", "key", "query"]))
def test_fuzz_hostile_path_segments_and_queries_are_4xx(site, caplog, segment, where):
    quoted = urllib.parse.quote(segment.encode("utf-8", "surrogatepass"), safe="")
    path = {"till": f"/v1/tills/{quoted}/sales/x", "sale": f"/v1/tills/till-1/sales/{quoted}/quote",
            "key": f"/v1/requests/{quoted}", "query": f"/v1/journal?limit={quoted}"}[where]
    st_, err = site.request("GET", path)
    assert 400 <= st_ < 500 or (where == "query" and st_ == 200 and segment.isascii() and segment.isdigit()), \
        (st_, err)
    no_tracebacks(caplog)
