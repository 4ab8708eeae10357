#!/usr/bin/env python3
"""Regenerate the checked-in example files (edgepos.conf.example, acl.example) from
terminal.broker; tests/sync/test_broker.py fails if they drift."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from terminal.broker import MosquittoSettings, TlsFiles, acl_text, mosquitto_conf  # noqa: E402

ETC = Path("/etc/edgepos/mosquitto")
EXAMPLE_SITES = ("SIM-077-001", "SIM-077-002")
EXAMPLE = MosquittoSettings(
    port=None, bind="0.0.0.0", data_dir=Path("/var/lib/edgepos/mosquitto"), password_file=ETC / "passwd",
    acl_file=ETC / "acl", tls=TlsFiles(ETC / "tls/ca.pem", ETC / "tls/server.pem", ETC / "tls/server.key"),
    tls_port=8883, log_file=Path("/var/log/edgepos/mosquitto.log"), run_as="mosquitto")


def examples() -> dict[str, str]:
    """File name -> the text it must hold."""
    return {"edgepos.conf.example": mosquitto_conf(EXAMPLE), "acl.example": acl_text(EXAMPLE_SITES)}


if __name__ == "__main__":
    for name, text in examples().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {HERE / name}")
