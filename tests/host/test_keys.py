"""The host's replica key pair on disk: made when there is none, never replaced behind the
sites' back, loaded and checked by the worker; no key on any output."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from host.keys import ensure_replica_keys
from host.worker import load_keys
from wire import (
    REPLICA_SIGNING_KEY_FILE,
    REPLICA_VERIFY_KEY_FILE,
    ReplicaDelta,
    SiteKeys,
    StopListEntry,
    Table,
    WireKeyError,
    decode,
    deltas_topic,
    encode,
    load_replica_verify_key,
    new_key,
    new_replica_signing_key,
    replica_key_id,
    write_key,
    write_replica_keys,
)

ROOT = Path(__file__).resolve().parents[2]


def _pem_body(path: Path) -> str:
    return "".join(path.read_text().splitlines()[1:-1])


def test_made_once_then_kept(tmp_path):
    d = tmp_path / "keys"
    first = ensure_replica_keys(d)
    assert first.created and first.signing_key_file == d / REPLICA_SIGNING_KEY_FILE
    assert stat.S_IMODE(os.stat(first.signing_key_file).st_mode) == 0o600
    again = ensure_replica_keys(d)
    assert not again.created and again.key_id == first.key_id
    first.verify_key_file.unlink()  # a lost public key is written again from the signing key
    third = ensure_replica_keys(d)
    assert third.created and third.key_id == first.key_id
    assert replica_key_id(load_replica_verify_key(third.verify_key_file)) == first.key_id


def test_a_public_key_without_its_signing_key_is_not_replaced(tmp_path):
    files = ensure_replica_keys(tmp_path)
    before = files.verify_key_file.read_bytes()
    files.signing_key_file.unlink()
    with pytest.raises(WireKeyError, match="the replica signing key is missing"):
        ensure_replica_keys(tmp_path)
    assert files.verify_key_file.read_bytes() == before and not files.signing_key_file.exists()


def test_a_mismatched_pair_is_refused(tmp_path):
    write_replica_keys(tmp_path, new_replica_signing_key())
    (tmp_path / REPLICA_VERIFY_KEY_FILE).unlink()
    other = tmp_path / "other"
    other.mkdir()
    write_replica_keys(other, new_replica_signing_key())
    (other / REPLICA_VERIFY_KEY_FILE).rename(tmp_path / REPLICA_VERIFY_KEY_FILE)
    with pytest.raises(WireKeyError, match="is not the public key of"):
        ensure_replica_keys(tmp_path)
    with pytest.raises(WireKeyError, match="is not the public key of replica_signing"):
        load_keys(tmp_path)


def test_load_keys_signs_what_a_site_verifies(tmp_path):
    files = ensure_replica_keys(tmp_path)
    (tmp_path / "sites").mkdir()
    write_key(tmp_path / "sites" / "S1.key", new_key())
    host = load_keys(tmp_path)
    assert host.can_sign_replica and list(host) == ["S1"]
    site = SiteKeys({"S1": host.site("S1")}, replica_verify=load_replica_verify_key(files.verify_key_file))
    delta = ReplicaDelta(Table.STOP_LIST, 1, 2, (StopListEntry("7005830000000001", 5),))
    assert decode(encode(delta, host), site, topic=deltas_topic(Table.STOP_LIST)) == delta


def test_load_keys_without_the_signing_key_warns_about_an_old_host_key(tmp_path, caplog):
    write_key(tmp_path / "host.key", new_key())
    with caplog.at_level(logging.WARNING, logger="edgepos.host.worker"):
        keys = load_keys(tmp_path)
    assert not keys.can_sign_replica and not keys.can_verify_replica
    assert "host.key" in caplog.text and REPLICA_SIGNING_KEY_FILE in caplog.text
    assert (tmp_path / "host.key").read_text().strip() not in caplog.text


def test_the_command_makes_the_pair_and_prints_no_key(tmp_path):
    d = tmp_path / "keys"
    run = [sys.executable, "-m", "host.keys", "--keys-dir", str(d)]
    out = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    key_id = replica_key_id(load_replica_verify_key(d / REPLICA_VERIFY_KEY_FILE))
    assert "made" in out.stdout and key_id in out.stdout and REPLICA_VERIFY_KEY_FILE in out.stdout
    raw = serialization.load_pem_private_key((d / REPLICA_SIGNING_KEY_FILE).read_bytes(), None).private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    for secret in (_pem_body(d / REPLICA_SIGNING_KEY_FILE), raw.hex()):
        assert secret not in out.stdout + out.stderr
    again = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 0 and "already there" in again.stdout and key_id in again.stdout
    (d / REPLICA_SIGNING_KEY_FILE).write_text("not a key\n")
    bad = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "is not PEM" in bad.stderr and "not a key" not in bad.stderr
