"""The local API's clients for tests: one token per client, made fresh for each test run.

A till client per till (named as the till), a pump console for every pump (``console``) and
an operator (``operator``), as :func:`terminal.apiauth.simulation_clients` makes them;
``auth(path)`` is the header a test client sends to ``path`` (terminal.apiauth.simulation_token).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import replace
from typing import Any

from terminal.apiauth import client_toml, new_token, simulation_token, token_sha256
from terminal.config import ApiClient, ApiRole, SiteConfig

TOKENS = {name: new_token() for name in (*(f"till-{i}" for i in range(1, 9)), "console", "operator")}


def with_clients(cfg: SiteConfig) -> SiteConfig:
    """``cfg`` with the test clients of its tills and pumps, and the operator."""
    clients = [ApiClient(t.till_id, ApiRole.TILL, token_sha256(TOKENS[t.till_id]), t.till_id) for t in cfg.tills]
    if cfg.pumps:
        clients.append(ApiClient("console", ApiRole.PUMP_CONSOLE, token_sha256(TOKENS["console"])))
    clients.append(ApiClient("operator", ApiRole.OPERATOR, token_sha256(TOKENS["operator"])))
    return replace(cfg, api=replace(cfg.api, clients=tuple(clients)))


def clients_toml(tills: tuple[str, ...] = (), pumps: bool = False) -> str:
    """The same clients as ``[[api.clients]]`` entries, for a configuration file."""
    out = [client_toml(t, ApiRole.TILL, TOKENS[t], till=t) for t in tills]
    if pumps:
        out.append(client_toml("console", ApiRole.PUMP_CONSOLE, TOKENS["console"]))
    out.append(client_toml("operator", ApiRole.OPERATOR, TOKENS["operator"]))
    return "\n" + "\n".join(out)


def auth(path: str) -> dict[str, str]:
    """The Authorization header a test client sends to ``path`` (to a till that has no client:
    till-1's, as when one till asks about another)."""
    return {"Authorization": f"Bearer {simulation_token(TOKENS, path) or TOKENS['till-1']}"}


def call(port: int, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
    """One request to the daemon on 127.0.0.1:``port`` as the test client of ``path`` (with
    ``key`` as its Idempotency-Key): the status and the decoded JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Idempotency-Key", key)
    for name, value in auth(path).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
