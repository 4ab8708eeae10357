"""Keys: the lookup, key files, and that no key ever shows in a repr or an error."""

from __future__ import annotations

import os
import stat

import pytest

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wire import (REPLICA_SIGNING_KEY_FILE, REPLICA_VERIFY_KEY_FILE, SIGNATURE_BYTES, SiteKeys, WireError,
                  WireKeyError, WireSignatureError, key_id, load_key, load_replica_signing_key,
                  load_replica_verify_key, new_key, new_replica_signing_key, replica_key_id, write_key,
                  write_replica_keys)
from wire.signing import mac, mac_ok, replica_sign, replica_signature_ok

KEY = bytes(range(32))
SEED = bytes(range(100, 132))
REPLICA = Ed25519PrivateKey.from_private_bytes(SEED)


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def test_lookup():
    keys = SiteKeys({"A": KEY}, replica_signing=REPLICA)
    assert keys.site("A") == KEY and "A" in keys and len(keys) == 1 and list(keys) == ["A"]
    assert keys.can_sign_replica and keys.can_verify_replica and keys.replica_signing is REPLICA
    assert replica_key_id(keys.replica_verify) == replica_key_id(REPLICA)  # the host verifies its own
    with pytest.raises(WireSignatureError, match="no key for site 'B'"):
        keys.site("B")
    keys.set_site("B", new_key())
    keys.remove_site("A")
    keys.remove_site("never")
    assert list(keys) == ["B"]
    site = SiteKeys({"A": KEY}, replica_verify=REPLICA.public_key())
    assert site.can_verify_replica and not site.can_sign_replica
    with pytest.raises(WireSignatureError, match="no replica signing key"):
        _ = site.replica_signing
    with pytest.raises(WireSignatureError, match="no replica verify key"):
        _ = SiteKeys().replica_verify
    assert not SiteKeys().can_verify_replica and not SiteKeys().can_sign_replica


def test_bad_keys():
    for bad in (b"short", "x" * 32, None, KEY + b"!"):
        with pytest.raises(WireKeyError, match="32 bytes"):
            SiteKeys({"A": bad})  # type: ignore[dict-item]
    with pytest.raises(WireKeyError, match="Ed25519PrivateKey, got a bytes"):
        SiteKeys(replica_signing=SEED)  # type: ignore[arg-type]
    with pytest.raises(WireKeyError, match="Ed25519PublicKey, got a"):
        SiteKeys(replica_verify=REPLICA)  # type: ignore[arg-type]
    with pytest.raises(WireKeyError, match="is not the public key of replica_signing"):
        SiteKeys(replica_signing=REPLICA, replica_verify=new_replica_signing_key().public_key())
    with pytest.raises(WireKeyError, match="site id"):
        SiteKeys({"": KEY})


def test_no_key_in_repr_or_errors():
    keys = SiteKeys({f"S{i}": KEY for i in range(7)}, replica_signing=REPLICA)
    text = repr(keys)
    assert "S0" in text and "7 sites" in text and KEY.hex() not in text and repr(KEY) not in text
    assert replica_key_id(REPLICA) in text and SEED.hex() not in text and repr(SEED)[2:-1] not in text
    for bad in (KEY[:31], KEY + b"\x00"):
        with pytest.raises(WireKeyError) as info:
            SiteKeys({"A": bad})
        assert KEY[:31].hex() not in str(info.value) and repr(KEY[:8])[2:-1] not in str(info.value)


def test_key_files(tmp_path):
    raw = tmp_path / "raw.key"
    raw.write_bytes(KEY)
    assert load_key(raw) == KEY
    hexed = tmp_path / "hex.key"
    hexed.write_text(KEY.hex().upper() + "\n")
    assert load_key(hexed) == KEY
    written = tmp_path / "new.key"
    write_key(written, KEY)
    assert load_key(written) == KEY
    assert stat.S_IMODE(os.stat(written).st_mode) == 0o600
    with pytest.raises(WireKeyError, match="already exists"):
        write_key(written, new_key())
    assert load_key(written) == KEY


@pytest.mark.parametrize("content, words", [
    (b"", ["holds 0 bytes", "32 raw bytes or 64 hex digits"]),
    (b"abc\n", ["holds 4 bytes"]),
    (bytes(range(31)), ["holds 31 bytes"]),
    (b"zz" * 32, ["not hex digits"]),
    (b"0" * 10_000, ["more than 4096"]),
])
def test_bad_key_files(tmp_path, content, words):
    p = tmp_path / "bad.key"
    p.write_bytes(content)
    with pytest.raises(WireKeyError) as info:
        load_key(p)
    for w in words:
        assert w in str(info.value)
    assert str(p) in str(info.value)
    assert "zz" not in str(info.value).replace(str(p), "")  # never the file's content


def test_missing_and_unreadable_key_files(tmp_path):
    with pytest.raises(WireKeyError, match="does not exist"):
        load_key(tmp_path / "nope.key")
    with pytest.raises(WireKeyError, match="is a directory"):
        load_key(tmp_path)
    with pytest.raises(WireKeyError, match="cannot be created"):
        write_key(tmp_path / "no" / "such" / "dir.key", KEY)
    assert issubclass(WireKeyError, WireError)


