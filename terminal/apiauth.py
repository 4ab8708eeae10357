"""Who may talk to the local API, and about what: bearer tokens, roles, the Host check, TLS.

Each client (a till, a pump console, an operator) has its own bearer token; the site
configuration keeps only the token's SHA-256 (``[[api.clients]]``, terminal/config.py). A
presented token is hashed and compared with every configured hash in constant time. A role
scopes what the token reaches (:func:`allowed`): a till only its own till's endpoints, a pump
console only its pumps', an operator reads everything and changes nothing. The Host header
must name loopback, the listen address or a configured ``api.host_names`` entry, so a web
page cannot reach the daemon by DNS rebinding. A LAN listener needs mutual TLS
(:func:`server_ssl_context`). No token is ever logged. Documented in docs/local-api.md.

``python -m terminal.apiauth ROLE NAME [TILL | PUMP...]`` prints a new token and the
``[[api.clients]]`` entry that holds its hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import re
import secrets
import ssl
import sys
from dataclasses import dataclass

from .config import ApiClient, ApiConfig, ApiRole, SiteConfig

__all__ = [
    "Principal",
    "TokenTable",
    "allowed",
    "client_lanes",
    "client_toml",
    "host_allowed",
    "new_token",
    "server_ssl_context",
    "simulation_clients",
    "simulation_token",
    "token_sha256",
]

BEARER = re.compile(r"Bearer ([A-Za-z0-9._~+/-]{16,512}=*)", re.ASCII)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated client: its configured name, role and scope."""

    name: str
    role: ApiRole
    till: str | None = None
    pumps: frozenset[int] | None = None  #: a pump console's pumps; None: every pump

    def may_use_till(self, till: str) -> bool:
        """May this client change ``till``'s sales (open, card, commit, void, return, top up)?"""
        return self.role is ApiRole.TILL and self.till == till

    def may_use_pump(self, pump: int) -> bool:
        """May this client drive ``pump`` (PIN, authorize, void, stop, reset)?"""
        return self.role is ApiRole.PUMP_CONSOLE and (self.pumps is None or pump in self.pumps)

    def may_see_lane(self, lane: str) -> bool:
        """May this client read about ``lane`` (its events, its requests' answers)?"""
        if self.role is ApiRole.OPERATOR:
            return True
        if self.role is ApiRole.TILL:
            return lane == self.till
        if lane.startswith("pump-") and lane[5:].isascii() and lane[5:].isdigit():
            return self.pumps is None or int(lane[5:]) in self.pumps
        return False


