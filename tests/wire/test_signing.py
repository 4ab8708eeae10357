"""Keys: the lookup, key files, and that no key ever shows in a repr or an error."""

from __future__ import annotations

import os
import stat

import pytest

from wire import (KEY_BYTES, SiteKeys, WireError, WireKeyError, WireSignatureError, key_id, load_key, new_key,
                  write_key)
from wire.signing import mac, mac_ok

KEY = bytes(range(32))


def test_lookup():
    keys = SiteKeys({"A": KEY}, host=new_key())
    assert keys.site("A") == KEY and "A" in keys and len(keys) == 1 and list(keys) == ["A"]
    assert keys.has_host and len(keys.host) == KEY_BYTES
    with pytest.raises(WireSignatureError, match="no key for site 'B'"):
        keys.site("B")
    keys.set_site("B", new_key())
    keys.remove_site("A")
    keys.remove_site("never")
    assert list(keys) == ["B"]
    with pytest.raises(WireSignatureError, match="no host key"):
        SiteKeys().host
    assert not SiteKeys().has_host


def test_bad_keys():
    for bad in (b"short", "x" * 32, None, KEY + b"!"):
        with pytest.raises(WireKeyError, match="32 bytes"):
            SiteKeys({"A": bad})  # type: ignore[dict-item]
    with pytest.raises(WireKeyError):
        SiteKeys(host=b"")
    with pytest.raises(WireKeyError, match="site id"):
        SiteKeys({"": KEY})


def test_no_key_in_repr_or_errors():
    keys = SiteKeys({f"S{i}": KEY for i in range(7)}, host=KEY)
    text = repr(keys)
    assert "S0" in text and "7 sites" in text and KEY.hex() not in text and repr(KEY) not in text
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
