"""The site configuration: one TOML file per site, validated at start with clear errors.

A site is a filling station, a store, or both: pumps (each with its card reader and
dispenser) and tills (each with its scanner), the products it sells at which prices, the
local API's address, and the broker and key settings the sync client uses. Every error names
the setting (``pumps[2].reader``) and what was wrong with the value. ``DEFAULT_SITE_TOML``
is the embedded configuration the simulated site runs on.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authz.localtime import zone
from authz.errors import ModelError

SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PRODUCT_CODE = re.compile(r"^[A-Z0-9_]{1,16}$")


class ConfigError(ValueError):
    """The site configuration is invalid: the message names the setting and the value."""


@dataclass(frozen=True, slots=True)
class PumpConfig:
    """A pump: its number on the forecourt, card reader, dispenser driver and nozzles."""

    pump_id: int
    reader: str
    dispenser: str = "sim"
    products: tuple[str, ...] = ()
    flow_ml_per_min: int = 40_000


@dataclass(frozen=True, slots=True)
class TillConfig:
    """A till lane and its barcode scanner's serial port and framing."""

    till_id: str
    scanner_port: str | None = None
    scanner_suffix: str = "CR"
    scanner_baudrate: int = 9600
    offline_points_allowance: int = 3_000


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """Where the local API listens: loopback only."""

    host: str = "127.0.0.1"
    port: int = 8780


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
        self.table, self.where, self.used = table, where, set()

    def _get(self, key: str, required: bool) -> Any:
        self.used.add(key)
        if key not in self.table:
            if required:
                raise ConfigError(f"{self.where}.{key}: missing")
            return None
        return self.table[key]

    def str(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        """A text setting."""
        v = self._get(key, required)
        if v is None:
            return default
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"{self.where}.{key}: expected non-empty text, got {v!r}")
        return v

    def int(self, key: str, default: int | None = None, *, required: bool = False, low: int = 0,
            high: int = 2**31 - 1) -> int | None:
        """A whole-number setting within ``low..high``."""
        v = self._get(key, required)
        if v is None:
            return default
        if type(v) is not int or not low <= v <= high:
            raise ConfigError(f"{self.where}.{key}: expected a whole number in {low}..{high}, got {v!r}")
        return v

    def list(self, key: str) -> list:
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
        if dispenser != "sim":
            raise ConfigError(f"pumps[{i}].dispenser: only 'sim' is supported yet, got {dispenser!r}")
        pumps.append(PumpConfig(pid, p.str("reader", required=True), dispenser, products,
                                p.int("flow_ml_per_min", 40_000, low=1_000, high=500_000)))
        p.done()
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

    a = _Reader(root._get("api", False) or {}, "api")
    host = a.str("host", "127.0.0.1")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ConfigError(f"api.host: expected an IP address, got {host!r}") from None
    if not loopback:
        raise ConfigError(f"api.host: the local API listens on loopback only, got {host!r}")
    api = ApiConfig(host, a.int("port", 8780, high=65535))
    a.done()

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