def token_sha256(token: str) -> str:
    """The hex SHA-256 of a token, as ``token_sha256`` in the site configuration keeps it."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def new_token() -> str:
    """A fresh bearer token: 256 random bits, URL-safe text."""
    return secrets.token_urlsafe(32)


class TokenTable:
    """The configured clients by their tokens' hashes."""

    def __init__(self, clients: tuple[ApiClient, ...]) -> None:
        self._entries = [(bytes.fromhex(c.token_sha256),
                          Principal(c.name, c.role, c.till, frozenset(c.pumps) if c.pumps else None)) for c in clients]

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The client whose token the ``Authorization`` header carries, or None. Every hash is
        compared (no early exit), each in constant time."""
        if authorization is None:
            return None
        m = BEARER.fullmatch(authorization)
        if m is None:
            return None
        digest = hashlib.sha256(m.group(1).encode("ascii")).digest()
        found = None
        for expected, principal in self._entries:
            if hmac.compare_digest(digest, expected):
                found = principal
        return found


def allowed(principal: Principal, method: str, route: str, params: dict[str, str]) -> bool:
    """May ``principal`` call ``method route`` (the route's pattern, e.g.
    ``/v1/tills/{till}/sales``) with these path parameters? Lane-scoped reads (events,
    request status, the pump list) are filtered by their handlers with ``may_see_lane``."""
    operator = principal.role is ApiRole.OPERATOR
    if route in ("/v1/health", "/v1/events", "/v1/requests/{key}"):
        return True
    if route in ("/v1/lanes", "/v1/journal"):
        return operator
    if route.startswith("/v1/tills/{till}/"):
        till = params.get("till", "")
        return principal.may_use_till(till) or (operator and method == "GET")
    if route == "/v1/pumps":
        return operator or principal.role is ApiRole.PUMP_CONSOLE
    if route.startswith(("/v1/pumps/{pump}", "/v1/sim/pumps/{pump}")):
        raw = params.get("pump", "")
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 3):
            return operator or principal.role is ApiRole.PUMP_CONSOLE  # the handler answers 404
        reads = method == "GET" or route.startswith("/v1/sim/")  # the simulation's hands: not the site's
        return principal.may_use_pump(int(raw)) or (operator and reads)
    return False


def client_lanes(principal: Principal, lanes: list[str]) -> list[str]:
    """The lanes among ``lanes`` this client may read about."""
    return [lane for lane in lanes if principal.may_see_lane(lane)]


def _host_name(value: str) -> str | None:
    """The name of a Host header value (``name[:port]`` or ``[v6]:port``), lower case."""
    if not value.isascii() or len(value) > 260:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1:] and not re.fullmatch(r":[0-9]{1,5}", value[end + 1:])):
            return None
        return value[1:end].lower()
    name, _, port = value.partition(":")
    if port and not re.fullmatch(r"[0-9]{1,5}", port):
        return None
    return name.lower().rstrip(".")


def host_allowed(value: str | None, api: ApiConfig) -> bool:
    """Does the Host header ``value`` name this daemon: ``localhost``, a loopback address,
    the listen address or one of ``api.host_names``?"""
    if value is None:
        return False
    name = _host_name(value)
    if not name:
        return False
    if name in ("localhost", api.host.lower()) or name in api.host_names:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def server_ssl_context(api: ApiConfig) -> ssl.SSLContext | None:
    """The TLS context of the listener (None: plain HTTP, loopback only). With a client CA,
    a client must present a certificate that CA signed (mutual TLS)."""
    if api.tls_cert_file is None or api.tls_key_file is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(api.tls_cert_file, api.tls_key_file)
    if api.tls_client_ca_file is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(api.tls_client_ca_file))
    return ctx


def simulation_clients(config: SiteConfig) -> tuple[SiteConfig, dict[str, str]]:
    """``config`` with fresh clients for a simulation or a test: one per till (named as the
    till), one pump console for every pump (``console``) and an operator (``operator``);
    and their tokens by client name. The tokens live only in this process."""
    tokens: dict[str, str] = {}
    clients = []

    def add(name: str, role: ApiRole, till: str | None = None) -> None:
        tokens[name] = new_token()
        clients.append(ApiClient(name, role, token_sha256(tokens[name]), till))

    for t in config.tills:
        add(t.till_id, ApiRole.TILL, t.till_id)
    if config.pumps:
        add("console", ApiRole.PUMP_CONSOLE)
    add("operator", ApiRole.OPERATOR)
    return dataclasses.replace(config, api=dataclasses.replace(config.api, clients=tuple(clients))), tokens


def simulation_token(tokens: dict[str, str], path: str) -> str | None:
    """Which of :func:`simulation_clients`' tokens a simulated client sends to ``path``: the
    till's for its till, the pump console's for the pumps, the operator's for the rest."""
    parts = path.split("/")
    if path.startswith("/v1/tills/") and len(parts) > 3:
        return tokens.get(parts[3])
    if path.startswith(("/v1/pumps", "/v1/sim/")):
        return tokens.get("console")
    return tokens.get("operator")


def client_toml(name: str, role: ApiRole, token: str, till: str | None = None, pumps: tuple[int, ...] = ()) -> str:
    """The ``[[api.clients]]`` entry of the site configuration for a client and its token."""
    entry = ["[[api.clients]]", f'name = "{name}"', f'role = "{role.value}"', f'token_sha256 = "{token_sha256(token)}"']
    if till is not None:
        entry.append(f'till = "{till}"')
    if pumps:
        entry.append(f"pumps = [{', '.join(map(str, pumps))}]")
    return "\n".join(entry) + "\n"


def _main(argv: list[str]) -> int:
    usage = ("usage: python -m terminal.apiauth till NAME TILL | pump_console NAME [PUMP...] | operator NAME\n"
             "prints a new token (give it to the client) and the [[api.clients]] entry for the site configuration")
    if len(argv) < 2 or argv[0] not in {r.value for r in ApiRole}:
        print(usage, file=sys.stderr)
        return 2
    role, name, rest = ApiRole(argv[0]), argv[1], argv[2:]
    if (role is ApiRole.TILL and len(rest) != 1) or (role is ApiRole.OPERATOR and rest) or \
            (role is ApiRole.PUMP_CONSOLE and not all(p.isascii() and p.isdigit() for p in rest)):
        print(usage, file=sys.stderr)
        return 2
    token = new_token()
    print(f"token (give it to {name}; it is shown once and not stored): {token}", file=sys.stderr)
    print(client_toml(name, role, token, rest[0] if role is ApiRole.TILL else None,
                      tuple(int(p) for p in rest) if role is ApiRole.PUMP_CONSOLE else ()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
