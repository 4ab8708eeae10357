"""A Technotrade PTS-2 forecourt controller over jsonPTS: one ``Pts2Controller`` (an
aiohttp session to ``POST /jsonPTS``, Basic or Digest authentication) shared by the
``Pts2Pump`` objects of the pumps it drives.

Packets used (names as in Technotrade's jsonPTS SDKs, see docs/dispensers.md):
PumpGetStatus (answered by PumpIdleStatus, PumpFillingStatus, PumpEndOfTransactionStatus
or PumpOfflineStatus), PumpAuthorize (PumpAuthorizeConfirmation), PumpStop,
PumpEmergencyStop, PumpSuspend, PumpResume, PumpSetPrices, PumpGetPrices (PumpPrices),
PumpGetTotals (PumpTotals), PumpGetTransactionInformation (PumpTransactionInformation) and
PumpCloseTransaction. Sales are authorized with ``AutoCloseTransaction: false``, so a
finished sale stays in the controller until ``confirm_sale`` closes it.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import logging
import os
import re
import ssl as ssl_module
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp

from hw.dispensers.polled import (
    DeviceStatus,
    FinishedSale,
    PolledPump,
    check_nozzle_map,
)
from hw.dispensers.pts2_protocol import (
    MAX_BODY_BYTES,
    Packet,
    Reply,
    decode_response,
    encode_request,
    from_kop,
    from_ml,
    to_int,
    to_kop,
    to_ml,
)
from hw.pump import (
    NozzleTotals,
    Preset,
    PumpError,
    PumpOffline,
    PumpProtocolError,
    PumpRefused,
    PumpState,
    PumpTotals,
    PumpValueError,
)

__all__ = ["Pts2Controller", "Pts2Pump"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Challenge:
    realm: str
    nonce: str
    qop: str | None
    opaque: str | None


class Pts2Controller:
    """The HTTP(S) link to one PTS-2 controller; ``async with`` opens its session.

    Several ``Pts2Pump`` objects share one controller; each ``request`` is one envelope
    (several packets in one POST). No answer within ``timeout_s`` (or a refused
    connection) raises ``PumpOffline``; an answer the driver cannot use raises
    ``PumpProtocolError``. The password is never logged or put in an error message.
    """

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        auth: str = "basic",
        timeout_s: float = 2.0,
        ssl_context: ssl_module.SSLContext | None = None,
    ) -> None:
        """``url``: the controller's base URL (``http://10.0.0.5`` or ``https://…``);
        ``auth``: ``"basic"`` or ``"digest"`` (used when ``username`` is given)."""
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
            raise PumpValueError(f"controller url must be http(s)://host[:port], got {url!r}")
        if auth not in ("basic", "digest"):
            raise PumpValueError(f"auth must be 'basic' or 'digest', got {auth!r}")
        if (username is None) != (password is None):
            raise PumpValueError("controller credentials need both a username and a password")
        self.url = url.rstrip("/") + "/jsonPTS"
        self._username = username
        self._password = password
        self.auth = auth
        self.timeout_s = timeout_s
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._users = 0
        self._ids = itertools.count(1)
        self._challenge: _Challenge | None = None
        self._nc = 0

    def __repr__(self) -> str:
        return f"Pts2Controller({self.url!r}, username={self._username!r}, auth={self.auth!r})"

    async def __aenter__(self) -> Self:
        """Open the session (shared: the last user to leave closes it)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=4, ssl=self._ssl if self._ssl else True),
            )
        self._users += 1
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        """Close the session when its last user leaves."""
        self._users -= 1
        if self._users <= 0 and self._session is not None:
            session, self._session = self._session, None
            self._users = 0
            await session.close()

    async def request(self, *packets: tuple[str, Mapping[str, Any]]) -> list[Reply]:
        """Send ``(Type, Data)`` packets in one envelope; the replies in the same order."""
        if self._session is None:
            raise PumpError("the PTS-2 controller is not open: use 'async with controller:'")
        sent = [Packet(next(self._ids), t, d) for t, d in packets]
        body = encode_request(sent)
        raw = await self._post(body)
        replies = decode_response(raw, sent)
        return [replies[p.id] for p in sent]

    async def _post(self, body: bytes) -> bytes:
        assert self._session is not None
        for attempt in range(2):
            headers = {"Content-Type": "application/json"}
            auth = self._authorization()
            if auth:
                headers["Authorization"] = auth
            try:
                async with self._session.post(self.url, data=body, headers=headers) as resp:
                    if resp.status == 401 and attempt == 0 and self._learn_challenge(resp):
                        await resp.read()
                        continue
                    if resp.status == 401:
                        raise PumpRefused("the PTS-2 controller refused the credentials", 401)
                    if resp.status != 200:
                        raise PumpProtocolError(f"the PTS-2 controller answered HTTP {resp.status}")
                    raw = await resp.content.read(MAX_BODY_BYTES + 1)
                    if len(raw) > MAX_BODY_BYTES:
                        raise PumpProtocolError("the PTS-2 controller's answer is too large")
                    return raw
            except aiohttp.ClientSSLError as e:
                raise PumpOffline(f"the PTS-2 controller's TLS certificate is not trusted ({type(e).__name__}): "
                                  "check tls_ca_file") from None
            except (TimeoutError, aiohttp.ClientConnectionError, OSError) as e:
                raise PumpOffline(f"the PTS-2 controller does not answer ({type(e).__name__})") from None
            except aiohttp.ClientPayloadError:
                raise PumpProtocolError("the PTS-2 controller's answer was cut short") from None
        raise PumpRefused("the PTS-2 controller refused the credentials", 401)

    # --- authentication -------------------------------------------------------------------
    def _authorization(self) -> str | None:
        if self._username is None or self._password is None:
            return None
        if self.auth == "basic":
            token = base64.b64encode(f"{self._username}:{self._password}".encode()).decode()
            return f"Basic {token}"
        ch = self._challenge
        if ch is None:
            return None  # the first request fetches the challenge
        uri = "/jsonPTS"
        ha1 = _md5(f"{self._username}:{ch.realm}:{self._password}")
        ha2 = _md5(f"POST:{uri}")
        fields = {"username": self._username, "realm": ch.realm, "nonce": ch.nonce, "uri": uri}
        if ch.qop:
            self._nc += 1
            nc, cnonce = f"{self._nc:08x}", os.urandom(8).hex()
            fields["response"] = _md5(f"{ha1}:{ch.nonce}:{nc}:{cnonce}:auth:{ha2}")
            out = ", ".join(f'{k}="{v}"' for k, v in fields.items())
            out += f', qop=auth, nc={nc}, cnonce="{cnonce}"'
        else:
            fields["response"] = _md5(f"{ha1}:{ch.nonce}:{ha2}")
            out = ", ".join(f'{k}="{v}"' for k, v in fields.items())
        if ch.opaque:
            out += f', opaque="{ch.opaque}"'
        return "Digest " + out

    def _learn_challenge(self, resp: aiohttp.ClientResponse) -> bool:
        if self.auth != "digest" or self._username is None:
            return False
        header = resp.headers.get("WWW-Authenticate", "")
        if not header.lower().startswith("digest "):
            return False
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', header[7:]))
        if "nonce" not in params or "realm" not in params:
            return False
        qop = params.get("qop")
        self._challenge = _Challenge(params["realm"], params["nonce"],
                                     "auth" if qop and "auth" in qop.split(",") else None,
                                     params.get("opaque"))
        self._nc = 0
        return True


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _check(reply: Reply, pump: int) -> Reply:
    """Raise ``PumpRefused`` for an error packet."""
    if reply.error is not None:
        code, message = reply.error
        raise PumpRefused(f"pump {pump}: the controller refused {reply.type}: {message} (code {code})", code)
    return reply


