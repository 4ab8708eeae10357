"""What the host's Ed25519 replica signature costs: ``python -m benchmarks.replica_signing``.

Prints ``key: value`` lines, measured in one process, best of ``--repeat`` runs of about
``--seconds`` each:

- ``hmac_*_per_s`` / ``ed25519_*_per_s``: the signature alone over the signed bytes of a
  one-card stop-list delta (what a block sends), HMAC-SHA256 (site messages, acks) vs
  Ed25519 (replica messages); ``*_us`` the same per call, and the ratios;
- ``delta_encode_per_s`` / ``delta_decode_per_s``: :func:`wire.encode` at the host and
  :func:`wire.decode` at a site of that delta, every check included, and the share of the
  decode that is the signature check;
- ``snapshot_part_*``: one stop-list snapshot part of about 1 MiB (the largest frame), the
  Ed25519 sign and verify of it vs an HMAC over the same bytes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from wire import (
    ReplicaDelta,
    ReplicaSnapshot,
    SiteKeys,
    StopListEntry,
    Table,
    decode,
    deltas_topic,
    encode,
    new_key,
    new_replica_signing_key,
    rows_that_fit,
    snapshot_topic,
)
from wire.signing import mac, mac_ok, replica_sign, replica_signature_ok


def rate(fn: Callable[[], object], seconds: float, repeat: int) -> float:
    """Calls of ``fn`` per second, best of ``repeat`` runs of about ``seconds`` each."""
    best = 0.0
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        deadline = t0 + seconds
        while True:
            for _ in range(50):
                fn()
            n += 50
            t = time.perf_counter()
            if t >= deadline:
                break
        best = max(best, n / (t - t0))
    return best


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.replica_signing", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=0.5)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    signing = new_replica_signing_key()
    host = SiteKeys(replica_signing=signing)
    public = signing.public_key()
    site = SiteKeys(replica_verify=public)
    site_key = new_key()

    delta = ReplicaDelta(Table.STOP_LIST, 41, 42, (StopListEntry("7005830000012345", 1_790_000_000),))
    frame = encode(delta, host)
    body, sig = frame[:-66], frame[-64:]
    tag = mac(site_key, body)
    out: dict[str, str] = {"delta_frame_bytes": str(len(frame))}
    r = {
        "hmac_sign": rate(lambda: mac(site_key, body), a.seconds, a.repeat),
        "hmac_verify": rate(lambda: mac_ok(site_key, body, tag), a.seconds, a.repeat),
        "ed25519_sign": rate(lambda: replica_sign(signing, body), a.seconds, a.repeat),
        "ed25519_verify": rate(lambda: replica_signature_ok(public, body, sig), a.seconds, a.repeat),
    }
    for k, v in r.items():
        out[f"{k}_per_s"] = f"{v:.0f}"
        out[f"{k}_us"] = f"{1e6 / v:.2f}"
    out["ed25519_sign_vs_hmac_x"] = f"{r['hmac_sign'] / r['ed25519_sign']:.0f}"
    out["ed25519_verify_vs_hmac_x"] = f"{r['hmac_verify'] / r['ed25519_verify']:.0f}"

    topic = deltas_topic(Table.STOP_LIST)
    enc = rate(lambda: encode(delta, host), a.seconds, a.repeat)
    dec = rate(lambda: decode(frame, site, topic=topic), a.seconds, a.repeat)
    out["delta_encode_per_s"] = f"{enc:.0f}"
    out["delta_decode_per_s"] = f"{dec:.0f}"
    out["delta_decode_signature_share"] = f"{dec / r['ed25519_verify']:.2f}"

    rows = tuple(StopListEntry(f"70058300{i:08d}", 1_790_000_000 + i) for i in range(60_000))
    n = rows_that_fit(Table.STOP_LIST, rows)
    part = ReplicaSnapshot(Table.STOP_LIST, 42, 0, 1, rows[:n])
    big = encode(part, host)
    big_body, big_sig = big[:-66], big[-64:]
    slow = max(1, a.repeat)
    out["snapshot_part_rows"] = str(n)
    out["snapshot_part_bytes"] = str(len(big))
    out["snapshot_part_ed25519_sign_ms"] = f"{1e3 / rate(lambda: replica_sign(signing, big_body), a.seconds, slow):.2f}"
    out["snapshot_part_ed25519_verify_ms"] = \
        f"{1e3 / rate(lambda: replica_signature_ok(public, big_body, big_sig), a.seconds, slow):.2f}"
    out["snapshot_part_hmac_ms"] = f"{1e3 / rate(lambda: mac(site_key, big_body), a.seconds, slow):.2f}"
    snap_topic = snapshot_topic(Table.STOP_LIST, 0)
    out["snapshot_part_decode_ms"] = f"{1e3 / rate(lambda: decode(big, site, topic=snap_topic), a.seconds, 1):.1f}"
    for key, text in out.items():
        print(f"{key}: {text}")


if __name__ == "__main__":
    main()
