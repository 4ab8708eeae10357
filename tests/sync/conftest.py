"""Fixtures for the sync tests: real mosquitto processes on free ports, started from the
configuration :mod:`terminal.broker` generates (the same no-drop settings, ACL and hashed
password file as production-like deployments), site and host keys, a journal with records.

Each broker fixture starts its own mosquitto or fails loudly (mosquitto missing, refused to
start: the message carries the tail of its log)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from terminal.broker import HOST_USER, MosquittoBroker, MosquittoSettings, free_port, write_acl_file, write_password_file
from terminal.ids import new_id, new_txn_id
from terminal.journal import Journal, Record
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wire import SiteKeys, new_key, new_replica_signing_key

SITE_A = "SITE-A"
SITE_B = "SITE-B"
PASSWORDS = {HOST_USER: "host-secret", SITE_A: "a-secret", SITE_B: "b-secret"}


def run(coro, timeout: float = 60.0):
    """Run ``coro`` to completion, bounded: a hang fails the test instead of the suite."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


@dataclass
class Keys:
    """Every key of the test fleet: what the host holds and what each site holds."""

    site_a: bytes
    site_b: bytes
    host: Ed25519PrivateKey  #: the host's replica signing key; the sites hold its public key only

    def host_side(self) -> SiteKeys:
        return SiteKeys({SITE_A: self.site_a, SITE_B: self.site_b}, replica_signing=self.host)

    def site(self, site_id: str = SITE_A) -> SiteKeys:
        return SiteKeys({site_id: self.site_a if site_id == SITE_A else self.site_b},
                        replica_verify=self.host.public_key())

    def host_public_hex(self) -> str:
        """The replica verify key as 64 hex digits (raw), for a client in another process."""
        from cryptography.hazmat.primitives import serialization
        return self.host.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


@pytest.fixture
def keys() -> Keys:
    return Keys(new_key(), new_key(), new_replica_signing_key())


def _need_mosquitto() -> None:
    for exe in ("mosquitto", "mosquitto_passwd"):
        if shutil.which(exe) is None:
            pytest.fail(f"{exe} not found: install the Debian packages mosquitto and mosquitto-clients "
                        "(scripts/bootstrap.sh)")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A production-like mosquitto: per-site credentials, the ACL from wire.site_publish_topics,
    no-drop queues, persistence, on a free loopback port."""
    _need_mosquitto()
    work = tmp_path / "broker"
    settings = MosquittoSettings(
        port=free_port(), data_dir=work / "data",
        password_file=write_password_file(work / "passwd", PASSWORDS),
        acl_file=write_acl_file(work / "acl", [SITE_A, SITE_B]))
    b = MosquittoBroker(settings, work)
    b.start()
    try:
        yield b
    finally:
        b.kill()


def records(site_id: str, n: int, lane: str = "till-1", start: int = 0) -> list[Record]:
    """``n`` journal records of a plausible till shape."""
    out = []
    for i in range(start, start + n):
        txn = new_txn_id(site_id, lane)
        out.append(Record(new_id(site_id), site_id, lane, txn, "till.sale_committed", 1_760_000_000 + i,
                          {"n": i, "amount_kop": 1000 + i, "lines": [{"sku": f"SKU{i % 97}", "qty": 1}]}))
    return out


async def fill(journal: Journal, n: int, *, chunk: int = 1000, start: int = 0) -> None:
    """Append ``n`` records in chunks (one transaction each)."""
    done = 0
    while done < n:
        k = min(chunk, n - done)
        await journal.append(records(journal.site_id, k, start=start + done))
        done += k


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite"
