"""Shared fixtures. Every evaluator test takes ``impl`` and so runs against both the native
and the reference evaluator (the pattern of aiohttp's parser fixtures)."""

import os

import pytest

from native import IMPLEMENTATIONS


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def impl(request) -> str:
    """The evaluator implementation under test: "native" or "reference"."""
    return request.param


# A crash anywhere names its thread: pytest's faulthandler plugin covers this process
# (with a stack dump of every thread if one test hangs past faulthandler_timeout, see
# pyproject.toml); every child process the tests start (workers, sites, scenarios) inherits
# PYTHONFAULTHANDLER and dumps its threads on SIGSEGV, SIGFPE, SIGABRT, SIGBUS and SIGILL.
os.environ.setdefault("PYTHONFAULTHANDLER", "1")
