"""The host's replica key pair: make it if there is none, check it if there is one.

Replica snapshots and deltas are signed with the host's Ed25519 replica signing key
(``replica-signing.key``, PEM PKCS#8, mode 0600, on the host only); every site verifies them
with the public key (``replica-signing.pub``, PEM), which is the one replica file a site is
given. Both live in the host's keys directory beside ``sites/<site_id>.key``.

Run: ``python -m host.keys --keys-dir DIR``. It prints the key id (a fingerprint, the same
for both halves, to compare with what a site logs), never the key.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wire import (
    REPLICA_SIGNING_KEY_FILE,
    REPLICA_VERIFY_KEY_FILE,
    WireKeyError,
    load_replica_signing_key,
    load_replica_verify_key,
    new_replica_signing_key,
    replica_key_id,
    write_replica_keys,
)
from wire.signing import write_replica_verify_key

__all__ = ["ReplicaKeyFiles", "ensure_replica_keys", "main"]


@dataclass(frozen=True, slots=True)
class ReplicaKeyFiles:
    """Where the replica key pair is, its key id, and whether this call made it."""

    signing_key_file: Path
    verify_key_file: Path
    key_id: str
    created: bool


def ensure_replica_keys(keys_dir: str | os.PathLike[str]) -> ReplicaKeyFiles:
    """The replica key pair in ``keys_dir``, made (and the directory too) if there is none.

    An existing pair is loaded and checked to match. A signing key without its public key
    gets the public key written beside it. A public key without its signing key is an error:
    the sites trust that key, and a new pair would make them refuse every replica message,
    so the operator must decide (restore the signing key, or remove the public key and give
    the sites the new one). Raises :class:`wire.WireKeyError` naming the file, never a key.
    """
    d = Path(keys_dir)
    private, public = d / REPLICA_SIGNING_KEY_FILE, d / REPLICA_VERIFY_KEY_FILE
    if private.exists():
        key = load_replica_signing_key(private)
        if public.exists():
            if replica_key_id(load_replica_verify_key(public)) != replica_key_id(key):
                raise WireKeyError(f"{str(public)!r} (key id {replica_key_id(load_replica_verify_key(public))}) "
                                   f"is not the public key of {str(private)!r} (key id {replica_key_id(key)})")
            return ReplicaKeyFiles(private, public, replica_key_id(key), created=False)
        write_replica_verify_key(public, key.public_key())
        return ReplicaKeyFiles(private, public, replica_key_id(key), created=True)
    if public.exists():
        raise WireKeyError(f"{str(public)!r} exists but {str(private)!r} does not: the replica signing key is "
                           "missing. Restore it, or remove the public key, run this again and give every "
                           "site the new public key")
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise WireKeyError(f"keys directory {str(d)!r} cannot be created: {e.strerror or e}") from None
    key = new_replica_signing_key()
    write_replica_keys(d, key)
    return ReplicaKeyFiles(private, public, replica_key_id(key), created=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m host.keys --keys-dir DIR``: make the replica key pair if there is none."""
    p = argparse.ArgumentParser(prog="python -m host.keys",
                                description="make the host's replica signing key pair if there is none")
    p.add_argument("--keys-dir", required=True, help=f"the host's keys directory ({REPLICA_SIGNING_KEY_FILE}, "
                                                     f"{REPLICA_VERIFY_KEY_FILE}, sites/<site_id>.key)")
    args = p.parse_args(argv)
    try:
        files = ensure_replica_keys(args.keys_dir)
    except WireKeyError as e:
        print(f"edgepos host keys: {e}", file=sys.stderr)
        return 2
    what = "made" if files.created else "already there"
    print(f"replica signing key {what}: {files.signing_key_file} (key id {files.key_id}); "
          f"give {files.verify_key_file} to every site (keys.host_key_file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
