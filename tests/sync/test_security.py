"""What the sync must refuse: forged and malformed payloads on the ack and replica topics
(decode refuses them; nothing changes), a site publishing on another site's topics (the
broker's ACL drops it), and TLS when configured. The stand-in host stands in for host/."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from pathlib import Path

import aiomqtt
import msgpack
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from terminal.broker import MosquittoBroker, MosquittoSettings, TlsFiles, free_port, write_acl_file, write_password_file
from terminal.journal import Journal
from terminal.sync import SyncClient, SyncSettings
from wire import (Ack, Batch, ReplicaDelta, SiteKeys, StopListEntry, Table, WireRecord, acks_topic, batches_topic,
                  deltas_topic, encode, new_key, new_replica_signing_key, presence_topic)

from .conftest import PASSWORDS, SITE_A, SITE_B, _need_mosquitto, fill, records, run
from .standin import StandInHost
from .test_flow import host_for, settings


def test_forged_and_malformed_acks_and_replica_messages_change_nothing(broker, keys, journal_path):
    applied = []

    async def scenario():
        with Journal.open(journal_path, SITE_A) as journal:
            await fill(journal, 300)
            async with host_for(broker, keys, acking=False) as host:
                sync = SyncClient(journal, keys.site(), settings(broker, max_batch_records=100, ack_timeout_s=60),
                                  on_replica=applied.append, replica_versions={t: 1 for t in Table})
                async with sync:
                    await host.wait_until(lambda: len(host.settled[SITE_A]) == 3, 10, "three batches")
                    real = encode(Ack(SITE_A, 3), keys.host_side())
                    ack_topic = acks_topic(SITE_A)
                    delta = ReplicaDelta(Table.STOP_LIST, 1, 2, (StopListEntry("1234567890", 1),))
                    wrong_host = SiteKeys({SITE_A: keys.site_a}, replica_signing=new_replica_signing_key())
                    forged = [
                        (ack_topic, b""),  # empty
                        (ack_topic, b"\x00\x01garbage"),  # not MessagePack
                        (ack_topic, real[:-1]),  # truncated
                        (ack_topic, real[:-1] + bytes([real[-1] ^ 1])),  # one bit of the mac flipped
                        (ack_topic, real + b"\x00"),  # trailing byte
                        (ack_topic, encode(Ack(SITE_A, 3), SiteKeys({SITE_A: new_key()}))),  # another key
                        (ack_topic, encode(Ack(SITE_B, 3), keys.host_side())),  # site B's ack on A's topic
                        (ack_topic, msgpack.packb([2, "ack", SITE_A, {"up_to_seq": 3}, b"\0" * 32])),  # version 2
                        (ack_topic, encode(Batch(SITE_A, 1, (), 0), keys.host_side())),  # a batch replayed as ack
                        (deltas_topic(Table.STOP_LIST), encode(delta, wrong_host)),  # not the host key
                        (deltas_topic(Table.PRODUCTS), encode(delta, keys.host_side())),  # another table's topic
                        (deltas_topic(Table.STOP_LIST), b"\x95\x01\xa5delta\xc0\x80\xc4\x20" + b"\0" * 32),
                    ]
                    for topic, payload in forged:
                        await host.publish_raw(topic, payload)
                    st = await sync.wait_until(lambda s: s.rejected_messages >= len(forged), 10)
                    assert st.rejected_messages == len(forged)
                    assert st.acked_batch == 0 and journal.counts().unacked == 300  # nothing marked
                    assert applied == [] and st.replica_versions[Table.STOP_LIST] == 1
                    assert st.connected  # and the client goes on
                    await host.publish_raw(ack_topic, real)
                    await sync.wait_until(lambda s: s.acked_batch == 3, 10)
                    assert journal.counts().unacked == 0
    run(scenario())


def test_a_site_cannot_publish_on_another_sites_topics(broker, keys):
    """Site A's credentials on site B's topics (and on the host's): the broker's ACL refuses
    it (Mosquitto 2.0 drops the publish and disconnects the client), and the host never
    receives it. The control message on A's own topic proves the path works, so the
    silence is the ACL's doing."""
    b_batch = encode(Batch(SITE_B, 1, tuple(WireRecord.from_record(r) for r in records(SITE_B, 2)), 0),
                     SiteKeys({SITE_B: keys.site_b}))  # even with B's valid signature, were it stolen
    forbidden = [(batches_topic(SITE_B), b_batch, False), (presence_topic(SITE_B), b"x", True),
                 (acks_topic(SITE_A), encode(Ack(SITE_A, 99), keys.host_side()), False),
                 (deltas_topic(Table.STOP_LIST), b"x", False), ("edgepos/v1/sites/SITE-B/other", b"x", False)]

    def as_site_a(name: str) -> aiomqtt.Client:
        return aiomqtt.Client(broker.host, broker.port, username=SITE_A, password=PASSWORDS[SITE_A],
                              identifier=name, protocol=aiomqtt.ProtocolVersion.V5, timeout=3)

    async def scenario():
        async with host_for(broker, keys) as host:
            refused = 0
            for i, (topic, payload, retain) in enumerate(forbidden):
                try:
                    async with as_site_a(f"intruder-{i}") as a:
                        await a.publish(topic, payload, qos=1, retain=retain)
                        await asyncio.sleep(0.2)
                        await a.publish(topic, payload, qos=1, retain=retain)  # the broker hung up by now
                except aiomqtt.MqttError:
                    refused += 1
            assert refused == len(forbidden)
            a_own = encode(Batch(SITE_A, 1, tuple(WireRecord.from_record(r) for r in records(SITE_A, 2)), 0),
                           SiteKeys({SITE_A: keys.site_a}))
            async with as_site_a("site-a") as a:
                await a.publish(batches_topic(SITE_A), a_own, qos=1)  # the control
                await host.wait_until(lambda: len(host.received) == 1, 10, "the control batch")
                # a site may not read another site's acks either
                got = []
                with contextlib.suppress(aiomqtt.MqttError):
                    await a.subscribe(acks_topic(SITE_B), qos=1)
                    await host.ack_now(SITE_B)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            async for m in a.messages:
                                got.append(m)
            await asyncio.sleep(0.3)
            assert [r.batch.site_id for r in host.received] == [SITE_A]
            assert host.refused == [] and SITE_B not in host.presence and host.other == [] and got == []
    run(scenario())


def _tls_files(d: Path) -> TlsFiles:
    """A self-signed CA and a server certificate for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgepos test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broker")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    d.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key")
    files.cafile.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    files.keyfile.chmod(0o600)
    return files


def test_sync_over_tls(tmp_path, keys, journal_path):
    _need_mosquitto()
    work = tmp_path / "tls-broker"
    tls = _tls_files(work / "tls")
    b = MosquittoBroker(MosquittoSettings(
        port=None, tls_port=free_port(), tls=tls, data_dir=work / "data",
        password_file=write_password_file(work / "passwd", PASSWORDS),
        acl_file=write_acl_file(work / "acl", [SITE_A, SITE_B])), work)

    async def scenario():
        ctx = ssl.create_default_context(cafile=str(tls.cafile))
        with Journal.open(journal_path, SITE_A) as journal:
            await fill(journal, 500)
            host = StandInHost("127.0.0.1", b.settings.tls_port, keys.host_side(), username="host",
                               password=PASSWORDS["host"], tls_context=ctx)
            async with host:
                s = SyncSettings.from_url(b.url, tls_ca_file=str(tls.cafile), username=SITE_A,
                                          password=PASSWORDS[SITE_A], poll_interval_s=0.05, backoff_initial_s=0.1)
                assert b.url.startswith("mqtts://") and s.tls
                async with SyncClient(journal, keys.site(), s) as sync:
                    await sync.wait_flushed(20)
                assert len(host.ledger) == 500 and journal.counts().unacked == 0
            # without our CA, the broker's certificate is not trusted: no connection
            untrusted = SyncSettings.from_url(b.url, username=SITE_A, password=PASSWORDS[SITE_A],
                                              backoff_initial_s=0.1, backoff_max_s=0.2)
            async with SyncClient(journal, keys.site(), untrusted) as sync:
                st = await sync.wait_until(lambda s: s.last_error is not None, 10)
                assert not st.connected and "CERTIFICATE_VERIFY_FAILED" in st.last_error
    with b:
        run(scenario())
