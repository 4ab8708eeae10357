"""A fuel card issued at the host works at the pump (issue 8, the host half): ``edgepos host
issue-card ... --personalise`` writes the virtual card from the ledger's record, and the card
read back through pyscard -> pcscd -> vpcd -> the virtual card carries the ledger's number,
contract, expiry, groups and limits, under the issuer's diversified key and the PIN given."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from host.ledger import Ledger
from hw.card.application import FuelCardApplication
from hw.card.keys import SoftwareKeyStore, generate_master_key, save_master_key
from hw.card.reader import CardInserted, CardReader
from hw.sim.card import VirtualCard
from terminal.cli import main
from tests.hw.pcsc import READER, pcscd, settle_empty_reader  # noqa: F401  (fixtures)

CARD = "7005831234567890"
PIN = "4826"


@pytest.fixture
def host(tmp_path: Path, capsys):
    """``edgepos host`` on a SQLite ledger with products, a contract; the issuer key and PIN file."""
    db = f"sqlite:///{tmp_path / 'host.sqlite'}"

    def call(*args: str) -> tuple[int, str, str]:
        code = main(["host", "--db", db, *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    for cmd in (["init"], ["put-product", "AI95", "--name", "AI-95", "--group", "fuel"],
                ["put-product", "SHOP", "--name", "Shop goods", "--group", "shop"],
                ["create-contract", "77", "--tz", "Asia/Omsk", "--balance-rub", "5000"]):
        assert call(*cmd)[0] == 0, cmd
    save_master_key(tmp_path / "issuer.key", generate_master_key())
    (tmp_path / "pin").write_text(PIN + "\n")
    call.db = db  # type: ignore[attr-defined]
    return call


def issue(host, tmp_path: Path, *extra: str, card: str = CARD) -> tuple[int, str, str]:
    return host("issue-card", card, "--contract", "77", "--expires", "2029-03-31", "--groups", "fuel,shop",
                "--limit", "1:day:150L", "--limit", "2:month:30000RUB:group:shop", "--limit", "3:transaction:60L:product:AI95",
                "--personalise", str(tmp_path / "card.json"), "--pin-file", str(tmp_path / "pin"),
                "--issuer-key-file", str(tmp_path / "issuer.key"), *extra)


def test_a_card_issued_at_the_host_reads_back_over_pcscd_as_the_ledger_holds_it(host, tmp_path, pcscd):  # noqa: F811
    code, out, err = issue(host, tmp_path)
    assert code == 0, err
    assert CARD not in out and PIN not in out and (tmp_path / "issuer.key").read_text().strip() not in out
    path = tmp_path / "card.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the card's key and PIN
    with Ledger.open(host.db) as led:
        issued = led.fuel_card(CARD)
    keys = SoftwareKeyStore.from_file(tmp_path / "issuer.key")

    async def read():
        settle_empty_reader()
        card = VirtualCard(path)
        try:
            async with CardReader(READER) as r:
                it = r.events()
                card.insert()
                while not isinstance(await asyncio.wait_for(anext(it), 3.0), CardInserted):
                    pass
                app = FuelCardApplication(r, keys)
                data = await app.read_card()  # checks the data MAC under the diversified key
                assert await app.pin_tries_left() == 3
                await app.verify_pin(PIN)
                return data
        finally:
            card.pull()
            settle_empty_reader()

    data = asyncio.run(asyncio.wait_for(read(), 20))
    assert data.card == issued
    assert (data.card.card_no, data.card.contract_id, data.card.expires_on.isoformat()) == (CARD, 77, "2029-03-31")
    assert [(lim.limit_id, lim.amount) for lim in data.card.limits] == [(1, 150_000), (2, 3_000_000), (3, 60_000)]
    assert data.state.txn_counter == 0


def test_personalise_card_rewrites_the_card_from_the_ledger_after_a_change(host, tmp_path):
    assert issue(host, tmp_path)[0] == 0
    assert host("set-limit", CARD, "--limit-id", "1", "--litres", "90", "--period", "day")[0] == 0
    args = ["--personalise", str(tmp_path / "card.json"), "--pin-file", str(tmp_path / "pin"),
            "--issuer-key-file", str(tmp_path / "issuer.key")]
    code, _, err = host("personalise-card", CARD, *args)
    assert code == 1 and "exists" in err  # never overwritten by accident
    assert host("personalise-card", CARD, *args, "--overwrite")[0] == 0
    from hw.sim.card import CardApplet, CardState, DirectChannel
    app = FuelCardApplication(DirectChannel(CardApplet(CardState.load(tmp_path / "card.json"))),
                              SoftwareKeyStore.from_file(tmp_path / "issuer.key"))
    data = asyncio.run(asyncio.wait_for(app.read_card(), 10))
    with Ledger.open(host.db) as led:
        assert data.card == led.fuel_card(CARD) and data.card.limits[0].amount == 90_000


@pytest.mark.parametrize("bad", ["pin", "no-pin-file", "key", "no-key", "dir", "card"])
def test_a_bad_card_input_refuses_before_the_ledger_changes(host, tmp_path, bad):
    extra: tuple[str, ...] = ()
    card = CARD
    if bad == "pin":
        (tmp_path / "pin").write_text("12\n")
    elif bad == "no-pin-file":
        (tmp_path / "pin").unlink()
    elif bad == "key":
        (tmp_path / "issuer.key").write_text("zz\n")
    elif bad == "dir":
        extra = ("--personalise", str(tmp_path / "no" / "such" / "card.json"))
    elif bad == "card":
        card = "12345"
    if bad == "no-key":
        code, _, err = host("issue-card", CARD, "--contract", "77", "--expires", "2029-03-31",
                            "--personalise", str(tmp_path / "card.json"), "--pin-file", str(tmp_path / "pin"))
    else:
        code, _, err = issue(host, tmp_path, *extra, card=card)
    assert code == 1 and err.count("\n") == 1, err
    assert "12\n" not in err and PIN not in err
    with Ledger.open(host.db) as led:
        assert led.contract_cards(77) == []
    assert not (tmp_path / "card.json").exists()


def test_the_pin_is_asked_twice_at_a_terminal_and_never_taken_without_one():
    from terminal.issuing import IssuingError, read_pin
    answers = iter(["1357", "1357"])
    assert read_pin(None, prompt=lambda _: next(answers), interactive=True) == "1357"
    answers = iter(["1357", "1358"])
    with pytest.raises(IssuingError, match="differ"):
        read_pin(None, prompt=lambda _: next(answers), interactive=True)
    with pytest.raises(IssuingError, match="--pin-file"):
        read_pin(None, prompt=lambda _: "1357", interactive=False)
    with pytest.raises(IssuingError, match="4 to 12 digits") as exc:
        read_pin(None, prompt=lambda _: "١٢٣٤", interactive=True)  # Arabic-Indic digits
    assert "١٢٣٤" not in str(exc.value)
