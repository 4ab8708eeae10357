"""The replica is signed by the host: a forged delta changes nothing at a site and does not
shadow the genuine one.

The attack this stops (it worked when replica messages carried an HMAC under a host key
every site held): a client of a broker without our ACL (the embedded, anonymous one here)
publishes, on the stop-list delta topic, a delta with the next version numbers that takes a
blocked card off the stop list. The site applied it, and then dropped the host's genuine
delta with the same numbers as a duplicate. Here the attacker holds everything a site holds
(its HMAC key, the host's public key) and more (a key pair of its own); a real host worker
publishes the genuine deltas and a real daemon follows them.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from dataclasses import replace

import aiomqtt
import pytest
from cryptography.hazmat.primitives import serialization

from authz import sample
from terminal.config import load_config
from terminal.daemon import Daemon
from terminal.replica import Replica
from terminal.simsite import SimHost, _start_host
from terminal.sync import load_site_keys
from wire import (
    ReplicaDelta,
    SiteKeys,
    Table,
    WireError,
    WireSignatureError,
    decode,
    deltas_topic,
    encode,
    load_key,
    load_replica_verify_key,
    new_replica_signing_key,
)

T = 30
TOPIC = deltas_topic(Table.STOP_LIST)


async def _until(what: str, cond, timeout: float = 15.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.02)


def _forgeries(delta: ReplicaDelta, site_key: bytes, host_public_raw: bytes) -> dict[str, bytes]:
    """``delta`` signed every way an attacker holding a site's files can sign it."""
    own_pair = encode(delta, SiteKeys(replica_signing=new_replica_signing_key()))
    signed = own_pair[:-66]  # everything but the signature element
    return {
        "Ed25519 by the attacker's own key pair": own_pair,
        "HMAC under the key every site holds (the host's public key)":
            signed + b"\xc4\x20" + hmac.digest(host_public_raw, signed, "sha256"),
        "HMAC under the site's own key": signed + b"\xc4\x20" + hmac.digest(site_key, signed, "sha256"),
        "64 random bytes as the signature": signed + b"\xc4\x40" + uuid.uuid4().bytes * 4,
    }


def test_a_forged_delta_with_the_next_versions_changes_nothing_and_the_genuine_one_applies(tmp_path):
    async def main():
        cfg = load_config(None)
        cfg = replace(cfg, data_dir=tmp_path / "site", pumps=(), api=replace(cfg.api, port=0))
        fuel = sample.fuel_model(n_cards=300, seed=7)
        replica = Replica(fuel, sample.club_model(n_accounts=50, seed=8))
        host: SimHost = await _start_host(cfg, replica, tmp_path, lambda _m: None)
        try:
            files = host.site_config.keys
            site_keys = load_site_keys(cfg.site_id, files.site_key_file, files.host_key_file)
            assert site_keys.can_verify_replica and not site_keys.can_sign_replica
            site_key = load_key(files.site_key_file)
            public_raw = load_replica_verify_key(files.host_key_file).public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            free = [c.card_no for c in fuel.cards if c.card_no not in fuel.stop_list and c.status == 0]
            x, y = free[0], free[1]
            seen: list[tuple[ReplicaDelta, bytes]] = []  # the host's genuine stop-list deltas, as sent

            async with aiomqtt.Client("127.0.0.1", host.broker.port, identifier=f"attacker-{uuid.uuid4().hex[:6]}") as c:
                await c.subscribe(TOPIC, qos=1)

                async def watch() -> None:
                    async for m in c.messages:  # the attacker's own publishes come back too: skipped
                        try:
                            g = decode(bytes(m.payload), site_keys, topic=m.topic.value)
                        except WireError:
                            continue
                        assert isinstance(g, ReplicaDelta)
                        seen.append((g, bytes(m.payload)))
                watcher = asyncio.create_task(watch())

                d = Daemon(host.site_config, replica)
                await asyncio.wait_for(d.start(), T)
                try:
                    from host.ledger import Ledger
                    from host.master import block_card, unblock_card
                    ledger = Ledger.open(host.ledger_url)
                    try:
                        def version() -> int:
                            return d.sync.status().replica_versions[Table.STOP_LIST]

                        def rejected() -> int:
                            return d.sync.status().rejected_messages

                        # 1. The host blocks x; the site follows.
                        await asyncio.to_thread(block_card, ledger, x, reason="stolen")
                        await _until("the block of x at the site", lambda: replica.fuel.on_stop_list(x))
                        # The site's sync status names a version once the update is stored, a
                        # moment after the evaluator has it; and the watcher may hold an older
                        # retained delta: wait for the block's own delta and that version.
                        def block_of_x() -> list[tuple[ReplicaDelta, bytes]]:
                            return [(g, raw) for g, raw in seen if any(e.card_no == x for e in g.upserts)]
                        await _until("the host's delta blocking x", lambda: bool(block_of_x()))
                        block_delta, block_x = block_of_x()[0]
                        await _until("the site's version after the block",
                                     lambda: version() == block_delta.to_version)
                        v = version()

                        # 2. The attacker: the next versions, taking x off the stop list.
                        forged = _forgeries(ReplicaDelta(Table.STOP_LIST, v, v + 1, (), (x,)), site_key, public_raw)
                        for frame in forged.values():
                            with pytest.raises(WireSignatureError):  # refused by wire.decode at the site
                                decode(frame, site_keys, topic=TOPIC)
                        r0 = rejected()
                        for frame in forged.values():
                            await c.publish(TOPIC, frame, qos=1)
                        await _until("the site refused every forgery", lambda: rejected() >= r0 + len(forged))
                        assert rejected() == r0 + len(forged)
                        assert version() == v, "a forged delta moved the site's version"
                        assert replica.fuel.on_stop_list(x), "a forged delta unblocked the card"

                        # 3. The genuine delta with the same numbers (the host blocks y) is applied.
                        n = len(seen)
                        await asyncio.to_thread(block_card, ledger, y, reason="lost")
                        await _until("the block of y at the site", lambda: replica.fuel.on_stop_list(y))
                        genuine = next(g for g, _ in seen[n:] if any(e.card_no == y for e in g.upserts))
                        assert (genuine.from_version, genuine.to_version) == (v, v + 1)  # the forged numbers
                        await _until("the site's version after the genuine delta", lambda: version() == v + 1)
                        assert replica.fuel.on_stop_list(x) and replica.fuel.on_stop_list(y)

                        # 4. Replayed genuine deltas are duplicates: the host unblocks x, then the
                        # old block of x and of y are replayed; x stays unblocked.
                        await asyncio.to_thread(unblock_card, ledger, x)
                        await _until("the unblock of x at the site", lambda: not replica.fuel.on_stop_list(x))
                        await _until("the site's version after the unblock", lambda: version() > v + 1)
                        held = version()
                        block_y = next(raw for g, raw in seen if g is genuine)
                        r1 = rejected()
                        for frame in (block_x, block_y, forged["Ed25519 by the attacker's own key pair"]):
                            await c.publish(TOPIC, frame, qos=1)  # in order: the refused last one marks the end
                        await _until("the site took the replays", lambda: rejected() == r1 + 1)
                        assert version() == held and not replica.fuel.on_stop_list(x) and replica.fuel.on_stop_list(y)
                    finally:
                        ledger.close()
                finally:
                    await d.stop()
                    watcher.cancel()
        finally:
            await host.stop()
    asyncio.run(asyncio.wait_for(main(), 120))

