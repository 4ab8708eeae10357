"""Crash-test helper: append to a journal from several lanes until killed.

    python tests/terminal/journal_crash_writer.py JOURNAL_PATH SITE_ID ROUND [LANES]

Each lane appends a transaction of 1 to 3 records together with its API answer (an
idempotency entry) in one ``append``, and only after ``append`` resolved prints one JSON line
(flushed) with the seqs, record ids and bodies: every printed line is a promise that those
records are on disk. ``test_journal`` kills this process with SIGKILL mid-stream and checks
each promise against the reopened file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from terminal.ids import new_id, new_txn_id  # noqa: E402
from terminal.journal import IdemEntry, Journal, Record  # noqa: E402

TERMINAL_KINDS = frozenset({"done"})


async def lane_loop(journal: Journal, site_id: str, lane: str, round_no: int) -> None:
    i = 0
    while True:
        txn_id = new_txn_id(site_id, lane)
        n = 1 + i % 3
        records = [
            Record(new_id(site_id), site_id, lane, txn_id, "done" if k == n - 1 else "step",
                   1_700_000_000 + i,
                   {"round": round_no, "i": i, "k": k, "amount_kop": 1000 * i + k,
                    "lines": [{"sku": f"SKU{i % 97}", "qty": k + 1}], "note": "x" * (i % 40)})
            for k in range(n)
        ]
        key = f"{lane}-r{round_no}-{i}"
        digest = hashlib.sha256(key.encode()).hexdigest()
        answer = {"txn_id": txn_id, "record_ids": [r.record_id for r in records]}
        seqs = await journal.append(records, idem=IdemEntry(key, "/v1/test", digest, 201, answer))
        print(json.dumps({"seqs": seqs, "ids": [r.record_id for r in records],
                          "bodies": [r.body for r in records], "idem_key": key}), flush=True)
        i += 1


async def main(path: str, site_id: str, round_no: int, lanes: int) -> None:
    journal = Journal.open(path, site_id, terminal_kinds=TERMINAL_KINDS)
    async with journal:
        await asyncio.gather(*(lane_loop(journal, site_id, f"lane{n}", round_no)
                               for n in range(lanes)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]),
                     int(sys.argv[4]) if len(sys.argv) > 4 else 4))
