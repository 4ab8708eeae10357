"""Who may talk to the daemon: bearer tokens and roles, the Host check, mutual TLS. A real
daemon over HTTP (and HTTPS) on loopback; the TLS certificates come from a throwaway CA made
here with ``cryptography``."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import ssl
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from terminal.apiauth import Principal, TokenTable, allowed, host_allowed, token_sha256
from terminal.config import (
    DEFAULT_SITE_TOML,
    ApiClient,
    ApiConfig,
    ApiRole,
    ConfigError,
    load_config,
    parse_config,
)
from terminal.daemon import Daemon
from terminal.replica import Replica

from .apitokens import TOKENS, auth, with_clients

T = 20
LINES = [{"sku": "A1", "category": "shoes", "amount_kop": 500_000}]


def site(tmp_path, **api):
    cfg = load_config(None)
    cfg = replace(cfg, data_dir=tmp_path, pumps=(), api=replace(cfg.api, port=0, **api))
    return with_clients(cfg)


async def started(cfg):
    d = Daemon(cfg, Replica.simulated(cfg, club_accounts=50, seed=3))
    await asyncio.wait_for(d.start(), T)
    return d


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def call(s, method, url, headers=None, body=None):
    async with s.request(method, url, headers=headers or {}, json=body) as r:
        return r.status, await r.json(), r.headers


# -- the rules, without I/O --------------------------------------------------------------------------

TILL1 = Principal("till-1", ApiRole.TILL, "till-1")
CONSOLE2 = Principal("forecourt", ApiRole.PUMP_CONSOLE, pumps=frozenset({2}))
OPERATOR = Principal("office", ApiRole.OPERATOR)


@pytest.mark.parametrize("who, method, route, params, ok", [
    (TILL1, "POST", "/v1/tills/{till}/sales", {"till": "till-1"}, True),
    (TILL1, "POST", "/v1/tills/{till}/sales", {"till": "till-2"}, False),
    (TILL1, "GET", "/v1/tills/{till}/sales/{sale}/quote", {"till": "till-2", "sale": "x"}, False),
    (TILL1, "GET", "/v1/lanes", {}, False),
    (TILL1, "GET", "/v1/journal", {}, False),
    (TILL1, "GET", "/v1/health", {}, True),
    (TILL1, "GET", "/v1/pumps", {}, False),
    (TILL1, "POST", "/v1/pumps/{pump}/authorize", {"pump": "1"}, False),
    (CONSOLE2, "POST", "/v1/pumps/{pump}/authorize", {"pump": "2"}, True),
    (CONSOLE2, "POST", "/v1/pumps/{pump}/authorize", {"pump": "1"}, False),
    (CONSOLE2, "GET", "/v1/pumps/{pump}", {"pump": "1"}, False),
    (CONSOLE2, "POST", "/v1/sim/pumps/{pump}/nozzle", {"pump": "2"}, True),
    (CONSOLE2, "POST", "/v1/tills/{till}/sales", {"till": "till-1"}, False),
    (CONSOLE2, "GET", "/v1/journal", {}, False),
    (OPERATOR, "GET", "/v1/journal", {}, True),
    (OPERATOR, "GET", "/v1/tills/{till}/sales/{sale}", {"till": "till-1", "sale": "x"}, True),
    (OPERATOR, "POST", "/v1/tills/{till}/sales", {"till": "till-1"}, False),
    (OPERATOR, "POST", "/v1/pumps/{pump}/stop", {"pump": "1"}, False),
    (OPERATOR, "GET", "/v1/pumps/{pump}", {"pump": "1"}, True),
    (OPERATOR, "POST", "/v1/sim/pumps/{pump}/knobs", {"pump": "1"}, True),
    (OPERATOR, "GET", "/v1/no/such/route", {}, False),
])
def test_role_rules(who, method, route, params, ok):
    assert allowed(who, method, route, params) is ok


def test_token_table_names_the_client_and_refuses_the_rest():
    t1, t2 = "a" * 43, "b" * 43
    table = TokenTable((ApiClient("till-1", ApiRole.TILL, token_sha256(t1), "till-1"),
                        ApiClient("office", ApiRole.OPERATOR, token_sha256(t2))))
    assert table.authenticate(f"Bearer {t1}").name == "till-1"
    assert table.authenticate(f"Bearer {t2}").role is ApiRole.OPERATOR
    for bad in (None, "", t1, f"Basic {t1}", f"Bearer {t1} ", f"Bearer {t1}x", f"bearer {t1}", "Bearer short",
                f"Bearer {'a' * 42}\u0430"):
        assert table.authenticate(bad) is None, bad


@pytest.mark.parametrize("value, ok", [
    ("127.0.0.1:8780", True), ("localhost:8780", True), ("LOCALHOST.", True), ("[::1]:8780", True),
    ("127.3.4.5", True), ("pos.example:8780", True), ("evil.example:8780", False), ("10.0.0.1", False),
    ("", False), (None, False), ("127.0.0.1:80x", False), ("[::1", False), ("locаlhost", False),
    ("127.0.0.1.evil.example", False),
])
def test_host_header_check(value, ok):
    assert host_allowed(value, ApiConfig(host_names=("pos.example",))) is ok


# -- tokens and roles over HTTP -------------------------------------------------------------------------

def test_no_token_or_an_unknown_one_is_401_and_no_token_is_logged(tmp_path, caplog):
    async def main():
        d = await started(site(tmp_path))
        base = f"http://127.0.0.1:{d.port}"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                for path in ("/v1/health", "/v1/lanes", "/v1/journal", "/v1/requests/abcdefgh1", "/v1/events",
                             "/v1/tills/till-1/sales/x", "/v1/pumps", "/v1/nothing/here"):
                    for headers in ({}, {"Authorization": "Bearer " + "x" * 43},
                                    {"Authorization": f"Basic {TOKENS['operator']}"}):
                        st, err, h = await call(s, "GET", base + path, headers)
                        assert st == 401 and err["error"]["code"] == "unauthorized", (path, headers)
                        assert h["WWW-Authenticate"].startswith("Bearer")
                st, err, _ = await call(s, "POST", base + "/v1/tills/till-1/sales",
                                        {"Idempotency-Key": "no-token-1"}, {"lines": LINES})
                assert st == 401
                async with s.get(base + "/openapi.json") as r:  # the description is public
                    assert r.status == 200 and (await r.json())["components"]["securitySchemes"]
                st, health, _ = await call(s, "GET", base + "/v1/health", bearer("operator"))
                assert st == 200 and health["journal"]["records"] == 0  # nothing was done
        finally:
            await d.stop()
    with caplog.at_level(logging.DEBUG):
        run(main())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "401 GET" in logged
    assert not any(token in logged for token in TOKENS.values())
    assert "x" * 43 not in logged


def test_each_role_reaches_only_its_own(tmp_path):
    async def main():
        d = await started(site(tmp_path))
        base = f"http://127.0.0.1:{d.port}"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                st, sale, _ = await call(s, "POST", base + "/v1/tills/till-1/sales",
                                         {"Idempotency-Key": "role-open-1"} | bearer("till-1"), {"lines": LINES})
                assert st == 201
                sid = sale["sale_id"]
                # till-2 may neither change nor read till-1's sale, nor learn what its request did
                for method, path in (("POST", "/v1/tills/till-1/sales"), ("GET", f"/v1/tills/till-1/sales/{sid}"),
                                     ("POST", f"/v1/tills/till-1/sales/{sid}/void")):
                    st, err, _ = await call(s, method, base + path, {"Idempotency-Key": "role-x-0001"}
                                            | bearer("till-2"), {"lines": LINES} if path.endswith("sales") else {})
                    assert st == 403 and err["error"]["code"] == "forbidden", (method, path, err)
                st, err, _ = await call(s, "GET", base + "/v1/requests/role-open-1", bearer("till-2"))
                assert st == 404
                st, got, _ = await call(s, "GET", base + "/v1/requests/role-open-1", bearer("till-1"))
                assert st == 200 and got["response"]["sale_id"] == sid
                # a till reads neither the journal nor the lanes; the operator reads, but changes nothing
                for path in ("/v1/journal", "/v1/lanes"):
                    assert (await call(s, "GET", base + path, bearer("till-1")))[0] == 403
                    assert (await call(s, "GET", base + path, bearer("operator")))[0] == 200
                st, view, _ = await call(s, "GET", base + f"/v1/tills/till-1/sales/{sid}", bearer("operator"))
                assert st == 200 and view["state"] == "open"
                st, err, _ = await call(s, "POST", base + f"/v1/tills/till-1/sales/{sid}/void",
                                        {"Idempotency-Key": "role-void-op"} | bearer("operator"), {})
                assert st == 403
                st, view, _ = await call(s, "GET", base + f"/v1/tills/till-1/sales/{sid}", bearer("till-1"))
                assert view["state"] == "open"
                # events: a till follows only its own lane
                async with s.get(base + "/v1/events?lanes=till-1", headers=bearer("till-2")) as r:
                    assert r.status == 403
                st, done, _ = await call(s, "POST", base + f"/v1/tills/till-1/sales/{sid}/void",
                                         {"Idempotency-Key": "role-void-1"} | bearer("till-1"), {})
                assert st == 200 and done["state"] == "voided"
        finally:
            await d.stop()
    run(main())


def test_a_till_stream_carries_only_its_own_lane(tmp_path):
    async def main():
        d = await started(site(tmp_path))
        base = f"http://127.0.0.1:{d.port}"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s, \
                    s.get(base + "/v1/events", headers=bearer("till-2")) as stream:
                await asyncio.wait_for(stream.content.readline(), T)  # the opening comment
                d.bus.publish("till.card_scanned", "till-1", card="29*******0011")
                d.bus.publish("replica.stop_list", "site", card="70**********0017", listed=True)
                d.bus.publish("till.card_scanned", "till-2", card="29*******0022")
                lines = []
                while not any("0022" in x for x in lines):
                    lines.append((await asyncio.wait_for(stream.content.readline(), T)).decode())
                assert not any("0011" in x or "0017" in x for x in lines), lines
        finally:
            await d.stop()
    run(main())


def test_a_foreign_host_header_is_refused_even_with_a_token(tmp_path):
    async def main():
        d = await started(site(tmp_path, host_names=("pos.example",)))
        base = f"http://127.0.0.1:{d.port}"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                for host, status in (("attacker.example", 400), (f"attacker.example:{d.port}", 400),
                                     ("127.0.0.1.nip.io", 400), (f"localhost:{d.port}", 200),
                                     (f"[::1]:{d.port}", 200), ("pos.example", 200)):
                    st, body, _ = await call(s, "GET", base + "/v1/health", bearer("operator") | {"Host": host})
                    assert st == status, (host, body)
                    if status == 400:
                        assert body["error"]["code"] == "bad_host"
                # the DNS-rebinding shape: a browser's POST with the attacker's name and no token
                st, body, _ = await call(s, "POST", base + "/v1/tills/till-1/sales",
                                         {"Host": "attacker.example", "Idempotency-Key": "rebind-0001"},
                                         {"lines": LINES})
                assert st == 400 and d.journal.counts().records == 0
        finally:
            await d.stop()
    run(main())


def test_simulation_endpoints_are_absent_from_a_site_that_is_not_a_simulation():
    """Without api.simulation the daemon registers no /v1/sim/ route (the pump routes need a
    reader, so this checks the route table; tests/terminal/test_api_pumps.py does it over HTTP)."""
    cfg = load_config(None)
    assert not cfg.api.simulation
    assert "simulation = true" not in DEFAULT_SITE_TOML


# -- TLS -------------------------------------------------------------------------------------------------

class Pki:
    """A throwaway CA, a server certificate for 127.0.0.1 and client certificates."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgepos test CA")])
        self.ca = self._cert(name, self.ca_key.public_key(), name, self.ca_key, ca=True)
        self.ca_file = self._write("ca.pem", self.ca)

    @staticmethod
    def _cert(subject, public_key, issuer, signer, *, ca=False, server=False):
        now = datetime.datetime.now(datetime.UTC)
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        elif not ca:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return b.sign(signer, hashes.SHA256())

    def _write(self, name: str, cert, key=None) -> Path:
        path = self.where / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            path.with_suffix(".key").write_bytes(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return path

    def issue(self, name: str, *, server: bool = False, self_signed: bool = False) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer, signer = (subject, key) if self_signed else (self.ca.subject, self.ca_key)
        cert = self._cert(subject, key.public_key(), issuer, signer, server=server)
        path = self._write(f"{name}.pem", cert, key)
        return path, path.with_suffix(".key")


def test_mutual_tls_lets_in_only_clients_of_the_site_ca_with_a_token(tmp_path):
    pki = Pki(tmp_path)
    server_cert, server_key = pki.issue("server", server=True)
    good_cert, good_key = pki.issue("till-1-device")
    rogue_cert, rogue_key = pki.issue("rogue", self_signed=True)

    def client_ctx(cert=None, key=None):
        ctx = ssl.create_default_context(cafile=str(pki.ca_file))
        if cert:
            ctx.load_cert_chain(cert, key)
        return ctx

    async def main():
        d = await started(site(tmp_path / "data", tls_cert_file=server_cert, tls_key_file=server_key,
                               tls_client_ca_file=pki.ca_file))
        base = f"https://127.0.0.1:{d.port}"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                async with s.get(base + "/v1/health", headers=bearer("operator"),
                                 ssl=client_ctx(good_cert, good_key)) as r:
                    assert r.status == 200
                async with s.get(base + "/v1/health", ssl=client_ctx(good_cert, good_key)) as r:
                    assert r.status == 401  # a device certificate alone is not a client: the token names it
                for ctx in (client_ctx(), client_ctx(rogue_cert, rogue_key)):
                    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
                        async with s.get(base + "/v1/health", headers=bearer("operator"), ssl=ctx) as r:
                            await r.read()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port
                    async with s.get(f"http://127.0.0.1:{d.port}/v1/health", headers=bearer("operator")) as r:
                        await r.read()
        finally:
            await d.stop()
    run(main())


def test_a_lan_address_needs_mutual_tls_and_says_which_setting_is_missing(tmp_path):
    lan = DEFAULT_SITE_TOML.replace('host = "127.0.0.1"', 'host = "192.168.7.20"')
    with pytest.raises(ConfigError) as err:
        parse_config(lan)
    assert str(err.value).startswith("api.tls_cert_file: required when api.host is not loopback (192.168.7.20)")
    assert "\n" not in str(err.value)
    tls = lan.replace("port = 8780", 'port = 8780\ntls_cert_file = "s.pem"\ntls_key_file = "s.key"')
    with pytest.raises(ConfigError, match="^api.tls_client_ca_file: required when api.host is not loopback"):
        parse_config(tls)
    ok = parse_config(tls.replace("port = 8780", 'port = 8780\ntls_client_ca_file = "ca.pem"'), base_dir=tmp_path)
    assert ok.api.host == "192.168.7.20" and ok.api.tls_client_ca_file == tmp_path / "ca.pem"
    with pytest.raises(ConfigError, match="^api.simulation: the simulation's endpoints are never served on a LAN"):
        parse_config(tls.replace("port = 8780", 'port = 8780\ntls_client_ca_file = "ca.pem"\nsimulation = true'))


def test_tls_files_that_cannot_be_loaded_stop_the_start_with_one_line(tmp_path):
    async def main():
        cfg = site(tmp_path, tls_cert_file=tmp_path / "missing.pem", tls_key_file=tmp_path / "missing.key")
        d = Daemon(cfg, Replica.simulated(cfg, club_accounts=10, seed=3))
        try:
            with pytest.raises(ConfigError, match="^api.tls_cert_file: cannot load the TLS files") as err:
                await d.start()
            assert "\n" not in str(err.value)
        finally:
            await d.stop()
    run(main())


def test_the_test_clients_helper_matches_the_paths():
    assert auth("/v1/tills/till-2/sales")["Authorization"] == f"Bearer {TOKENS['till-2']}"
    assert auth("/v1/pumps/1")["Authorization"] == f"Bearer {TOKENS['console']}"
    assert auth("/v1/journal")["Authorization"] == f"Bearer {TOKENS['operator']}"


@pytest.mark.parametrize("argv, role", [(["till", "till-2", "till-2"], ApiRole.TILL),
                                        (["pump_console", "forecourt", "1", "2"], ApiRole.PUMP_CONSOLE),
                                        (["operator", "office"], ApiRole.OPERATOR)])
def test_the_token_command_prints_a_token_once_and_an_entry_that_accepts_it(capsys, argv, role):
    from terminal.apiauth import _main

    assert _main(argv) == 0
    out, err = capsys.readouterr()
    token = err.rsplit(": ", 1)[1].strip()
    assert token not in out  # the configuration gets the hash only
    cfg = parse_config(DEFAULT_SITE_TOML + "\n" + out)
    client, = cfg.api.clients
    assert client.role is role and client.name == argv[1]
    assert TokenTable(cfg.api.clients).authenticate(f"Bearer {token}").name == argv[1]


def test_the_token_command_refuses_a_wrong_call(capsys):
    from terminal.apiauth import _main

    assert _main(["till", "till-1"]) == 2 and _main(["boss", "x"]) == 2 and _main(["pump_console", "c", "one"]) == 2
    assert "usage" in capsys.readouterr().err
