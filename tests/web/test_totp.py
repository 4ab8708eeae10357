"""TOTP codes are good once (ASVS 2.8.4), on the real ledger: a code of the last accepted
time step or an earlier one is refused, two sign-ins racing with one code accept it once,
and anything but the current code is refused without changing the stored step."""

from __future__ import annotations

import threading

import pyotp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host import fleet_users as fu
from host.ledger import Ledger
from host.passwords import Hasher

from .conftest import FAST_ARGON2


@pytest.fixture
def user(ledger: Ledger, clock) -> tuple[int, pyotp.TOTP]:
    uid = fu.create_active_user(ledger, Hasher(FAST_ARGON2), login="totpuser", email="totp@example.test",
                                password="a long enough passphrase 2026")
    secret = pyotp.random_base32()
    fu.enable_totp(ledger, uid, secret, pyotp.TOTP(secret).at(clock.now))
    clock.now += 30  # the enabling code is spent; the next step's is fresh
    return uid, pyotp.TOTP(secret)


def _step(ledger: Ledger, uid: int) -> int | None:
    return ledger.db.scalar("SELECT totp_last_step FROM web_fleet_users WHERE user_id = ?", (uid,))


def test_a_code_is_accepted_once_and_never_an_earlier_step(ledger: Ledger, clock, user) -> None:
    uid, totp = user
    before = _step(ledger, uid)
    assert fu.check_totp(ledger, uid, totp.at(clock.now), address="10.0.0.1") is True
    assert _step(ledger, uid) == before + 1
    assert fu.check_totp(ledger, uid, totp.at(clock.now), address="10.0.0.1") is False
    assert fu.check_totp(ledger, uid, totp.at(clock.now - 30), address="10.0.0.1") is False
    clock.now += 30  # the window's step before now is the one accepted: still refused
    assert fu.check_totp(ledger, uid, totp.at(clock.now - 30), address="10.0.0.1") is False
    assert fu.check_totp(ledger, uid, totp.at(clock.now + 30), address="10.0.0.1") is True  # the next step
    assert fu.check_totp(ledger, uid, totp.at(clock.now), address="10.0.0.1") is False  # now earlier


def test_two_sign_ins_racing_with_one_code_accept_it_once(ledger: Ledger, db_url: str, clock, user) -> None:
    uid, totp = user
    code = totp.at(clock.now)
    results: list[object] = []
    go = threading.Barrier(4)

    def attempt(i: int) -> None:  # each its own connection, as the server's workers have
        with Ledger.open(db_url, clock=clock) as led:
            go.wait()
            results.append(fu.check_totp(led, uid, code, address=f"10.0.0.{i}"))
    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(map(str, results)) == ["False", "False", "False", "True"]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(code=st.one_of(st.text(max_size=12), st.integers(), st.none(), st.binary(max_size=8)))
def test_anything_but_the_current_code_is_refused_and_changes_nothing(ledger: Ledger, clock, user, code) -> None:
    uid, totp = user
    if isinstance(code, str) and code in {totp.at(clock.now + d) for d in (-30, 0, 30)}:
        return
    before = _step(ledger, uid)
    ledger.db.run(lambda db: db.execute("DELETE FROM web_attempts"))  # fresh rate limit per example
    assert fu.check_totp(ledger, uid, code, address="10.0.0.9") is False
    assert _step(ledger, uid) == before
