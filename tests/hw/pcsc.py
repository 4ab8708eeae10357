"""Fixtures for tests against the real PC/SC stack: pcscd with the vpcd driver.

``hw.sim.pcscd.ensure_pcscd()`` finds or starts pcscd; when pcscd cannot be started the
``pcscd`` fixture FAILS the test (never skips): these tests are the only proof that the card
driver works against the real stack.

Test modules import the fixtures by name: ``from tests.hw.pcsc import pcscd, keys, ...``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from authz.fuel_model import (
    FuelCard,
    Limit,
    LimitUnit,
    Period,
    ProductGroup,
    Scope,
)

from hw.sim.pcscd import (  # noqa: F401  (re-exported for the test modules)
    INSTALL_HINT,
    POLL_S,
    READER,
    VPCD_CONF,
    VPCD_DRIVER,
    Pcscd,
    PcscdUnavailable,
    ensure_pcscd,
    settle_empty_reader,
    wait_reader,
)


@pytest.fixture(scope="session")
def pcscd() -> Iterator[Pcscd]:
    """pcscd with the vpcd readers, started if needed (and then stopped at the end)."""
    try:
        daemon = ensure_pcscd()
    except PcscdUnavailable as exc:
        pytest.fail(f"PC/SC stack unavailable: {exc}", pytrace=False)
    try:
        yield daemon
    finally:
        daemon.stop()


def sample_card(card_no: str = "7005830000000017") -> FuelCard:
    """A card with three limits of different shapes."""
    return FuelCard(
        card_no, 42, date(2027, 12, 31), frozenset({ProductGroup.FUEL, ProductGroup.CAR_WASH}),
        (Limit(1, LimitUnit.MILLILITRES, Period.DAY, 200_000),
         Limit(2, LimitUnit.KOPECKS, Period.MONTH, 5_000_000, Scope.GROUP, ProductGroup.FUEL),
         Limit(3, LimitUnit.KOPECKS, Period.TRANSACTION, 300_000, Scope.PRODUCT, None, "AI95")))


@pytest.fixture
def keys():
    """A software key store with a fresh random master key."""
    from hw.card.keys import SoftwareKeyStore, generate_master_key

    return SoftwareKeyStore(generate_master_key())


@pytest.fixture
def card_file(tmp_path: Path, keys) -> Path:
    """A personalised virtual card's state file (PIN 1234)."""
    from hw.sim.personalise import personalise

    path = tmp_path / "card.json"
    personalise(sample_card(), "1234", keys).save(path)
    return path


@pytest.fixture
def virtual_card(pcscd: Pcscd, card_file: Path):
    """The virtual card of ``card_file``, not yet inserted; pulled (and its removal seen
    by pcscd) at teardown so the next test starts with an empty reader."""
    from hw.sim.card import VirtualCard

    settle_empty_reader()
    card = VirtualCard(card_file)
    try:
        yield card
    finally:
        card.pull()
        settle_empty_reader()
