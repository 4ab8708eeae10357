"""docs/local-api.md stays true: every ```http example in it is sent, in order, to a live
daemon of the embedded site (DEFAULT_SITE_TOML, its replica as ``edgepos run`` builds it, the
simulated dispensers, a virtual fuel card through the real pcscd), and its answer must be the
one the page shows; every ```sse example must be an event an operator's stream carried while
they ran; every ```toml example must be a valid part of a site configuration.

The page's conventions: ``$TILL_1_TOKEN``, ``$CONSOLE_TOKEN``, ``$OPERATOR_TOKEN`` are the
clients' tokens; ``"$NAME"`` in an answer takes the value the daemon gives (later requests use
it); an answer shows a subset of the fields (lists in full)."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp

from hw.sim.card import VirtualCard
from hw.sim.personalise import personalise
from hw.sim.pump import SimulatedPump
from terminal.config import DEFAULT_SITE_TOML, ConfigError, load_config, parse_config
from terminal.daemon import Daemon
from terminal.fuel import sim_key_store
from terminal.replica import Replica
from tests.hw.pcsc import pcscd, settle_empty_reader  # noqa: F401  (fixture)

from .apitokens import TOKENS, with_clients

DOC = Path(__file__).resolve().parents[2] / "docs" / "local-api.md"
T = 15
FUEL_CARD = "7005830000000003"  # the page's fuel card
FUEL_PIN = "1234"
VARS = {"TILL_1_TOKEN": TOKENS["till-1"], "CONSOLE_TOKEN": TOKENS["console"], "OPERATOR_TOKEN": TOKENS["operator"]}


@dataclass(frozen=True)
class Example:
    """One ```http block: a request and the answer the page promises."""

    line: int
    method: str
    path: str
    headers: dict[str, str]
    body: str
    status: int
    answer_headers: dict[str, str]
    answer: object


def blocks(lang: str) -> list[tuple[int, str]]:
    """The fenced blocks of ``lang`` in the page, with their first line's number."""
    text = DOC.read_text(encoding="utf-8")
    return [(text[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(rf"^```{lang}\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)]


def _head(lines: list[str]) -> tuple[str, dict[str, str], str]:
    first, headers, i = lines[0], {}, 1
    while i < len(lines) and lines[i].strip():
        name, _, value = lines[i].partition(":")
        headers[name.strip()] = value.strip()
        i += 1
    return first, headers, "\n".join(lines[i:]).strip()


def examples() -> list[Example]:
    out = []
    for line, text in blocks("http"):
        req, sep, resp = text.partition("\nHTTP/1.1 ")
        assert sep, f"docs/local-api.md:{line}: an http example needs its answer (HTTP/1.1 ...)"
        first, headers, body = _head(req.strip("\n").split("\n"))
        method, path = first.split(" ", 1)
        status_line, answer_headers, answer = _head(("HTTP/1.1 " + resp).split("\n"))
        out.append(Example(line, method, path, headers, body, int(status_line.split()[1]), answer_headers,
                           json.loads(answer) if answer else None))
    return out


def fill(text: str, bound: dict[str, object]) -> str:
    return re.sub(r"\$([A-Z][A-Z0-9_]*)", lambda m: str(bound[m.group(1)]), text)


