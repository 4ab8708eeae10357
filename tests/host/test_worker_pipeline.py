"""The worker's consume loop is a pipeline: each run of delivered batches is decoded in a
thread of its own while the ledger thread still applies the run before, and the runs are
applied in the order taken, each one's acks published after its apply returned. Tested on
the loop itself with a stand-in client and ledger thread (no broker, no database)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from host.publisher import Publication
from host.worker import Worker
from wire import SiteKeys

KEYS = SiteKeys({}, replica_signing=Ed25519PrivateKey.generate())
TOPIC = "edgepos/v1/site/S1/batches"


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
        return type("M", (), {"payload": payload, "topic": type("T", (), {"value": TOPIC})})()


class Client:
    def __init__(self, queued: list[bytes], log: list) -> None:
        self.messages = Messages(queued)
        self.log = log

    async def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.log.append(("publish", payload))


class Ledger:
    """The ingest LedgerThread: applies in a thread, slowly, and logs what it was given."""

    def __init__(self, log: list, fail_on: bytes | None = None) -> None:
        self.log = log
        self.fail_on = fail_on
        self.started = threading.Event()

    async def call(self, fn, decoded):  # noqa: ANN001 - the stand-in of LedgerThread.call
        def run():
            self.started.set()
            self.log.append(("apply", [p for _, p in decoded]))
            if self.fail_on in [p for _, p in decoded]:
                raise RuntimeError("the ledger failed")
            threading.Event().wait(0.05)  # the database's time: the next run is decoded meanwhile
            self.log.append(("applied", [p for _, p in decoded]))
            return [Publication("edgepos/v1/site/S1/acks", b"ack-" + decoded[-1][1], 1, False)]
        return await asyncio.to_thread(run)


def make(log: list, **kw) -> Worker:
    w = Worker("sqlite:///unused", KEYS, **kw)

    def decode_many(taken):
        log.append(("decode", [p for _, p in taken]))
        return [(t, p) for t, p in taken if p != b"forged"]  # a refused frame is left out
    w.decode_many = decode_many  # type: ignore[method-assign]
    return w


def test_runs_are_applied_in_order_and_acked_after_their_apply():
    log: list = []
    w = make(log, max_batches_per_txn=2)
    w._ingest = Ledger(log)  # type: ignore[assignment]
    asyncio.run(w._consume(Client([b"1", b"2", b"3", b"forged", b"5"], log)))
    applies = [x[1] for x in log if x[0] == "apply"]
    assert applies == [[b"1", b"2"], [b"3"], [b"5"]]
    acks = [x[1] for x in log if x[0] == "publish"]
    assert acks == [b"ack-2", b"ack-3", b"ack-5"]
    for run, ack in zip(applies, acks):  # each ack after its own run was applied
        assert log.index(("applied", run)) < log.index(("publish", ack))
    assert w.stats.acks == 3


def test_the_next_run_is_decoded_while_the_ledger_applies():
    log: list = []
    w = make(log, max_batches_per_txn=1)
    w._ingest = Ledger(log)  # type: ignore[assignment]
    asyncio.run(w._consume(Client([b"1", b"2", b"3"], log)))
    # run 2 was decoded before run 1's apply had ended: the two overlapped
    assert log.index(("decode", [b"2"])) < log.index(("applied", [b"1"]))
    assert [x[1] for x in log if x[0] == "applied"] == [[b"1"], [b"2"], [b"3"]]


def test_an_ingest_error_ends_the_consume_loop_and_acks_nothing_after_it():
    log: list = []
    w = make(log, max_batches_per_txn=1)
    w._ingest = Ledger(log, fail_on=b"2")  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="the ledger failed"):
        asyncio.run(w._consume(Client([b"1", b"2", b"3", b"4"], log)))
    assert [x[1] for x in log if x[0] == "publish"] == [b"ack-1"]
    assert ("apply", [b"3"]) not in log


def test_a_bad_pipeline_depth_is_refused():
    with pytest.raises(ValueError, match="pipeline_depth"):
        Worker("sqlite:///unused", KEYS, pipeline_depth=0)
