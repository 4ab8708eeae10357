"""Site configuration of real dispensers (terminal/config.py, ``dispenser = "pts2" | "azt2"``)
and the factory that builds their drivers (``hw.dispensers.factory``): validation naming
the field, the credentials file never shown, pumps sharing a controller or an RS-485 line,
and a configured pump driving the simulators for real.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hw.dispensers.azt2 import Azt2Pump
from hw.dispensers.factory import Azt2Settings, DispenserLinks, Pts2Settings
from hw.dispensers.pts2 import Pts2Pump
from hw.pump import Preset, PumpState
from hw.sim.azt2 import Azt2Simulator
from hw.sim.pts2 import Pts2Simulator
from terminal.config import ConfigError, parse_config
from tests.hw.conftest import PtyPair

HEAD = """
[site]
id = "S1"
time_zone = "Europe/Moscow"
region = 1
station_id = 7
[prices]
AI95 = 5499
DT = 6105
"""

PTS2 = """
[[pumps]]
id = 1
reader = "R0"
dispenser = "pts2"
[pumps.pts2]
url = "{url}"
credentials_file = "pts.cred"
auth = "digest"
nozzles = {{ 1 = "AI95", 2 = "DT" }}
poll_interval_ms = 20
"""

AZT2 = """
[[pumps]]
id = 2
reader = "R1"
dispenser = "azt2"
products = ["AI95"]
[pumps.azt2]
port = "{port}"
baudrate = 9600
line_format = "8N1"
channels = {{ 3 = "AI95" }}
poll_interval_ms = 20
answer_timeout_ms = 100
"""


def parse(text: str, tmp_path: Path) -> object:
    return parse_config(HEAD + text, base_dir=tmp_path)


@pytest.fixture
def cred(tmp_path: Path) -> Path:
    path = tmp_path / "pts.cred"
    path.write_text("edge:Sup3r-secret\n")
    return path


def test_both_drivers_configured(tmp_path: Path, cred: Path) -> None:
    cfg = parse_config(HEAD + PTS2.format(url="http://10.0.0.5/") + AZT2.format(port="/dev/ttyUSB0"),
                       base_dir=tmp_path)
    pts, azt = cfg.pumps
    assert pts.dispenser == "pts2" and pts.products == ("AI95", "DT")
    assert pts.driver == Pts2Settings("http://10.0.0.5", ((1, "AI95"), (2, "DT")), 1, "edge", "Sup3r-secret",
                                      "digest", 20, 2_000)
    assert "Sup3r-secret" not in repr(cfg)
    assert azt.driver == Azt2Settings("/dev/ttyUSB0", ((3, "AI95"),), 9600, "8N1", 20, 100, 3)
    links = DispenserLinks()
    assert isinstance(links.pump(1, pts.driver), Pts2Pump)
    assert isinstance(links.pump(2, azt.driver), Azt2Pump)


@pytest.mark.parametrize("edit, field", [
    (lambda t: t.replace('dispenser = "pts2"', 'dispenser = "gilbarco"'), "pumps[0].dispenser"),
    (lambda t: t.replace('url = "http://h"', 'url = "ftp://h"'), "pumps[0].pts2.url"),
    (lambda t: t.replace('auth = "digest"', 'auth = "ntlm"'), "pumps[0].pts2.auth"),
    (lambda t: t.replace('1 = "AI95", 2 = "DT"', '9 = "AI95"'), "pumps[0].pts2.nozzles"),
    (lambda t: t.replace('1 = "AI95", 2 = "DT"', '1 = "AI95", 2 = "AI95"'), "pumps[0].pts2.nozzles"),
    (lambda t: t.replace('2 = "DT"', '2 = "AI98"'), "pumps[0].pts2"),
    (lambda t: t.replace('credentials_file = "pts.cred"', 'credentials_file = "none.cred"'),
     "pumps[0].pts2.credentials_file"),
    (lambda t: t.replace("poll_interval_ms = 20", "poll_interval_ms = 1"), "pumps[0].pts2.poll_interval_ms"),
    (lambda t: t.replace("poll_interval_ms = 20", "pol_interval_ms = 20"), "pumps[0].pts2: unknown"),
    (lambda t: t.split("[pumps.pts2]")[0], "pumps[0].pts2: missing"),
])
def test_pts2_settings_are_validated_naming_the_field(tmp_path: Path, cred: Path, edit, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(edit(PTS2.format(url="http://h")), tmp_path)
    assert str(e.value).startswith(field), e.value
    assert "Sup3r-secret" not in str(e.value)


def test_a_bad_credentials_file_is_named_and_not_shown(tmp_path: Path) -> None:
    (tmp_path / "pts.cred").write_text("just-a-password-no-user\n")
    with pytest.raises(ConfigError, match="pumps\\[0\\].pts2.credentials_file: .* must hold one line") as e:
        parse(PTS2.format(url="http://h"), tmp_path)
    assert "just-a-password" not in str(e.value)


@pytest.mark.parametrize("edit, field", [
    (lambda t: t.replace("baudrate = 9600", "baudrate = 9601"), "pumps[0].azt2.baudrate"),
    (lambda t: t.replace('line_format = "8N1"', 'line_format = "7O1"'), "pumps[0].azt2.line_format"),
    (lambda t: t.replace('3 = "AI95"', '300 = "AI95"'), "pumps[0].azt2.channels"),
    (lambda t: t.replace('products = ["AI95"]', 'products = ["DT"]'), "pumps[0].products"),
    (lambda t: t.replace('port = "/dev/x"\n', ""), "pumps[0].azt2.port: missing"),
])
def test_azt2_settings_are_validated_naming_the_field(tmp_path: Path, edit, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(edit(AZT2.format(port="/dev/x")), tmp_path)
    assert str(e.value).startswith(field), e.value


def test_pumps_sharing_a_line_or_a_controller(tmp_path: Path, cred: Path) -> None:
    second = AZT2.format(port="/dev/x").replace("id = 2", "id = 3").replace('reader = "R1"', 'reader = "R2"')
    with pytest.raises(ConfigError, match="pumps\\[1\\].azt2.channels: channel 3 on /dev/x is already pump 2's"):
        parse(AZT2.format(port="/dev/x") + second, tmp_path)
    with pytest.raises(ConfigError, match="pumps\\[1\\].azt2.baudrate"):
        parse(AZT2.format(port="/dev/x") + second.replace("baudrate = 9600", "baudrate = 4800")
              .replace('3 = "AI95"', '4 = "AI95"'), tmp_path)
    other = PTS2.format(url="http://h").replace("id = 1", "id = 5").replace('reader = "R0"', 'reader = "R5"')
    with pytest.raises(ConfigError, match="pumps\\[1\\].pts2.controller_pump: pump 1 is already"):
        parse(PTS2.format(url="http://h") + other.replace("poll_interval_ms = 20", "controller_pump = 1"), tmp_path)
    cfg = parse(PTS2.format(url="http://h") + other, tmp_path)
    links = DispenserLinks()
    a, b = (links.pump(p.pump_id, p.driver) for p in cfg.pumps)  # type: ignore[attr-defined]
    assert isinstance(a, Pts2Pump) and isinstance(b, Pts2Pump) and a.controller is b.controller


def test_configured_pumps_drive_the_simulators(tmp_path: Path, cred: Path, pty_pair: PtyPair) -> None:
    async def scenario() -> None:
        pts = Pts2Simulator({1: {1: "AI95", 2: "DT"}}, tmp_path / "pts.json", username="edge",
                            password="Sup3r-secret", auth="digest", time_scale=500)
        await pts.start()
        assert pty_pair.master is not None
        azt = Azt2Simulator(pty_pair.master, [3], time_scale=500)
        azt.start()
        try:
            cfg = parse(PTS2.format(url=pts.url) + AZT2.format(port=pty_pair.path), tmp_path)
            links = DispenserLinks()
            for p in cfg.pumps:  # type: ignore[attr-defined]
                async with links.pump(p.pump_id, p.driver) as pump:
                    assert pump.state is PumpState.IDLE
                    await pump.authorize("AI95", 5_499, Preset.by_volume(1_000))
                    assert pump.state is PumpState.AUTHORIZED
                    await pump.cancel()
                    assert (await pump.read_totals()).volume_ml == 0
            assert azt.hoses[3].price == 5_499 and pts.requests > 0
        finally:
            azt.close()
            await pts.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_the_wiring_examples_in_operations_md_parse(tmp_path: Path) -> None:
    """docs/operations.md, "Wiring a real station": its TOML examples are a valid site."""
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = doc.split("## Wiring a real station", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 2
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "pts2.cred").write_text("edge:x\n")
    (tmp_path / "secrets" / "pts2-ca.pem").write_text("a CA certificate\n")
    cfg = parse_config(HEAD + blocks[0] + blocks[1].replace('reader = "..."', 'reader = "R9"'), base_dir=tmp_path)
    pts, azt = (p.driver for p in cfg.pumps)
    assert isinstance(pts, Pts2Settings) and pts.auth == "digest" and pts.username == "edge"
    assert pts.tls_ca_file == str(tmp_path / "secrets" / "pts2-ca.pem")
    assert isinstance(azt, Azt2Settings) and azt.line_format == "7E2" and azt.channels == ((1, "AI95"), (2, "DT"))


def test_https_to_the_controller_trusts_only_the_configured_ca(tmp_path: Path, cred: Path) -> None:
    import ssl

    from hw.pump import PumpOffline
    from tests.terminal.test_api_auth import Pki

    pki = Pki(tmp_path)
    cert, key = pki.issue("pts2", server=True)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)

    async def scenario() -> None:
        sim = Pts2Simulator({1: {1: "AI95", 2: "DT"}}, tmp_path / "pts.json", username="edge",
                            password="Sup3r-secret", auth="digest")
        await sim.start(ssl_context=server)
        try:
            assert sim.url.startswith("https://")
            text = PTS2.format(url=sim.url).replace("poll_interval_ms = 20",
                                                    f'poll_interval_ms = 20\ntls_ca_file = "{pki.ca_file}"')
            cfg = parse(text, tmp_path)
            async with DispenserLinks().pump(1, cfg.pumps[0].driver) as pump:  # type: ignore[attr-defined]
                assert pump.state is PumpState.IDLE
                assert (await pump.read_totals()).volume_ml == 0
            untrusted = parse(PTS2.format(url=sim.url), tmp_path)
            async with DispenserLinks().pump(1, untrusted.pumps[0].driver) as pump:  # type: ignore[attr-defined]
                assert pump.state is PumpState.OFFLINE
                with pytest.raises(PumpOffline):
                    await pump.authorize("AI95", 5_499, Preset.by_volume(1_000))
        finally:
            await sim.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))
    with pytest.raises(ConfigError, match="pumps\\[0\\].pts2.tls_ca_file: only with an https"):
        parse(PTS2.format(url="http://h").replace("auth =", f'tls_ca_file = "{pki.ca_file}"\nauth ='), tmp_path)
    with pytest.raises(ConfigError, match="pumps\\[0\\].pts2.tls_ca_file: no such file"):
        parse(PTS2.format(url="https://h").replace("auth =", 'tls_ca_file = "nope.pem"\nauth ='), tmp_path)
