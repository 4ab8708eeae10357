"""The publisher folds ingest's changes less often while a backlog flushes.

:meth:`host.worker.Worker.fold_interval` is ``fold_interval_s`` until the consume loop finds
batches already waiting when it takes one (a backlog), then ``backlog_fold_interval_s`` until
the next fold. Tested on the consume loop itself with a stand-in client and ledger thread (no
broker): live traffic keeps the short interval, a backlog the long one, and a fold resets it;
bad settings are refused.
"""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from host.worker import Worker, main
from wire import SiteKeys

KEYS = SiteKeys({}, replica_signing=Ed25519PrivateKey.generate())


class Messages:
    """client.messages as aiomqtt has it: an async iterator whose len() is what is queued."""

    def __init__(self, queued: list[bytes]) -> None:
        self.queued = list(queued)

    def __len__(self) -> int:
        return len(self.queued)

    def __aiter__(self) -> Messages:
        return self

    async def __anext__(self) -> object:
        if not self.queued:
            raise StopAsyncIteration
        payload = self.queued.pop(0)
        return type("M", (), {"payload": payload, "topic": type("T", (), {"value": "edgepos/v1/site/S1/batches"})})()


class Thread:
    """The ingest LedgerThread: records what each call was given."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def call(self, fn, taken):  # noqa: ANN001 - the stand-in of LedgerThread.call
        self.calls.append(len(taken))
        return []


def consume(worker: Worker, queued: list[bytes]) -> list[int]:
    lt = Thread()
    worker._ingest = lt  # type: ignore[assignment]
    client = type("C", (), {"messages": Messages(queued)})()
    asyncio.run(worker._consume(client))
    return lt.calls


def test_live_traffic_keeps_the_short_interval() -> None:
    w = Worker("sqlite:///unused", KEYS, fold_interval_s=2.0, backlog_fold_interval_s=6.0)
    assert w.fold_interval() == 2.0
    assert consume(w, [b"x"]) == [1]  # one batch, nothing waiting behind it
    assert not w.backlog_seen and w.fold_interval() == 2.0


def test_a_backlog_takes_the_long_interval_until_the_next_fold() -> None:
    w = Worker("sqlite:///unused", KEYS, fold_interval_s=2.0, backlog_fold_interval_s=6.0, max_batches_per_txn=3)
    assert consume(w, [b"x"] * 7) == [3, 3, 1]
    assert w.backlog_seen and w.fold_interval() == 6.0
    w.backlog_seen = False  # what the publisher loop does as it folds
    assert w.fold_interval() == 2.0


def test_a_backlog_of_one_batch_at_a_time_is_seen_too() -> None:
    w = Worker("sqlite:///unused", KEYS, max_batches_per_txn=1)
    assert consume(w, [b"x"] * 2) == [1, 1]  # the first was taken with another waiting
    assert w.fold_interval() == w.backlog_fold_interval_s


def test_bad_fold_settings_are_refused(capsys) -> None:
    with pytest.raises(ValueError, match="backlog_fold_interval_s"):
        Worker("sqlite:///unused", KEYS, fold_interval_s=2.0, backlog_fold_interval_s=1.0)
    for bad in ("1", "nan", "-3", "5000"):
        with pytest.raises(SystemExit) as e:
            main(["--keys-dir", ".", "--backlog-fold-interval-s", bad])
        assert e.value.code == 2
        assert "--backlog-fold-interval-s: 2 to 3600 seconds" in capsys.readouterr().err