def test_key_id_is_a_fingerprint_not_the_key():
    assert key_id(KEY) == key_id(bytes(KEY)) != key_id(new_key())
    assert len(key_id(KEY)) == 8 and key_id(KEY) not in KEY.hex()


def test_mac():
    tag = mac(KEY, b"data")
    assert len(tag) == 32 and mac_ok(KEY, b"data", tag)
    assert not mac_ok(KEY, b"datA", tag) and not mac_ok(new_key(), b"data", tag)


def test_new_keys_differ():
    assert len({new_key() for _ in range(20)}) == 20


# --- the replica keys (Ed25519) ---------------------------------------------------------------

def test_replica_signatures():
    sig = replica_sign(REPLICA, b"data")
    assert len(sig) == SIGNATURE_BYTES and replica_signature_ok(REPLICA.public_key(), b"data", sig)
    assert not replica_signature_ok(REPLICA.public_key(), b"datA", sig)
    assert not replica_signature_ok(new_replica_signing_key().public_key(), b"data", sig)
    assert not replica_signature_ok(REPLICA.public_key(), b"data", sig[:-1])


def test_replica_key_files(tmp_path):
    private, public = write_replica_keys(tmp_path, REPLICA)
    assert (private.name, public.name) == (REPLICA_SIGNING_KEY_FILE, REPLICA_VERIFY_KEY_FILE)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert _raw(load_replica_signing_key(private)) == SEED
    assert replica_key_id(load_replica_verify_key(public)) == replica_key_id(REPLICA)
    with pytest.raises(WireKeyError, match="already exists"):
        write_replica_keys(tmp_path, new_replica_signing_key())
    assert _raw(load_replica_signing_key(private)) == SEED  # not overwritten
    public.unlink()
    with pytest.raises(WireKeyError, match="already exists"):  # nor half-replaced
        write_replica_keys(tmp_path, new_replica_signing_key())
    assert not public.exists()


def test_openssl_made_replica_keys_load(tmp_path):
    """What ``openssl genpkey -algorithm ed25519`` and ``openssl pkey -pubout`` write: the
    same PEM forms as ours (written here with cryptography, which uses OpenSSL's encoder)."""
    key = new_replica_signing_key()
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    (tmp_path / "p.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert replica_key_id(load_replica_signing_key(tmp_path / "k.pem")) == replica_key_id(key)
    assert replica_key_id(load_replica_verify_key(tmp_path / "p.pem")) == replica_key_id(key)


def _bad_replica_files(tmp_path):
    ec = generate_private_key(SECP256R1())
    files = {
        "private": REPLICA.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()),
        "public": REPLICA.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo),
        "encrypted": REPLICA.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.BestAvailableEncryption(b"pass phrase")),
        "ec_private": ec.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()),
        "ec_public": ec.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo),
        "raw": SEED,  # a 32-byte file: an HMAC key, such as the old host.key, is not a replica key
        "hex": SEED.hex().encode() + b"\n",
        "garbled": b"-----BEGIN PRIVATE KEY-----\n" + SEED.hex().encode() + b"\n-----END PRIVATE KEY-----\n",
        "garbled_pub": b"-----BEGIN PUBLIC KEY-----\n" + SEED.hex().encode() + b"\n-----END PUBLIC KEY-----\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


@pytest.mark.parametrize("name, words", [
    ("public", ["holds a public key", REPLICA_SIGNING_KEY_FILE]),
    ("encrypted", ["is encrypted", "0600"]),
    ("ec_private", ["not an Ed25519 key"]),
    ("raw", ["32 bytes", "is not PEM"]),
    ("hex", ["is not PEM", "openssl genpkey -algorithm ed25519"]),
    ("garbled", ["not a readable PEM private key"]),
    ("nope", ["does not exist"]),
])
def test_bad_replica_signing_key_files(tmp_path, name, words):
    p = _bad_replica_files(tmp_path) / name
    with pytest.raises(WireKeyError) as info:
        load_replica_signing_key(p)
    text = str(info.value)
    for w in words:
        assert w in text, text
    assert str(p) in text and SEED.hex() not in text and "MC4CAQ" not in text  # never the content


@pytest.mark.parametrize("name, words", [
    ("private", ["holds a PRIVATE key", "only the host's public key", REPLICA_VERIFY_KEY_FILE]),
    ("encrypted", ["holds a PRIVATE key"]),
    ("ec_public", ["not an Ed25519 key"]),
    ("raw", ["32 bytes", "not a PEM public key"]),
    ("garbled_pub", ["not a readable PEM public key"]),
    ("nope", ["does not exist"]),
])
def test_bad_replica_verify_key_files(tmp_path, name, words):
    """A site is given a public key; a private key there is refused loudly, not used."""
    p = _bad_replica_files(tmp_path) / name
    with pytest.raises(WireKeyError) as info:
        load_replica_verify_key(p)
    text = str(info.value)
    for w in words:
        assert w in text, text
    assert str(p) in text and SEED.hex() not in text and "MC4CAQ" not in text
