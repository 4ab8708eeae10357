"""The site configuration: one TOML file per site, validated at start with clear errors.

A site is a filling station, a store, or both: pumps (each with its card reader and
dispenser) and tills (each with its scanner), the products it sells at which prices, the
local API's address, and the broker and key settings the sync client uses. Every error names
the setting (``pumps[2].reader``) and what was wrong with the value. ``DEFAULT_SITE_TOML``
is the embedded configuration the simulated site runs on.
"""

from __future__ import annotations

import builtins
import enum
import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

from authz.errors import ModelError
from authz.localtime import zone
from hw.dispensers.factory import Azt2Settings, Pts2Settings

SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PRODUCT_CODE = re.compile(r"^[A-Z0-9_]{1,16}$")
HOST_NAME = re.compile(r"(?=.{1,253}\Z)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")
TOKEN_SHA256 = re.compile(r"[0-9a-f]{64}")


class ConfigError(ValueError):
    """The site configuration is invalid: the message names the setting and the value."""


@dataclass(frozen=True, slots=True)
class PumpConfig:
    """A pump: its number on the forecourt, card reader, dispenser driver and nozzles.

    ``dispenser`` is ``"sim"`` (a simulated dispenser), ``"pts2"`` or ``"azt2"``; for the
    real ones ``driver`` holds their settings (docs/operations.md, wiring a station).
    """

    pump_id: int
    reader: str
    dispenser: str = "sim"
    products: tuple[str, ...] = ()
    flow_ml_per_min: int = 40_000
    driver: Pts2Settings | Azt2Settings | None = None


@dataclass(frozen=True, slots=True)
class TillConfig:
    """A till lane and its barcode scanner's serial port and framing."""

    till_id: str
    scanner_port: str | None = None
    scanner_suffix: str = "CR"
    scanner_baudrate: int = 9600
    offline_points_allowance: int = 3_000


class ApiRole(enum.Enum):
    """What a local API client is: a till (its own till's endpoints), a pump console (its
    pumps' endpoints) or an operator (reads everything, changes nothing). docs/local-api.md."""

    TILL = "till"
    PUMP_CONSOLE = "pump_console"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class ApiClient:
    """One client of the local API: its name (for logs), role and scope, and the SHA-256 of
    its bearer token (the token itself is never stored)."""

    name: str
    role: ApiRole
    token_sha256: str
    till: str | None = None  #: a till client's till id
    pumps: tuple[int, ...] = ()  #: a pump console's pumps (empty: every pump of the site)


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """Where and how the local API listens, and who may talk to it.

    Loopback by default; a LAN address only with mutual TLS (``tls_cert_file``,
    ``tls_key_file``, ``tls_client_ca_file``). ``simulation`` serves ``/v1/sim/`` (set by
    ``edgepos simulate``, never on a LAN). ``header_timeout_s`` bounds the wait for a
    request's headers (and an idle keep-alive connection), ``body_timeout_s`` for its body.
    """

    host: str = "127.0.0.1"
    port: int = 8780
    clients: tuple[ApiClient, ...] = ()
    host_names: tuple[str, ...] = ()  #: Host header names accepted besides loopback and ``host``
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    simulation: bool = False
    header_timeout_s: int = 10
    body_timeout_s: int = 10


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """The MQTT broker the sync client talks to (none: an embedded broker in the simulation)."""

    url: str | None = None
    username: str | None = None
    password_file: str | None = None
    tls_ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class KeysConfig:
    """Where the keys are: the card issuer key (card MACs), the site's signing key (batches) and
    the host's key (to verify replica updates)."""

    issuer_key_file: str | None = None
    site_key_file: str | None = None
    host_key_file: str | None = None


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """A whole site's configuration."""

    site_id: str
    time_zone: str
    region: int
    data_dir: Path
    station_id: int | None = None
    prices_kop_per_l: dict[str, int] = field(default_factory=dict)
    pumps: tuple[PumpConfig, ...] = ()
    tills: tuple[TillConfig, ...] = ()
    api: ApiConfig = ApiConfig()
    broker: BrokerConfig = BrokerConfig()
    keys: KeysConfig = KeysConfig()


