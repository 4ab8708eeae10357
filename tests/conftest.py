"""Shared fixtures. Every evaluator test takes ``impl`` and so runs against both the native
and the reference evaluator (the pattern of aiohttp's parser fixtures)."""

import pytest

from native import IMPLEMENTATIONS


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def impl(request) -> str:
    """The evaluator implementation under test: "native" or "reference"."""
    return request.param
