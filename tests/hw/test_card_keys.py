"""The key store: AES-CMAC (RFC 4493 vectors), per-card diversification, no key in repr."""

from __future__ import annotations

import pytest

from hw.card.keys import (
    KeyStore,
    SoftwareKeyStore,
    cmac,
    diversify,
    generate_master_key,
    load_master_key,
    save_master_key,
)
from hw.errors import KeyStoreError

RFC4493_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")


@pytest.mark.parametrize("msg,mac", [
    ("", "bb1d6929e95937287fa37d129b756746"),
    ("6bc1bee22e409f96e93d7e117393172a", "070a16b46b4d4144f79bdd9dd04a287c"),
])
def test_cmac_matches_rfc4493(msg, mac):
    assert cmac(RFC4493_KEY, bytes.fromhex(msg)).hex() == mac


def test_diversified_keys_differ_per_card_and_master():
    k1 = diversify(RFC4493_KEY, "7005830000000017")
    assert len(k1) == 16
    assert k1 == diversify(RFC4493_KEY, "7005830000000017")
    assert k1 != diversify(RFC4493_KEY, "7005830000000025")
    assert k1 != diversify(bytes(16), "7005830000000017")


def test_software_key_store_mac_and_verify():
    ks = SoftwareKeyStore(RFC4493_KEY)
    assert isinstance(ks, KeyStore)
    mac = ks.mac("7005830000000017", b"hello")
    assert mac == cmac(diversify(RFC4493_KEY, "7005830000000017"), b"hello")
    assert ks.verify("7005830000000017", b"hello", mac)
    assert not ks.verify("7005830000000017", b"hellO", mac)
    assert not ks.verify("7005830000000025", b"hello", mac)
    assert not ks.verify("7005830000000017", b"hello", mac[:8])


def test_keys_never_shown():
    ks = SoftwareKeyStore(RFC4493_KEY)
    assert RFC4493_KEY.hex() not in repr(ks) and "2b7e" not in repr(ks)


@pytest.mark.parametrize("key", [b"", bytes(15), bytes(17), "00" * 16])
def test_bad_master_keys(key):
    with pytest.raises(KeyStoreError):
        SoftwareKeyStore(key)


def test_master_key_file(tmp_path):
    path = tmp_path / "issuer.key"
    key = generate_master_key(32)
    save_master_key(path, key)
    assert path.stat().st_mode & 0o077 == 0
    assert load_master_key(path) == key
    assert SoftwareKeyStore.from_file(path).mac("123456", b"x") == SoftwareKeyStore(key).mac("123456", b"x")
    with pytest.raises(FileExistsError):
        save_master_key(path, key)
    (tmp_path / "bad.key").write_text("not hex")
    with pytest.raises(KeyStoreError) as exc:
        load_master_key(tmp_path / "bad.key")
    assert "not hex" in str(exc.value)
    with pytest.raises(KeyStoreError):
        load_master_key(tmp_path / "missing.key")
