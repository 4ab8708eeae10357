"""Runs a SyncClient in its own process, so a test can SIGKILL it mid-publish.

Usage: ``python -m tests.sync.client_proc CONFIG_JSON``, where the JSON names the journal,
the site, its key and the host key (hex), the broker URL and credentials, and settings. The
process prints ``ready`` once the client is entered, then runs until SIGTERM (a clean stop:
offline presence, disconnect, exit 0) or SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from terminal.journal import Journal
from terminal.sync import SyncClient, SyncSettings
from wire import SiteKeys


async def main(cfg: dict) -> None:
    keys = SiteKeys({cfg["site_id"]: bytes.fromhex(cfg["site_key"])},
                    replica_verify=Ed25519PublicKey.from_public_bytes(bytes.fromhex(cfg["replica_verify_key"])))
    settings = SyncSettings.from_url(cfg["url"], username=cfg["username"], password=cfg["password"],
                                     **cfg.get("settings", {}))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with Journal.open(cfg["journal"], cfg["site_id"]) as journal:
        async with SyncClient(journal, keys, settings):
            print("ready", flush=True)
            await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