def _field(data: Mapping[str, Any], name: str, convert: Any, what: str) -> Any:
    if name not in data:
        raise PumpProtocolError(f"{what} has no {name}")
    return convert(data[name], f"{what} {name}")


class Pts2Pump(PolledPump):
    """One pump of a PTS-2 controller behind the ``hw.pump.Pump`` interface.

    ``controller_pump`` is the pump's number in the controller (often equal to
    ``pump_id``); ``nozzles`` maps the controller's nozzle numbers to products.
    """

    def __init__(
        self,
        controller: Pts2Controller,
        pump_id: int,
        nozzles: Mapping[int, str],
        *,
        controller_pump: int | None = None,
        poll_interval_s: float = 0.2,
        offline_after: int = 2,
    ) -> None:
        """See the class docstring; ``poll_interval_s`` is the PumpGetStatus period."""
        super().__init__(pump_id, poll_interval_s=poll_interval_s, offline_after=offline_after)
        check_nozzle_map(pump_id, nozzles, device="a PTS-2 pump", word="nozzle", plural="nozzle numbers", top=8)
        self.controller = controller
        self.controller_pump = pump_id if controller_pump is None else controller_pump
        self.nozzles = dict(sorted(nozzles.items()))
        self._nozzle_of = {p: n for n, p in self.nozzles.items()}

    async def _dev_open(self) -> None:
        await self.controller.__aenter__()

    async def _dev_close(self) -> None:
        await self.controller.__aexit__(None, None, None)

    async def _one(self, ptype: str, **data: Any) -> Reply:
        (reply,) = await self.controller.request((ptype, {"Pump": self.controller_pump, **data}))
        return _check(reply, self._pump_id)

    def _product(self, value: Any, what: str) -> str | None:
        n = to_int(value, what)
        if n == 0:
            return None
        if n not in self.nozzles:
            raise PumpProtocolError(f"{what} {n} is not a configured nozzle of pump {self._pump_id}")
        return self.nozzles[n]

    async def _dev_status(self) -> DeviceStatus:
        reply = await self._one("PumpGetStatus")
        d = reply.data
        what = f"pump {self._pump_id} {reply.type}"
        if "Pump" in d and to_int(d["Pump"], f"{what} Pump") != self.controller_pump:
            raise PumpProtocolError(f"{what} is about pump {d['Pump']}, not {self.controller_pump}")
        if reply.type == "PumpOfflineStatus":
            raise PumpOffline(f"pump {self._pump_id}: the controller reports the dispenser offline")
        if reply.type == "PumpIdleStatus":
            nozzle = self._product(d.get("NozzleUp", d.get("Nozzle", 0)), f"{what} NozzleUp")
            txn = to_int(d.get("Transaction", 0), f"{what} Transaction")
            if txn:
                return DeviceStatus(PumpState.AUTHORIZED, nozzle, sale_id=str(txn))
            return DeviceStatus(PumpState.CALLING if nozzle else PumpState.IDLE, nozzle)
        if reply.type == "PumpFillingStatus":
            nozzle = self._product(_field(d, "Nozzle", to_int, what), f"{what} Nozzle")
            return DeviceStatus(
                PumpState.DISPENSING, nozzle,
                sale_id=str(_field(d, "Transaction", to_int, what)),
                volume_ml=_field(d, "Volume", to_ml, what),
                amount_kop=_field(d, "Amount", to_kop, what),
            )
        if reply.type == "PumpEndOfTransactionStatus":
            product = self._product(_field(d, "Nozzle", to_int, what), f"{what} Nozzle")
            if product is None:
                raise PumpProtocolError(f"{what} names no nozzle")
            up = self._product(d.get("NozzleUp", 0), f"{what} NozzleUp")
            finished = FinishedSale(
                sale_id=str(_field(d, "Transaction", to_int, what)),
                product=product,
                price_kop_per_l=_field(d, "Price", to_kop, what),
                volume_ml=_field(d, "Volume", to_ml, what),
                amount_kop=_field(d, "Amount", to_kop, what),
            )
            return DeviceStatus(PumpState.CALLING if up else PumpState.IDLE, up, finished=finished)
        raise PumpProtocolError(f"pump {self._pump_id}: PumpGetStatus answered {reply.type!r}")

    async def _dev_authorize(self, product: str, price_kop_per_l: int, preset: Preset) -> str:
        nozzle = self._nozzle_of.get(product)
        if nozzle is None:
            raise PumpValueError(f"pump {self._pump_id} has no nozzle for {product!r}; it has {sorted(self._nozzle_of)}")
        if preset.volume_ml is not None:
            kind, dose = "Volume", from_ml(preset.volume_ml)
        else:
            assert preset.amount_kop is not None
            kind, dose = "Amount", from_kop(preset.amount_kop)
        reply = await self._one("PumpAuthorize", Nozzle=nozzle, Type=kind, Dose=dose,
                                Price=from_kop(price_kop_per_l), AutoCloseTransaction=False)
        if reply.type != "PumpAuthorizeConfirmation":
            raise PumpProtocolError(f"pump {self._pump_id}: PumpAuthorize answered {reply.type!r}")
        txn = _field(reply.data, "Transaction", to_int, f"pump {self._pump_id} PumpAuthorizeConfirmation")
        if txn == 0:
            raise PumpProtocolError(f"pump {self._pump_id}: PumpAuthorize returned transaction 0")
        return str(txn)

    async def _dev_cancel(self, sale_id: str) -> None:
        await self._one("PumpStop")

    async def _dev_stop(self, emergency: bool) -> None:
        await self._one("PumpEmergencyStop" if emergency else "PumpStop")

    async def _dev_suspend(self) -> None:
        await self._one("PumpSuspend")

    async def _dev_resume(self) -> None:
        await self._one("PumpResume")

    async def _dev_totals(self) -> PumpTotals:
        replies = await self.controller.request(
            *(("PumpGetTotals", {"Pump": self.controller_pump, "Nozzle": n}) for n in self.nozzles))
        out = []
        for (n, product), reply in zip(self.nozzles.items(), replies, strict=True):
            _check(reply, self._pump_id)
            what = f"pump {self._pump_id} nozzle {n} PumpTotals"
            if reply.type != "PumpTotals" or to_int(reply.data.get("Nozzle", n), what) != n:
                raise PumpProtocolError(f"{what}: answered {reply.type!r} for another nozzle")
            out.append(NozzleTotals(n, product, _field(reply.data, "Volume", to_ml, what),
                                    _field(reply.data, "Amount", to_kop, what)))
        return PumpTotals(self._pump_id, tuple(out))

    async def _dev_confirm(self, sale_id: str) -> bool:
        txn = int(sale_id) if sale_id.isdigit() else 0
        if not txn:
            return False
        info = await self._one("PumpGetTransactionInformation", Transaction=txn)
        state = info.data.get("State")
        if state == "Finished":
            return True  # closed already (a retry)
        if state != "EndOfTransaction":
            return False
        await self._one("PumpCloseTransaction", Transaction=txn)
        return True

    async def set_prices(self, prices: Mapping[str, int]) -> None:
        """Set the nozzles' prices in the controller (PumpSetPrices), kop/L by product;
        every configured product needs one."""
        missing = sorted(set(self._nozzle_of) - set(prices))
        if missing:
            raise PumpValueError(f"pump {self._pump_id}: no price for {missing}")
        for product, price in prices.items():
            if isinstance(price, bool) or not isinstance(price, int) or price <= 0:
                raise PumpValueError(f"price of {product!r} must be a positive int, got {price!r}")
        self._require_open()
        await self._one("PumpSetPrices", Prices=[from_kop(prices[p]) for p in self.nozzles.values()])

    async def get_prices(self) -> dict[str, int]:
        """The nozzles' prices as the controller holds them (PumpGetPrices), kop/L."""
        self._require_open()
        reply = await self._one("PumpGetPrices")
        prices = reply.data.get("Prices")
        if reply.type != "PumpPrices" or not isinstance(prices, list) or len(prices) < len(self.nozzles):
            raise PumpProtocolError(f"pump {self._pump_id}: PumpGetPrices answered no price list")
        return {p: to_kop(prices[n - 1], f"price of nozzle {n}") for n, p in self.nozzles.items()}

