"""One site's SyncClient in its own process, so an e2e test can SIGKILL it mid-publish.

``python -m tests.e2e.edge_proc`` with the configuration in the environment variable
``E2E_EDGE_CONFIG`` (JSON: the journal path, the site id, its key and the host key in hex,
the broker URL, user name and password, and SyncSettings fields; in the environment, not on
the command line, so no key or password shows in a process list). Prints ``ready`` once the
client has entered, then syncs until SIGTERM (a clean stop: offline presence, disconnect,
exit 0) or SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal

from terminal.journal import Journal
from terminal.sync import SyncClient, SyncSettings
from wire import SiteKeys, load_replica_verify_key


async def main(cfg: dict) -> None:
    keys = SiteKeys({cfg["site_id"]: bytes.fromhex(cfg["site_key"])},
                    replica_verify=load_replica_verify_key(cfg["replica_verify_key_file"]))
    settings = SyncSettings.from_url(cfg["url"], username=cfg["username"], password=cfg["password"],
                                     **cfg.get("settings", {}))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with Journal.open(cfg["journal"], cfg["site_id"]) as journal:
        async with SyncClient(journal, keys, settings) as sync:
            print("ready", flush=True)
            await stop.wait()
            st = sync.status()
            print(f"stopping: acked_batch={st.acked_batch} last_batch={st.last_batch} resends={st.resends} "
                  f"publishes={st.publishes}", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(main(json.loads(os.environ["E2E_EDGE_CONFIG"])))
