#!/usr/bin/env python3
"""Generate a production-like Mosquitto set-up for edgepos sites: ``mosquitto.conf`` (the
no-drop queue settings, persistence, a plain and optionally a TLS listener), ``acl`` (each
site may publish only on wire.site_publish_topics(site); the host user on everything) and
``passwd`` (hashed by mosquitto_passwd), plus one plain-text password file per site and for
the host under ``credentials/`` (mode 0600) for the site's ``broker.password_file``.

    python scripts/mosquitto/generate.py --out /etc/edgepos/mosquitto --port 18883 \\
        --sites SIM-077-001,SIM-077-002 [--tls-port 18884 --tls-dir /etc/edgepos/mosquitto/tls] \\
        [--data-dir /var/lib/edgepos/mosquitto] [--run-as mosquitto]

Then ``mosquitto -c /etc/edgepos/mosquitto/mosquitto.conf``. Existing credentials are kept
(re-running adds sites without changing the passwords of the others). See docs/sync.md.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from terminal.broker import (HOST_USER, MosquittoSettings, TlsFiles, mosquitto_conf, write_acl_file,  # noqa: E402
                             write_password_file)
from terminal.broker import _write_private  # noqa: E402


def generate(out: Path, *, port: int, sites: list[str], tls_port: int | None = None, tls_dir: Path | None = None,
             data_dir: Path | None = None, run_as: str | None = None) -> MosquittoSettings:
    """Write the configuration, ACL, password file and per-user credentials into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    creds = out / "credentials"
    passwords = {}
    for user in [HOST_USER, *sites]:
        f = creds / user
        if f.exists():
            passwords[user] = f.read_text(encoding="utf-8").rstrip("\r\n")
        else:
            passwords[user] = secrets.token_urlsafe(24)
            _write_private(f, passwords[user] + "\n")
    tls = None
    if tls_port is not None:
        d = tls_dir or out / "tls"
        tls = TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key")
    settings = MosquittoSettings(port=port, bind="0.0.0.0" if run_as else "127.0.0.1",
                                 data_dir=data_dir or out / "data",
                                 password_file=write_password_file(out / "passwd", passwords),
                                 acl_file=write_acl_file(out / "acl", sites), tls=tls, tls_port=tls_port,
                                 log_file=out / "mosquitto.log", run_as=run_as)
    _write_private(out / "mosquitto.conf", mosquitto_conf(settings))
    return settings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--port", type=int, default=18883)
    p.add_argument("--sites", required=True, help="comma-separated site ids")
    p.add_argument("--tls-port", type=int)
    p.add_argument("--tls-dir", type=Path, help="holds ca.pem, server.pem, server.key (default OUT/tls)")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--run-as", help="the user mosquitto drops to (default: the current user; binds loopback)")
    a = p.parse_args(argv)
    generate(a.out, port=a.port, sites=[s for s in a.sites.split(",") if s], tls_port=a.tls_port,
             tls_dir=a.tls_dir, data_dir=a.data_dir, run_as=a.run_as)
    print(f"wrote {a.out}/mosquitto.conf, acl, passwd and credentials/ (one password file per user)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