DEFAULT_SITE_TOML = """\
# The embedded configuration of the simulated site: a filling station with four pumps and a
# shoe store with two tills, in Moscow.
[site]
id = "SIM-077-001"
time_zone = "Europe/Moscow"
region = 1
station_id = 1001
data_dir = "var/sim"

[prices]                   # kopecks per litre (fuel) or per unit
AI92 = 5590
AI95 = 6150
AI98 = 7690
DT = 6890
WASH = 60000
SHOP = 25000

[[pumps]]
id = 1
reader = "Virtual PCD 00 00"
products = ["AI92", "AI95", "DT"]

[[pumps]]
id = 2
reader = "Virtual PCD 00 01"
products = ["AI92", "AI95", "AI98", "DT"]

[[tills]]
id = "till-1"

[[tills]]
id = "till-2"

[api]
host = "127.0.0.1"
port = 8780
"""


class _Reader:
    """Reads one table of the TOML document, naming each setting in errors."""

    def __init__(self, table: Any, where: str) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table, got {type(table).__name__}")
        self.table, self.where = table, where
        self.used: set[builtins.str] = set()

    def _get(self, key: builtins.str, required: bool) -> Any:
        self.used.add(key)
        if key not in self.table:
            if required:
                raise ConfigError(f"{self.where}.{key}: missing")
            return None
        return self.table[key]

    @overload
    def str(self, key: builtins.str, default: builtins.str, *, required: bool = False) -> builtins.str: ...
    @overload
    def str(self, key: builtins.str, default: None = None, *, required: Literal[True]) -> builtins.str: ...
    @overload
    def str(self, key: builtins.str, default: None = None, *, required: bool = False) -> builtins.str | None: ...

    def str(self, key: builtins.str, default: builtins.str | None = None, *,
            required: bool = False) -> builtins.str | None:
        """A text setting."""
        v = self._get(key, required)
        if v is None:
            return default
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"{self.where}.{key}: expected non-empty text, got {v!r}")
        return v

    @overload
    def int(self, key: builtins.str, default: builtins.int, *, required: bool = False, low: builtins.int = 0,
            high: builtins.int = 2**31 - 1) -> builtins.int: ...
    @overload
    def int(self, key: builtins.str, default: None = None, *, required: Literal[True], low: builtins.int = 0,
            high: builtins.int = 2**31 - 1) -> builtins.int: ...
    @overload
    def int(self, key: builtins.str, default: None = None, *, required: bool = False, low: builtins.int = 0,
            high: builtins.int = 2**31 - 1) -> builtins.int | None: ...

    def int(self, key: builtins.str, default: builtins.int | None = None, *, required: bool = False,
            low: builtins.int = 0, high: builtins.int = 2**31 - 1) -> builtins.int | None:
        """A whole-number setting within ``low..high``."""
        v = self._get(key, required)
        if v is None:
            return default
        if type(v) is not int or not low <= v <= high:
            raise ConfigError(f"{self.where}.{key}: expected a whole number in {low}..{high}, got {v!r}")
        return v

    def list(self, key: builtins.str) -> builtins.list[Any]:
        """An array setting (empty when absent)."""
        v = self._get(key, False)
        if v is None:
            return []
        if not isinstance(v, list):
            raise ConfigError(f"{self.where}.{key}: expected an array, got {v!r}")
        return v

    def done(self) -> None:
        """Unknown keys are errors: a typo must not silently fall back to a default."""
        extra = sorted(set(self.table) - self.used)
        if extra:
            raise ConfigError(f"{self.where}: unknown setting(s) {', '.join(extra)}")


