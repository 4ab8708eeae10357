"""The Mosquitto set-up of terminal.broker: no QoS 1 message dropped (where the default
configuration drops past 1000), persistence across a restart, hashed credentials, the
generated ACL, the generator script and its checked-in examples, the embedded broker."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest

from terminal.broker import (BrokerError, MosquittoBroker, MosquittoSettings, acl_text, embedded_broker, free_port,
                             mosquitto_conf)
from terminal.journal import Journal
from terminal.sync import SyncClient, SyncSettings
from wire import site_publish_topics

from .conftest import PASSWORDS, SITE_A, SITE_B, _need_mosquitto, fill, run
from .standin import StandInHost

ROOT = Path(__file__).resolve().parents[2]
N = 3000


async def queued_for_offline_session(host: str, port: int, **auth) -> int:
    """Subscribe with a persistent session, go away, publish N QoS 1 messages, come back:
    how many arrive."""
    async with aiomqtt.Client(host, port, identifier="offline-sub", clean_session=False, **auth) as c:
        await c.subscribe("edgepos/v1/sites/SITE-A/acks", qos=1)
    async with aiomqtt.Client(host, port, identifier="pub", **auth) as p:
        for i in range(0, N, 100):
            await asyncio.gather(*(p.publish("edgepos/v1/sites/SITE-A/acks", b"%d" % j, qos=1)
                                   for j in range(i, i + 100)))
    got: set[int] = set()
    async with aiomqtt.Client(host, port, identifier="offline-sub", clean_session=False, **auth) as c:
        try:
            async with asyncio.timeout(3):
                async for m in c.messages:
                    got.add(int(m.payload))
                    if len(got) == N:
                        break
        except TimeoutError:
            pass  # what was dropped never comes
    return len(got)


def test_no_qos1_message_is_dropped_where_the_default_drops_past_1000(tmp_path, broker):
    _need_mosquitto()
    default = tmp_path / "default"
    default.mkdir()
    port = free_port()
    (default / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(default / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        dropped_by_default = run(queued_for_offline_session("127.0.0.1", port), 60)
    finally:
        proc.kill()
        proc.wait(10)
    ours = run(queued_for_offline_session(broker.host, broker.port, username="host", password=PASSWORDS["host"]), 60)
    assert dropped_by_default == 1000  # Mosquitto's max_queued_messages default, silently
    assert ours == N


def test_queued_and_retained_messages_survive_a_broker_restart(broker):
    auth = dict(username="host", password=PASSWORDS["host"])

    async def before():
        async with aiomqtt.Client(broker.host, broker.port, identifier="offline-sub", clean_session=False, **auth) as c:
            await c.subscribe("edgepos/v1/sites/SITE-A/acks", qos=1)
        async with aiomqtt.Client(broker.host, broker.port, identifier="pub", **auth) as p:
            for i in range(50):
                await p.publish("edgepos/v1/sites/SITE-A/acks", b"%d" % i, qos=1)
            await p.publish("edgepos/v1/sites/SITE-A/presence", b"retained", qos=1, retain=True)

    async def after():
        got = set()
        async with aiomqtt.Client(broker.host, broker.port, identifier="offline-sub", clean_session=False, **auth) as c:
            with_retained = None
            await c.subscribe("edgepos/v1/sites/SITE-A/presence", qos=1)
            async with asyncio.timeout(5):
                async for m in c.messages:
                    if m.topic.value.endswith("presence"):
                        with_retained = m.payload
                    else:
                        got.add(int(m.payload))
                    if len(got) == 50 and with_retained:
                        break
        return got, with_retained

    run(before())
    broker.restart()  # SIGTERM: mosquitto saves its persistence file
    got, retained = run(after())
    assert got == set(range(50)) and retained == b"retained"


def test_credentials_are_hashed_and_checked(broker):
    text = Path(broker.settings.password_file).read_text()
    assert all(pw not in text for pw in PASSWORDS.values()) and "$7$" in text
    assert stat.S_IMODE(Path(broker.settings.password_file).stat().st_mode) == 0o600

    async def connect(**auth):
        async with aiomqtt.Client(broker.host, broker.port, timeout=5, **auth):
            return True

    assert run(connect(username=SITE_A, password=PASSWORDS[SITE_A]))
    for auth in ({"username": SITE_A, "password": "wrong"}, {"username": SITE_B, "password": PASSWORDS[SITE_A]}, {}):
        with pytest.raises(aiomqtt.MqttError):
            run(connect(**auth))


def test_acl_is_generated_from_the_wire_contract():
    text = acl_text([SITE_A, SITE_B])
    for site in (SITE_A, SITE_B):
        block = text.split(f"user {site}\n")[1].split("\n\n")[0].splitlines()
        assert [line.split()[2] for line in block if line.startswith("topic write")] == list(site_publish_topics(site))
        assert f"topic read edgepos/v1/sites/{site}/acks" in block
    assert "user host\ntopic readwrite edgepos/v1/#" in text
    for bad in ("+", "a/b", "#", "", "host"):
        with pytest.raises(BrokerError):
            acl_text([bad])


def test_config_refuses_contradictions():
    with pytest.raises(BrokerError, match="no listener"):
        mosquitto_conf(MosquittoSettings(port=None, allow_anonymous=True))
    with pytest.raises(BrokerError, match="TLS"):
        mosquitto_conf(MosquittoSettings(port=None, tls_port=8883, allow_anonymous=True))
    with pytest.raises(BrokerError, match="password file"):
        mosquitto_conf(MosquittoSettings(port=1883))
    conf = mosquitto_conf(MosquittoSettings(port=1883, allow_anonymous=True))
    assert "max_queued_messages 0\n" in conf and "persistence false" in conf


def test_the_checked_in_examples_match_the_generator():
    spec = importlib.util.spec_from_file_location("make_examples", ROOT / "scripts/mosquitto/make_examples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, text in mod.examples().items():
        assert (ROOT / "scripts/mosquitto" / name).read_text() == text, \
            f"scripts/mosquitto/{name} drifted: run python scripts/mosquitto/make_examples.py"


def test_the_generator_makes_a_broker_that_starts_and_keeps_passwords_on_rerun(tmp_path, keys, journal_path):
    _need_mosquitto()
    out = tmp_path / "etc"
    port = free_port()
    cmd = [sys.executable, str(ROOT / "scripts/mosquitto/generate.py"), "--out", str(out), "--port", str(port),
           "--sites", f"{SITE_A},{SITE_B}"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    pw_a = (out / "credentials" / SITE_A).read_text()
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    assert (out / "credentials" / SITE_A).read_text() == pw_a
    assert stat.S_IMODE((out / "credentials" / SITE_A).stat().st_mode) == 0o600
    proc = subprocess.Popen(["mosquitto", "-c", str(out / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        async def scenario():
            for _ in range(100):
                try:
                    await asyncio.open_connection("127.0.0.1", port)
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            with Journal.open(journal_path, SITE_A) as journal:
                await fill(journal, 100)
                host = StandInHost("127.0.0.1", port, keys.host_side(), username="host",
                                   password=(out / "credentials" / "host").read_text().strip())
                async with host:
                    from terminal.config import BrokerConfig
                    from terminal.sync import settings_from_config
                    s = settings_from_config(BrokerConfig(f"mqtt://127.0.0.1:{port}", SITE_A,
                                                          str(out / "credentials" / SITE_A)), poll_interval_s=0.05)
                    async with SyncClient(journal, keys.site(), s) as sync:
                        await sync.wait_flushed(20)
                    assert len(host.ledger) == 100
        run(scenario())
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_embedded_broker(tmp_path, keys, journal_path):
    _need_mosquitto()
    b = embedded_broker(tmp_path / "data")
    with b:
        assert b.running and b.url.startswith("mqtt://127.0.0.1:")
        conf = b.conf_path.read_text()
        assert "max_queued_messages 0" in conf and "persistence true" in conf and "listener" in conf
        assert f"listener {b.port} 127.0.0.1" in conf  # loopback only: anonymous reaches nobody else

        async def scenario():
            with Journal.open(journal_path, SITE_A) as journal:
                await fill(journal, 100)
                async with StandInHost(b.host, b.port, keys.host_side()) as host:
                    async with SyncClient(journal, keys.site(), SyncSettings.from_url(b.url, poll_interval_s=0.05)) as sync:
                        await sync.wait_flushed(20)
                    assert len(host.ledger) == 100
        run(scenario())
        b.restart()
        assert b.running
    assert not b.running
    with pytest.raises(BrokerError, match="mosquitto exited"):
        MosquittoBroker(MosquittoSettings(port=b.port, allow_anonymous=True, bind="203.0.113.1"), tmp_path / "x").start()
