"""schemathesis against the live daemon with its own OpenAPI description: generated requests
(valid and invalid) must get answers that the description allows, and never a server error."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from terminal.config import load_config
from terminal.daemon import Daemon
from terminal.openapi import openapi_document
from terminal.replica import Replica

from .apitokens import TOKENS, with_clients

schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    """A daemon (tills only) on loopback, in a thread with its own event loop."""
    cfg = load_config(None)
    cfg = with_clients(replace(cfg, data_dir=tmp_path_factory.mktemp("schema"), pumps=(), api=replace(cfg.api, port=0)))
    replica = Replica.simulated(cfg, club_accounts=100, seed=4)
    loop = asyncio.new_event_loop()
    daemon = Daemon(cfg, replica)
    ready = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(daemon.start())
        ready.set()
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert ready.wait(30), "the daemon did not start"
    yield f"http://127.0.0.1:{daemon.port}"
    asyncio.run_coroutine_threadsafe(daemon.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_description(case, base_url):
    case.call_and_validate(base_url=base_url, headers={"Authorization": f"Bearer {TOKENS['till-1']}"})