def parse_config(text: str, *, base_dir: Path | None = None) -> SiteConfig:
    """The site configuration in TOML ``text``; relative paths are taken from ``base_dir``."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    root = _Reader(doc, "config")
    site = _Reader(root._get("site", True), "site")
    site_id = site.str("id", required=True)
    if not SITE_ID.match(site_id):
        raise ConfigError(f"site.id: letters, digits, '.', '_', '-' only (at most 64), got {site_id!r}")
    tz = site.str("time_zone", required=True)
    try:
        zone(tz)
    except ModelError:
        raise ConfigError(f"site.time_zone: unknown time zone {tz!r}") from None
    region = site.int("region", required=True)
    station_id = site.int("station_id")
    data_dir = Path(site.str("data_dir", "var"))
    if base_dir is not None and not data_dir.is_absolute():
        data_dir = base_dir / data_dir
    site.done()

    prices_t = _Reader(root._get("prices", False) or {}, "prices")
    prices = {}
    for code in list(prices_t.table):
        if not PRODUCT_CODE.match(code):
            raise ConfigError(f"prices.{code}: product codes are A-Z, 0-9, _ (at most 16)")
        prices[code] = prices_t.int(code, required=True, high=10**8)
    prices_t.done()

    pumps, seen = [], set()
    for i, raw in enumerate(root.list("pumps")):
        p = _Reader(raw, f"pumps[{i}]")
        pid = p.int("id", required=True, low=1, high=999)
        if pid in seen:
            raise ConfigError(f"pumps[{i}].id: pump {pid} is configured twice")
        seen.add(pid)
        products = tuple(p.list("products"))
        for code in products:
            if code not in prices:
                raise ConfigError(f"pumps[{i}].products: {code!r} has no price in [prices]")
        dispenser = p.str("dispenser", "sim")
        driver: Pts2Settings | Azt2Settings | None = None
        if dispenser == "pts2":
            driver = _pts2_settings(_Reader(p._get("pts2", True), f"pumps[{i}].pts2"), pid, base_dir)
        elif dispenser == "azt2":
            driver = _azt2_settings(_Reader(p._get("azt2", True), f"pumps[{i}].azt2"))
        elif dispenser != "sim":
            raise ConfigError(f"pumps[{i}].dispenser: one of sim, pts2, azt2, got {dispenser!r}")
        if driver is not None:
            mapped = tuple(product for _, product in (driver.nozzles if isinstance(driver, Pts2Settings)
                                                      else driver.channels))
            for code in mapped:
                if code not in prices:
                    raise ConfigError(f"pumps[{i}].{dispenser}: product {code!r} has no price in [prices]")
            if products and set(products) != set(mapped):
                raise ConfigError(f"pumps[{i}].products: {list(products)} differ from the {dispenser} "
                                  f"nozzle map's {list(mapped)}")
            products = products or mapped
        pumps.append(PumpConfig(pid, p.str("reader", required=True), dispenser, products,
                                p.int("flow_ml_per_min", 40_000, low=1_000, high=500_000), driver))
        p.done()
    _check_shared_links(pumps)
    if pumps and station_id is None:
        raise ConfigError("site.station_id: required when the site has pumps")

    tills, seen_t = [], set()
    for i, raw in enumerate(root.list("tills")):
        t = _Reader(raw, f"tills[{i}]")
        tid = t.str("id", required=True)
        if not SITE_ID.match(tid) or tid.startswith("pump-"):
            raise ConfigError(f"tills[{i}].id: letters, digits, '.', '_', '-' (not starting with 'pump-'), got {tid!r}")
        if tid in seen_t:
            raise ConfigError(f"tills[{i}].id: till {tid!r} is configured twice")
        seen_t.add(tid)
        suffix = t.str("scanner_suffix", "CR")
        if suffix not in ("CR", "LF", "CRLF"):
            raise ConfigError(f"tills[{i}].scanner_suffix: one of CR, LF, CRLF, got {suffix!r}")
        tills.append(TillConfig(tid, t.str("scanner_port"), suffix,
                                t.int("scanner_baudrate", 9600, low=1200, high=921_600),
                                t.int("offline_points_allowance", 3_000, high=10**6)))
        t.done()
    if not pumps and not tills:
        raise ConfigError("config: a site needs at least one [[pumps]] or [[tills]]")

    api = _api_config(_Reader(root._get("api", False) or {}, "api"), base_dir, pumps, tills)

    b = _Reader(root._get("broker", False) or {}, "broker")
    url = b.str("url")
    if url is not None and not re.match(r"^mqtts?://[^/\s]+(:\d+)?/?$", url):
        raise ConfigError(f"broker.url: expected mqtt://host:port or mqtts://host:port, got {url!r}")
    broker = BrokerConfig(url, b.str("username"), b.str("password_file"), b.str("tls_ca_file"))
    b.done()
    k = _Reader(root._get("keys", False) or {}, "keys")
    keys = KeysConfig(k.str("issuer_key_file"), k.str("site_key_file"), k.str("host_key_file"))
    k.done()
    if broker.url is not None and keys.site_key_file is None:
        raise ConfigError("keys.site_key_file: required with broker.url (a site signs its batches with its key)")
    root.done()
    return SiteConfig(site_id, tz, region, data_dir, station_id, prices, tuple(pumps), tuple(tills),
                      api, broker, keys)


def _nozzle_map(r: _Reader, key: str, high: int) -> tuple[tuple[int, str], ...]:
    """``{ "1" = "AI95", ... }``: numbers 1..high to product codes, each product once."""
    raw = r._get(key, True)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{r.where}.{key}: expected a table of number = product, got {raw!r}")
    out: dict[int, str] = {}
    for k, v in raw.items():
        if not k.isdigit() or not 1 <= int(k) <= high:
            raise ConfigError(f"{r.where}.{key}: {k!r} is not a number in 1..{high}")
        if not isinstance(v, str) or not PRODUCT_CODE.match(v):
            raise ConfigError(f"{r.where}.{key}.{k}: expected a product code, got {v!r}")
        if v in out.values():
            raise ConfigError(f"{r.where}.{key}: product {v!r} is on two nozzles")
        out[int(k)] = v
    return tuple(sorted(out.items()))


def _credentials(r: _Reader, key: str, base_dir: Path | None) -> tuple[str, str] | tuple[None, None]:
    """A credentials file of one line ``username:password`` (the password never appears in
    an error or a log)."""
    name = r.str(key)
    if name is None:
        return None, None
    path = Path(name)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{r.where}.{key}: cannot read {path}: {exc.strerror}") from None
    user, sep, password = text.partition(":")
    if not sep or not user or not password or "\n" in text:
        raise ConfigError(f"{r.where}.{key}: {path} must hold one line 'username:password'")
    return user, password


def _pts2_settings(r: _Reader, pump_id: int, base_dir: Path | None) -> Pts2Settings:
    """The ``[pumps.pts2]`` table: a pump behind a Technotrade PTS-2 controller."""
    url = r.str("url", required=True)
    if not re.match(r"^https?://[^/\s]+/?$", url):
        raise ConfigError(f"{r.where}.url: expected http(s)://host[:port], got {url!r}")
    auth = r.str("auth", "basic")
    if auth not in ("basic", "digest"):
        raise ConfigError(f"{r.where}.auth: one of basic, digest, got {auth!r}")
    user, password = _credentials(r, "credentials_file", base_dir)
    ca = r.str("tls_ca_file")
    if ca is not None:
        if not url.startswith("https://"):
            raise ConfigError(f"{r.where}.tls_ca_file: only with an https:// url, got {url!r}")
        ca_path = Path(ca) if base_dir is None or Path(ca).is_absolute() else base_dir / ca
        if not ca_path.is_file():
            raise ConfigError(f"{r.where}.tls_ca_file: no such file {ca_path}")
        ca = str(ca_path)
    settings = Pts2Settings(
        url.rstrip("/"), _nozzle_map(r, "nozzles", 8), r.int("controller_pump", pump_id, low=1, high=50),
        user, password, auth, r.int("poll_interval_ms", 200, low=20, high=10_000),
        r.int("timeout_ms", 2_000, low=100, high=60_000), ca)
    r.done()
    return settings


def _azt2_settings(r: _Reader) -> Azt2Settings:
    """The ``[pumps.azt2]`` table: a pump whose hoses are АЗТ 2.0 channels on RS-485."""
    port = r.str("port", required=True)
    baudrate = r.int("baudrate", 4800, low=1200, high=19_200)
    if baudrate not in (1200, 2400, 4800, 9600, 19_200):
        raise ConfigError(f"{r.where}.baudrate: one of 1200, 2400, 4800, 9600, 19200, got {baudrate}")
    line_format = r.str("line_format", "7E2")
    if line_format not in ("7E2", "8N1"):
        raise ConfigError(f"{r.where}.line_format: 7E2 (the dispensers') or 8N1, got {line_format!r}")
    settings = Azt2Settings(port, _nozzle_map(r, "channels", 225), baudrate, line_format,
                            r.int("poll_interval_ms", 200, low=20, high=10_000),
                            r.int("answer_timeout_ms", 400, low=20, high=10_000),
                            r.int("retries", 3, low=1, high=10))
    r.done()
    return settings


def _check_shared_links(pumps: list[PumpConfig]) -> None:
    """Pumps sharing a controller need distinct pump numbers in it; pumps sharing an RS-485
    port need the same speed and format and distinct channels."""
    seen_pts: dict[tuple[str, int], int] = {}
    seen_ch: dict[tuple[str, int], int] = {}
    line: dict[str, tuple[int, str]] = {}
    for i, cfg in enumerate(pumps):
        d = cfg.driver
        if isinstance(d, Pts2Settings):
            other = seen_pts.setdefault((d.url, d.controller_pump), cfg.pump_id)
            if other != cfg.pump_id:
                raise ConfigError(f"pumps[{i}].pts2.controller_pump: pump {other} is already "
                                  f"controller pump {d.controller_pump} at {d.url}")
        elif isinstance(d, Azt2Settings):
            if line.setdefault(d.port, (d.baudrate, d.line_format)) != (d.baudrate, d.line_format):
                raise ConfigError(f"pumps[{i}].azt2.baudrate: {d.port} is already set up at {line[d.port]}")
            for ch, _ in d.channels:
                other = seen_ch.setdefault((d.port, ch), cfg.pump_id)
                if other != cfg.pump_id:
                    raise ConfigError(f"pumps[{i}].azt2.channels: channel {ch} on {d.port} is already pump {other}'s")


def _api_config(a: _Reader, base_dir: Path | None, pumps: list[PumpConfig], tills: list[TillConfig]) -> ApiConfig:
    """The ``[api]`` table: address, TLS, clients and their tokens' hashes, timeouts."""
    host = a.str("host", "127.0.0.1")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"api.host: expected an IP address, got {host!r}") from None
    if addr.is_unspecified:
        raise ConfigError(f"api.host: name the one address to listen on, not every address ({host})")
    port = a.int("port", 8780, high=65535)

    def path(key: str) -> Path | None:
        v = a.str(key)
        if v is None:
            return None
        p = Path(v)
        return base_dir / p if base_dir is not None and not p.is_absolute() else p

    cert, key, client_ca = path("tls_cert_file"), path("tls_key_file"), path("tls_client_ca_file")
    if (cert is None) != (key is None):
        raise ConfigError(f"api.{'tls_key_file' if key is None else 'tls_cert_file'}: "
                          "tls_cert_file and tls_key_file go together")
    if client_ca is not None and cert is None:
        raise ConfigError("api.tls_cert_file: required with api.tls_client_ca_file (mutual TLS needs the server's own)")
    simulation = a._get("simulation", False)
    if simulation is None:
        simulation = False
    if not isinstance(simulation, bool):
        raise ConfigError(f"api.simulation: expected true or false, got {simulation!r}")
    if not addr.is_loopback:
        for name, value in (("tls_cert_file", cert), ("tls_key_file", key), ("tls_client_ca_file", client_ca)):
            if value is None:
                raise ConfigError(f"api.{name}: required when api.host is not loopback ({host}): "
                                  "a LAN listener needs mutual TLS (tls_cert_file, tls_key_file, tls_client_ca_file)")
        if simulation:
            raise ConfigError(f"api.simulation: the simulation's endpoints are never served on a LAN ({host})")
    names = []
    for i, n in enumerate(a.list("host_names")):
        if not isinstance(n, str) or not n.isascii() or not HOST_NAME.fullmatch(n.lower().rstrip(".")):
            raise ConfigError(f"api.host_names[{i}]: expected a DNS name, got {n!r}")
        names.append(n.lower().rstrip("."))

    till_ids, pump_ids = {t.till_id for t in tills}, {p.pump_id for p in pumps}
    clients: list[ApiClient] = []
    for i, raw in enumerate(a.list("clients")):
        c = _Reader(raw, f"api.clients[{i}]")
        name = c.str("name", required=True)
        if not SITE_ID.match(name):
            raise ConfigError(f"api.clients[{i}].name: letters, digits, '.', '_', '-' (at most 64), got {name!r}")
        if any(o.name == name for o in clients):
            raise ConfigError(f"api.clients[{i}].name: client {name!r} is configured twice")
        role_text = c.str("role", required=True)
        try:
            role = ApiRole(role_text)
        except ValueError:
            raise ConfigError(f"api.clients[{i}].role: one of till, pump_console, operator, got {role_text!r}") from None
        digest = c.str("token_sha256", required=True).lower()
        if not TOKEN_SHA256.fullmatch(digest):
            raise ConfigError(f"api.clients[{i}].token_sha256: expected the 64 hex digits of the token's SHA-256")
        if any(o.token_sha256 == digest for o in clients):
            raise ConfigError(f"api.clients[{i}].token_sha256: the same token as another client; give each its own")
        till = c.str("till")
        if (role is ApiRole.TILL) != (till is not None):
            raise ConfigError(f"api.clients[{i}].till: " + ("required for role till" if till is None
                                                            else "only a till client names a till"))
        if till is not None and till not in till_ids:
            raise ConfigError(f"api.clients[{i}].till: no till {till!r} in [[tills]]")
        client_pumps = c.list("pumps")
        if client_pumps and role is not ApiRole.PUMP_CONSOLE:
            raise ConfigError(f"api.clients[{i}].pumps: only a pump_console client names pumps")
        for pid in client_pumps:
            if type(pid) is not int or pid not in pump_ids:
                raise ConfigError(f"api.clients[{i}].pumps: no pump {pid!r} in [[pumps]]")
        clients.append(ApiClient(name, role, digest, till, tuple(client_pumps)))
        c.done()
    api = ApiConfig(host, port, tuple(clients), tuple(names), cert, key, client_ca, simulation,
                    a.int("header_timeout_s", 10, low=1, high=300), a.int("body_timeout_s", 10, low=1, high=300))
    a.done()
    return api


def load_config(path: str | Path | None) -> SiteConfig:
    """The configuration in the TOML file ``path`` (None: the embedded simulated site)."""
    if path is None:
        return parse_config(DEFAULT_SITE_TOML, base_dir=Path.cwd())
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration {p}: {exc.strerror}") from None
    return parse_config(text, base_dir=p.resolve().parent)
