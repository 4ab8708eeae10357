"""Site configuration: the embedded default is valid, and every mistake names its setting."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from terminal.config import DEFAULT_SITE_TOML, ConfigError, load_config, parse_config


def test_embedded_default_is_valid():
    cfg = load_config(None)
    assert cfg.site_id == "SIM-077-001" and cfg.time_zone == "Europe/Moscow"
    assert [p.pump_id for p in cfg.pumps] == [1, 2] and [t.till_id for t in cfg.tills] == ["till-1", "till-2"]
    assert cfg.prices_kop_per_l["AI95"] == 6150 and cfg.api.host == "127.0.0.1"


def test_file_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "site.toml").write_text(DEFAULT_SITE_TOML)
    assert load_config(tmp_path / "site.toml").data_dir == tmp_path / "var" / "sim"


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the configuration"):
        load_config(tmp_path / "nope.toml")


CLIENT = ('port = 8780\n[[api.clients]]\nname = "t"\nrole = "{role}"\n'
          'token_sha256 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"\n{extra}\n')


@pytest.mark.parametrize("change, message", [
    (("id = \"SIM-077-001\"", "id = \"bad id!\""), "site.id"),
    (("time_zone = \"Europe/Moscow\"", "time_zone = \"Mars/Olympus\""), "site.time_zone: unknown time zone"),
    (("region = 1", "region = -1"), "site.region: expected a whole number"),
    (("AI95 = 6150", "AI95 = 61.50"), "prices.AI95: expected a whole number"),
    (("products = [\"AI92\", \"AI95\", \"DT\"]", "products = [\"AI92\", \"GAS\"]"), "pumps[0].products: 'GAS' has no price"),
    (("id = 2", "id = 1"), "pumps[1].id: pump 1 is configured twice"),
    (("reader = \"Virtual PCD 00 01\"", "raeder = \"x\""), "pumps[1].reader: missing"),
    (("host = \"127.0.0.1\"", "host = \"0.0.0.0\""), "api.host: name the one address to listen on"),
    (("host = \"127.0.0.1\"", "host = \"192.168.1.10\""), "api.tls_cert_file: required when api.host is not loopback"),
    (("host = \"127.0.0.1\"", "host = \"192.168.1.10\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\""),
     "api.tls_client_ca_file: required when api.host is not loopback (192.168.1.10): a LAN listener needs mutual TLS"),
    (("port = 8780", "port = 8780\nsimulation = \"yes\""), "api.simulation: expected true or false"),
    (("port = 8780", CLIENT.format(role="till", extra='till = "till-9"')), "api.clients[0].till: no till 'till-9'"),
    (("port = 8780", CLIENT.format(role="till", extra="")), "api.clients[0].till: required for role till"),
    (("port = 8780", CLIENT.format(role="boss", extra="")), "api.clients[0].role: one of till, pump_console, operator"),
    (("port = 8780", CLIENT.format(role="pump_console", extra="pumps = [7]")), "api.clients[0].pumps: no pump 7"),
    (("port = 8780", CLIENT.format(role="operator", extra="") + CLIENT.format(role="operator", extra="")[12:]),
     "api.clients[1].name: client 't' is configured twice"),
    (("port = 8780", CLIENT.format(role="operator", extra="").replace("a" * 64, "secret")),
     "api.clients[0].token_sha256: expected the 64 hex digits"),
    (("port = 8780", "port = 70000"), "api.port"),
    (("[api]", "[api]\ncolour = \"red\""), "api: unknown setting(s) colour"),
    (("id = \"till-2\"", "id = \"till-1\""), "tills[1].id: till 'till-1' is configured twice"),
])
def test_each_mistake_names_its_setting(change, message):
    old, new = change
    assert old in DEFAULT_SITE_TOML
    with pytest.raises(ConfigError) as err:
        parse_config(DEFAULT_SITE_TOML.replace(old, new, 1))
    assert message in str(err.value)


def test_not_toml_is_a_clear_error():
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[site\nid=")


def test_a_site_needs_lanes():
    text = DEFAULT_SITE_TOML.split("[[pumps]]")[0]
    with pytest.raises(ConfigError, match="at least one"):
        parse_config(text)


def test_broker_url_checked():
    with pytest.raises(ConfigError, match="broker.url"):
        parse_config(DEFAULT_SITE_TOML + "\n[broker]\nurl = \"http://x\"\n")
    with pytest.raises(ConfigError, match="keys.site_key_file: required with broker.url"):
        parse_config(DEFAULT_SITE_TOML + "\n[broker]\nurl = \"mqtt://127.0.0.1:1883\"\n")
    ok = DEFAULT_SITE_TOML + "\n[broker]\nurl = \"mqtt://127.0.0.1:1883\"\n[keys]\nsite_key_file = \"site.key\"\n"
    assert parse_config(ok).broker.url == "mqtt://127.0.0.1:1883"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_fuzzed_text_is_config_or_config_error(text):
    try:
        parse_config(text)
    except ConfigError:
        pass
