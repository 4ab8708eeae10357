"""The sync client's settings, keys, durable state and rejected batches."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest

from terminal.journal import Journal
from terminal.sync import META_PREFIX, SyncClient, batch_last_seq, SyncError, SyncSettings, load_site_keys, settings_from_config
from wire import (REPLICA_SIGNING_KEY_FILE, REPLICA_VERIFY_KEY_FILE, SiteKeys, new_key, new_replica_signing_key,
                  replica_key_id, write_key, write_replica_keys)

from .conftest import SITE_A, fill, run
from .test_flow import host_for, settings


@dataclass(frozen=True)
class Broker:  # the shape of terminal.config.BrokerConfig
    url: str | None = None
    username: str | None = None
    password_file: str | None = None
    tls_ca_file: str | None = None


def test_urls():
    s = SyncSettings.from_url("mqtt://broker.example:1884")
    assert (s.host, s.port, s.tls) == ("broker.example", 1884, False)
    s = SyncSettings.from_url("mqtts://broker.example")
    assert (s.port, s.tls) == (8883, True)
    assert SyncSettings.from_url("mqtt://h").port == 1883
    for bad in ("http://h:1", "mqtt://", "mqtt://u:p@h:1", "mqtt://h:1/x", "mqtt://h:99999", "h:1883"):
        with pytest.raises(SyncError):
            SyncSettings.from_url(bad)
    with pytest.raises(SyncError, match="tls_ca_file"):
        SyncSettings.from_url("mqtt://h", tls_ca_file="/ca.pem")
    with pytest.raises(SyncError, match="max_in_flight"):
        SyncSettings.from_url("mqtt://h", max_in_flight=0)


def test_settings_from_config_reads_the_password_file_and_never_shows_it(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    s = settings_from_config(Broker("mqtts://b:8884", "SITE-A", str(pw), None), max_in_flight=4)
    assert (s.username, s.password, s.port, s.tls, s.max_in_flight) == ("SITE-A", "s3cret", 8884, True, 4)
    assert "s3cret" not in repr(s)
    with pytest.raises(SyncError, match="broker.url is not set: name the broker"):
        settings_from_config(Broker())
    with pytest.raises(SyncError, match="password_file"):
        settings_from_config(Broker("mqtt://b", "u", str(tmp_path / "missing")))


def test_site_keys_from_files(tmp_path):
    k, h = new_key(), new_replica_signing_key()
    write_key(tmp_path / "site.key", k)
    write_replica_keys(tmp_path, h)
    keys = load_site_keys(SITE_A, str(tmp_path / "site.key"), str(tmp_path / REPLICA_VERIFY_KEY_FILE))
    assert keys.site(SITE_A) == k and replica_key_id(keys.replica_verify) == replica_key_id(h)
    assert keys.can_verify_replica and not keys.can_sign_replica
    assert not load_site_keys(SITE_A, str(tmp_path / "site.key")).can_verify_replica
    with pytest.raises(SyncError, match="holds a PRIVATE key"):  # a site is never given the signing key
        load_site_keys(SITE_A, str(tmp_path / "site.key"), str(tmp_path / REPLICA_SIGNING_KEY_FILE))
    with pytest.raises(SyncError, match="not a PEM public key"):  # an HMAC key file of earlier versions
        load_site_keys(SITE_A, str(tmp_path / "site.key"), str(tmp_path / "site.key"))
    with pytest.raises(SyncError, match="site_key_file"):
        load_site_keys(SITE_A, None)
    (tmp_path / "bad.key").write_text("nope")
    with pytest.raises(SyncError, match="bad.key") as e:
        load_site_keys(SITE_A, str(tmp_path / "bad.key"))
    assert "nope" not in str(e.value)


def test_a_client_needs_its_sites_key(journal_path):
    with Journal.open(journal_path, SITE_A) as journal:
        with pytest.raises(SyncError, match="no key for site"):
            SyncClient(journal, SiteKeys({"OTHER": new_key()}), SyncSettings())


def test_refused_batches_keep_their_records_unacked_and_later_acks_do_not_mark_them(broker, keys, journal_path):
    async def scenario():
        with Journal.open(journal_path, SITE_A) as journal:
            await fill(journal, 400)
            host = host_for(broker, keys)
            host.reject[(SITE_A, 2)] = "record breaks a ledger rule"
            async with host:
                async with SyncClient(journal, keys.site(), settings(broker, max_batch_records=100)) as sync:
                    st = await sync.wait_flushed(20)
                    assert st.acked_batch == 4 and st.rejected_batches == (2,)
                    unacked = journal.unacked(1000)
                    assert [r.seq for r in unacked] == list(range(101, 201))  # batch 2's records, kept
                    await fill(journal, 100, start=400)
                    sync.kick()
                    st = await sync.wait_flushed(20)
                    assert st.acked_batch == 5 and journal.counts().unacked == 100  # still only batch 2's
            rejected = json.loads(journal.get_meta(f"{META_PREFIX}rejected_batches"))
            assert rejected == [{"batch_seq": 2, "first_seq": 101, "last_seq": 200,
                                 "reason": "record breaks a ledger rule"}]
        # after a restart the refusal is still known
        with Journal.open(journal_path, SITE_A) as journal:
            sync = SyncClient(journal, keys.site(), settings(broker))
            sync._load()
            assert sync.status().rejected_batches == (2,) and sync.status().acked_batch == 5
    run(scenario())


def test_batch_ranges_are_stored_before_publishing_and_kept_once_acked(broker, keys, journal_path):
    async def scenario():
        with Journal.open(journal_path, SITE_A) as journal:
            await fill(journal, 250)
            async with host_for(broker, keys, acking=False) as host:
                async with SyncClient(journal, keys.site(), settings(broker, max_batch_records=100)) as sync:
                    await host.wait_until(lambda: len(host.received) == 3, 10, "three batches")
                    ranges = [json.loads(journal.get_meta(f"{META_PREFIX}batch.{n}")) for n in (1, 2, 3)]
                    assert [(r["first_seq"], r["last_seq"], r["count"]) for r in ranges] == \
                        [(1, 100, 100), (101, 200, 100), (201, 250, 50)]
                    # what was published is what the stored range holds
                    for r in host.received:
                        rng = ranges[r.batch.batch_seq - 1]
                        ids = [x.record_id for x in journal.after(rng["first_seq"] - 1, rng["count"])]
                        assert [x.record_id for x in r.batch.records] == ids
                        assert r.batch.created_utc_s == rng["created_utc_s"]
                    host.acking = True
                    await host.ack_now(SITE_A)
                    await sync.wait_flushed(10)
                    await asyncio.sleep(0.2)
            assert journal.get_meta(f"{META_PREFIX}acked_batch") == "3"
            # kept: a host row's watermark is a batch number, mapped to the journal by its range
            assert [batch_last_seq(journal, n) for n in (1, 2, 3)] == [100, 200, 250]
            assert batch_last_seq(journal, 4) is None
    run(scenario())


def test_the_backoff_has_jitter_and_a_cap(journal_path):
    with Journal.open(journal_path, SITE_A) as journal:
        sync = SyncClient(journal, SiteKeys({SITE_A: new_key()}), SyncSettings(backoff_initial_s=0.5, backoff_max_s=30))
        first = [sync._backoff_s(0) for _ in range(200)]
        assert all(0.25 <= d <= 0.5 for d in first) and len(set(first)) > 100
        late = [sync._backoff_s(20) for _ in range(200)]
        assert all(15 <= d <= 30 for d in late) and max(late) > 25


def test_offline_the_client_keeps_trying_and_reports_it(journal_path):
    async def scenario():
        with Journal.open(journal_path, SITE_A) as journal:
            await fill(journal, 10)
            s = SyncSettings.from_url("mqtt://127.0.0.1:9", backoff_initial_s=0.05, backoff_max_s=0.1)
            async with SyncClient(journal, SiteKeys({SITE_A: new_key()}), s) as sync:
                st = await sync.wait_until(lambda s: s.last_error is not None, 10)
                assert not st.connected and st.backlog_records == 10 and st.last_batch == 0
            assert journal.counts().unacked == 10
    run(scenario())