def match(expected: object, actual: object, bound: dict[str, object], where: str) -> None:
    """``actual`` has everything ``expected`` shows; ``"$NAME"`` binds (or must equal) a value."""
    if isinstance(expected, str) and re.fullmatch(r"\$[A-Z][A-Z0-9_]*", expected):
        name = expected[1:]
        if name in bound:
            assert actual == bound[name], f"{where}: {actual!r} is not ${name} = {bound[name]!r}"
        else:
            bound[name] = actual
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        for k, v in expected.items():
            assert k in actual, f"{where}: no field {k!r} in {actual!r}"
            match(v, actual[k], bound, f"{where}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual!r}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            match(e, a, bound, f"{where}[{i}]")
    else:
        assert expected == actual, f"{where}: the page says {expected!r}, the daemon {actual!r}"


def test_the_page_has_its_examples():
    got = examples()
    paths = {e.path.split("?")[0] for e in got}
    assert len(got) >= 15
    for needed in ("/v1/tills/till-1/sales", "/v1/tills/till-1/returns", "/v1/tills/till-1/topups",
                   "/v1/pumps/1/pin", "/v1/pumps/1/authorize", "/v1/pumps/1/void", "/v1/requests/7c1e0a52-commit-0001"):
        assert needed in paths, needed


def test_every_toml_example_is_valid_configuration():
    found = blocks("toml")
    assert found
    for line, text in found:
        try:
            parse_config(DEFAULT_SITE_TOML + "\n" + text)  # after the embedded [api] table
        except ConfigError as exc:
            raise AssertionError(f"docs/local-api.md:{line}: {exc}") from None


def test_every_http_example_answers_as_the_page_says(pcscd, tmp_path):  # noqa: F811
    async def main():
        cfg = load_config(None)
        cfg = with_clients(replace(cfg, data_dir=tmp_path / "data", api=replace(cfg.api, port=0, simulation=True)))
        replica = Replica.simulated(cfg)  # as `edgepos run` builds it: 10,000 fuel cards, 5,000 accounts, seed 1
        card, = (c for c in (replica.fuel_model.cards[i] for i in range(100)) if c.card_no == FUEL_CARD)
        personalise(card, FUEL_PIN, sim_key_store()).save(tmp_path / "card.json")
        vcard = VirtualCard(tmp_path / "card.json")
        pumps = {p.pump_id: SimulatedPump(p.pump_id, products=p.products, time_scale=1000) for p in cfg.pumps}
        await asyncio.to_thread(settle_empty_reader)
        d = Daemon(cfg, replica, pumps=pumps)  # no issuer key configured: the simulation's test key
        await asyncio.wait_for(d.start(), T)
        bound: dict[str, object] = dict(VARS)
        inserted = False
        events: list[dict] = []
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as http:
                base = f"http://127.0.0.1:{d.port}"
                stream = await http.get(base + "/v1/events", headers={"Authorization": f"Bearer {TOKENS['operator']}"},
                                        timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
                await asyncio.wait_for(stream.content.readline(), T)  # the opening comment: subscribed
                reader = asyncio.create_task(read_events(stream, events))
                for ex in examples():
                    if ex.path == "/v1/pumps/1/pin" and not inserted:  # the driver inserts the page's card
                        vcard.insert()
                        inserted = True
                        await wait_card_read(http, base)
                    headers = {k: fill(v, bound) for k, v in ex.headers.items()}
                    body = fill(ex.body, bound).encode() if ex.body else None
                    async with http.request(ex.method, base + fill(ex.path, bound), headers=headers, data=body) as r:
                        where = f"docs/local-api.md:{ex.line} {ex.method} {ex.path}"
                        answer = await r.json()
                        assert r.status == ex.status, f"{where}: status {r.status}, the page says {ex.status}: {answer}"
                        for k, v in ex.answer_headers.items():
                            assert r.headers.get(k) == v, f"{where}: header {k}: {r.headers.get(k)!r}"
                        match(ex.answer, answer, bound, where)
                for line, text in blocks("sse"):
                    await until_event(events, text, bound, f"docs/local-api.md:{line}")
                reader.cancel()
                stream.close()
        finally:
            vcard.pull()
            await asyncio.wait_for(d.stop(), T)
            await asyncio.to_thread(settle_empty_reader)
    asyncio.run(asyncio.wait_for(main(), 120))


async def wait_card_read(http: aiohttp.ClientSession, base: str) -> None:
    """The page's fuel card is in pump 1's reader: until the lane has read it."""
    headers = {"Authorization": f"Bearer {TOKENS['console']}"}
    for _ in range(int(T / 0.02)):
        async with http.get(base + "/v1/pumps/1", headers=headers) as r:
            if (await r.json())["state"] == "card_read":
                return
        await asyncio.sleep(0.02)
    raise AssertionError("pump 1 never read the page's fuel card")


async def read_events(stream: aiohttp.ClientResponse, into: list[dict]) -> None:
    """Collect the stream's events as ``{"id", "event", "data"}``."""
    ev: dict = {}
    while line := (await stream.content.readline()).decode():
        line = line.rstrip("\n")
        if not line:
            if ev:
                into.append(ev)
            ev = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            ev[name] = json.loads(value) if name == "data" else value


async def until_event(events: list[dict], text: str, bound: dict[str, object], where: str) -> None:
    """An event like the page's (``id``, ``event`` and a subset of ``data``) was on the stream."""
    want: dict = {}
    for line in text.strip().split("\n"):
        name, _, value = line.partition(": ")
        want[name] = json.loads(value) if name == "data" else value
    for _ in range(int(T / 0.02)):
        for ev in events:
            if ev.get("event") == want["event"]:
                trial = dict(bound)
                try:
                    match(want, ev, trial, where)
                except AssertionError:
                    continue
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{where}: no event like {want} on the stream: {events}")
