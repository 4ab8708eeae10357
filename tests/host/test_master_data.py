"""Master data made and changed at the host (issue 8): every command on SQLite and
PostgreSQL, each refused input one line, exit 1 and the ledger unchanged to the last row."""

from __future__ import annotations

import re
import stat
from datetime import date
from pathlib import Path

import pytest

from authz.club_model import ClubCardKind
from authz.fuel_model import (
    DiscountKind,
    DiscountRule,
    DiscountWhere,
    ProductGroup,
    Tariff,
)
from host import master
from host.admin import main
from host.errors import Conflict, InvalidInput, NotFound
from host.ledger import Ledger
from host.publisher import Publisher
from host.schema import _V1
from host.versions import current_version
from wire import Table

from .edge import CARD

CLUB = "2990000000019"
TABLES = re.findall(r"CREATE TABLE (\w+)", _V1)


def dump(ledger: Ledger) -> dict[str, list[tuple]]:
    """Every row of every ledger table: what 'nothing changed' compares."""
    return {t: sorted(map(tuple, ledger.db.fetchall(f"SELECT * FROM {t}")), key=repr) for t in TABLES}


@pytest.fixture
def admin(ledger_url: str, capsys):
    def call(*args: str) -> tuple[int, str, str]:
        code = main(["--db", ledger_url, *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    for cmd in (["init"],
                ["put-product", "AI95", "--name", "AI-95", "--group", "fuel"],
                ["put-product", "SHOP", "--name", "Shop goods", "--group", "shop"],
                ["put-product", "HOTEL", "--name", "Hotel night", "--group", "hotel"],
                ["put-station", "1000", "--region", "7", "--groups", "fuel,shop"],
                ["set-price", "1000", "AI95", "--rub", "61.50"],
                ["create-contract", "1", "--balance-rub", "1000"],
                ["issue-card", CARD, "--contract", "1", "--expires", "2028-12-31", "--groups", "fuel,shop",
                 "--limit", "1:day:200L", "--limit", "2:month:5000.50RUB:group:shop"],
                ["issue-club-card", CLUB, "--person", "anna", "--kind", "identified"],
                ["add-site", "S-1"]):
        code, _, err = call(*cmd)
        assert code == 0, (cmd, err)
    return call


def test_master_data_is_made_and_changed_through_the_commands(admin, ledger: Ledger):
    assert admin("put-station", "1001", "--region", "7", "--groups", "fuel", "--max-fill-litres", "120")[0] == 0
    assert admin("put-station", "1001", "--region", "8")[0] == 0  # the region changes, the rest stays
    assert admin("set-price", "1001", "AI95", "--rub", "60.05")[0] == 0
    st = {s.station_id: s for s in ledger.stations()}
    assert (st[1001].region, st[1001].groups, st[1001].max_fill_ml) == (8, frozenset({ProductGroup.FUEL}), 120_000)
    assert st[1001].prices_kop_per_l == {"AI95": 6_005} and st[1000].prices_kop_per_l == {"AI95": 6_150}
    assert admin("set-price", "1001", "AI95", "--remove")[0] == 0
    assert {s.station_id: s for s in ledger.stations()}[1001].prices_kop_per_l == {}

    assert admin("put-product", "AI95", "--name", "AI-95 Pulsar", "--group", "fuel")[0] == 0
    assert ledger.products()["AI95"].name == "AI-95 Pulsar"

    assert admin("set-discount", "regional", "AI95", "--where", "home_region", "--rub", "1.50")[0] == 0
    assert admin("set-discount", "transit", "AI95", "--where", "network", "--percent", "2.5")[0] == 0
    assert admin("set-discount", "regional", "AI95", "--where", "home_region", "--rub", "2")[0] == 0  # replaced
    assert sorted(ledger.discounts(), key=lambda d: d.tariff) == [
        DiscountRule(Tariff.REGIONAL, "AI95", DiscountWhere.HOME_REGION, DiscountKind.KOP_PER_L, 200),
        DiscountRule(Tariff.TRANSIT, "AI95", DiscountWhere.NETWORK, DiscountKind.PERCENT_BP, 250)]
    assert admin("remove-discount", "transit", "AI95", "--where", "network")[0] == 0
    assert len(ledger.discounts()) == 1

    assert admin("set-credit-line", "1", "--rub", "25000")[0] == 0
    assert admin("change-contract", "1", "--tz", "Asia/Omsk", "--region", "7", "--chosen", "1000,1001",
                 "--name", "Trucks Ltd")[0] == 0
    c = ledger.contract(1)
    assert (c.credit_line_kop, c.tz, c.home_region, c.chosen_station_ids) == (2_500_000, "Asia/Omsk", 7, (1000, 1001))
    assert ledger.balance_kop(1) == 100_000  # a change of terms is no payment

    code, out, _ = admin("create-club-account", "--person", "boris", "--kind", "unidentified")
    aid = int(out.split()[2])
    assert code == 0 and ledger.club_account(aid).person_id == "boris" and ledger.club_account(aid).cards == ()
    assert admin("issue-club-card", "2990000000026", "--person", "boris", "--account", str(aid))[0] == 0
    assert ledger.club_account_of("2990000000026").account_id == aid

    assert admin("change-card", CARD, "--expires", "2029-06-30", "--groups", "fuel,shop,car_wash")[0] == 0
    assert ledger.fuel_card(CARD).expires_on == date(2029, 6, 30)


def test_each_change_is_a_replica_delta_in_its_transaction(admin, ledger: Ledger, tmp_path: Path):
    pub = Publisher(ledger)
    for d in pub.pending():
        pub.mark_sent(d)
    rules = tmp_path / "rules.json"
    code, out, _ = admin("club-rules")
    rules.write_text(out.replace('"redemption_cap_bp":3000', '"redemption_cap_bp":2500'))
    for table, cmd in ((Table.PRODUCTS, ["put-product", "DT", "--name", "Diesel", "--group", "fuel"]),
                       (Table.STATIONS, ["put-station", "1000", "--region", "9"]),
                       (Table.STATIONS, ["set-price", "1000", "SHOP", "--rub", "250"]),
                       (Table.TARIFFS, ["set-discount", "fuel_online", "AI95", "--where", "network", "--rub", "0.5"]),
                       (Table.CONTRACTS, ["set-credit-line", "1", "--rub", "100"]),
                       (Table.CONTRACTS, ["change-contract", "1", "--tz", "Asia/Omsk"]),
                       (Table.FUEL_CARDS, ["change-card", CARD, "--expires", "2029-01-31"]),
                       (Table.CLUB_ACCOUNTS, ["create-club-account", "--person", "vera"]),
                       (Table.CLUB_RULES, ["set-club-rules", str(rules)])):
        before = ledger.db.run(lambda db, t=table: current_version(db, t))
        code, _, err = admin(*cmd)
        assert code == 0, (cmd, err)
        assert ledger.db.run(lambda db, t=table: current_version(db, t)) == before + 1, cmd
        deltas = [d for d in pub.pending() if d.table is table]
        assert deltas, cmd
        for d in pub.pending():
            pub.mark_sent(d)
    assert ledger.club_rules().redemption_cap_bp == 2_500


REFUSED = [
    # fuel card numbers: 16 ASCII digits
    ["issue-card", "abc", "--contract", "1", "--expires", "2028-12-31"],
    ["issue-card", "700583000000001", "--contract", "1", "--expires", "2028-12-31"],
    ["issue-card", "70058300000000011", "--contract", "1", "--expires", "2028-12-31"],
    ["issue-card", "７００５８３００００００００１２", "--contract", "1", "--expires", "2028-12-31"],
    ["issue-card", "700583000000001a", "--contract", "1", "--expires", "2028-12-31"],
    ["issue-card", CARD, "--contract", "1", "--expires", "2028-12-31"],  # issued already
    ["issue-card", CLUB, "--contract", "1", "--expires", "2028-12-31"],
    # dates
    ["issue-card", "7005830000000099", "--contract", "1", "--expires", "2020-01-01"],  # in the past
    ["issue-card", "7005830000000099", "--contract", "1", "--expires", "2028-02-30"],
    ["issue-card", "7005830000000099", "--contract", "1", "--expires", "20281231"],
    ["issue-card", "7005830000000099", "--contract", "1", "--expires", "2099-01-01"],  # > 20 years
    ["issue-card", "7005830000000099", "--contract", "9", "--expires", "2028-12-31"],  # no contract
    ["change-card", CARD, "--expires", "2001-01-01"],
    # limits refer to known products and groups the card may buy; amounts in range
    ["issue-card", "7005830000000099", "--contract", "1", "--expires", "2028-12-31", "--limit", "1:day:20L:product:NOPE"],
    ["issue-card", "7005830000000099", "--contract", "1", "--expires", "2028-12-31", "--limit", "1:day:20L:group:hotel"],
    ["issue-card", "7005830000000099", "--contract", "1", "--expires", "2028-12-31", "--limit", "1:day:20L:product:HOTEL"],
    ["issue-card", "7005830000000099", "--contract", "1", "--expires", "2028-12-31", "--limit", "1:fortnight:20L"],
    ["issue-card", "7005830000000099", "--contract", "1", "--expires", "2028-12-31", "--limit", "1:day:20"],
    ["issue-card", "7005830000000099", "--contract", "1", "--expires", "2028-12-31", "--groups", ""],
    ["set-limit", CARD, "--limit-id", "3", "--litres", "1000001", "--period", "day"],
    ["set-limit", CARD, "--limit-id", "3", "--rub", "10000000001", "--period", "day"],
    ["set-limit", CARD, "--limit-id", "3", "--rub", "10", "--period", "day", "--scope", "group:hotel"],
    ["change-card", CARD, "--groups", "fuel"],  # limit 2 is on shop
    ["top-up", "1", "--rub", "10000000000"],  # over the balance's range
    ["top-up", "1", "--rub", "1e3"],
    ["set-credit-line", "1", "--rub", "-5"],
    ["set-credit-line", "1", "--rub", "10000000001"],
    ["set-credit-line", "2", "--rub", "5"],
    # club cards: EAN-13
    ["issue-club-card", "2990000000018", "--person", "boris"],  # check digit wrong
    ["issue-club-card", "299000000001", "--person", "boris"],
    ["issue-club-card", "29900000000190", "--person", "boris"],
    ["issue-club-card", CARD, "--person", "boris"],
    ["issue-club-card", CLUB, "--person", "boris"],  # issued already
    ["replace-club-card", CLUB, "2990000000027"],
    ["create-club-account", "--person", ""],
    ["create-club-account", "--person", "boris", "--kind", "gold"],
    # products, stations, prices, discounts, contracts
    ["put-product", "bad code!", "--name", "x", "--group", "fuel"],
    ["put-product", "AI95", "--name", "AI-95", "--group", "gold"],
    ["put-product", "AI95", "--name", "AI-95", "--group", "hotel"],  # priced at 1000, which sells no hotel
    ["put-station", "2000"],  # new: region and groups needed
    ["put-station", "1000", "--groups", "shop"],  # AI95 is priced there
    ["put-station", "1000", "--max-fill-litres", "0"],
    ["put-station", "0", "--region", "1", "--groups", "fuel"],
    ["set-price", "1000", "AI95", "--rub", "1000001"],
    ["set-price", "1000", "AI95", "--rub", "-1"],
    ["set-price", "1000", "NOPE", "--rub", "50"],
    ["set-price", "1000", "HOTEL", "--rub", "50"],  # the station sells no hotel
    ["set-price", "1001", "AI95", "--rub", "50"],
    ["set-price", "1000", "AI95"],
    ["set-discount", "regional", "AI95", "--where", "network", "--percent", "100.01"],
    ["set-discount", "regional", "NOPE", "--where", "network", "--rub", "1"],
    ["set-discount", "gold", "AI95", "--where", "network", "--rub", "1"],
    ["set-discount", "regional", "AI95", "--where", "moon", "--rub", "1"],
    ["remove-discount", "regional", "AI95", "--where", "network"],
    ["change-contract", "1", "--tz", "Mars/Base"],
    ["change-contract", "1", "--chosen", "1000,1000"],
    ["change-contract", "1", "--chosen", "1,2,3,4"],
    ["change-contract", "1", "--chosen", "9999"],
    ["change-contract", "1"],
    ["create-contract", "2", "--tz", "Nowhere/Else"],
    ["create-contract", "2", "--balance-rub", "abc"],
    # the sample into a ledger with data; keys for an unknown site
    ["seed-sample", "--fuel-cards", "10", "--club-accounts", "5"],
]


def test_a_refused_input_is_one_line_exit_1_and_changes_nothing(admin, ledger: Ledger):
    wrong = []
    before = dump(ledger)
    for cmd in REFUSED:  # one ledger for all (the set-up is most of the time), each checked alone
        code, out, err = admin(*cmd)
        if code != 1 or not err.startswith("error: ") or err.count("\n") != 1:
            wrong.append((cmd, code, out, err))
        elif CARD in err or "7005830000000099" in err:  # card numbers masked
            wrong.append((cmd, "unmasked", err))
        elif dump(ledger) != before:
            wrong.append((cmd, "changed the ledger"))
            before = dump(ledger)
    assert wrong == []


def test_seed_sample_twice_refuses_the_second_and_changes_nothing(ledger_url: str, ledger: Ledger, capsys):
    assert main(["--db", ledger_url, "seed-sample", "--fuel-cards", "20", "--club-accounts", "10"]) == 0
    capsys.readouterr()
    before = dump(ledger)
    assert len(before["fuel_cards"]) == 20 and len(before["contract_entries"]) == len(before["contracts"])
    assert main(["--db", ledger_url, "seed-sample", "--fuel-cards", "20", "--club-accounts", "10"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds master data already" in err and "20 fuel cards" in err
    assert dump(ledger) == before


def test_show_card_and_contract_mask_card_numbers(admin):
    code, out, _ = admin("show-card", CARD)
    assert code == 0 and CARD not in out and "70**********0001" in out
    assert "contract 1" in out and "2028-12-31" in out and "200.000 L per day (all)" in out
    assert "5000.50 RUB per month (group:shop)" in out
    code, out, _ = admin("show-card", CLUB)
    assert code == 0 and CLUB not in out and "account" in out and "anna" in out
    code, out, _ = admin("show-contract", "1")
    assert code == 0 and CARD not in out and "70**********0001" in out and "1000.00 RUB" in out
    code, _, err = admin("show-card", "7005830000009999")
    assert code == 1 and "7005830000009999" not in err
    assert admin("show-contract", "9")[0] == 1


def test_create_keys_makes_the_replica_pair_and_new_site_keys_only(admin, ledger: Ledger, tmp_path: Path):
    keys = tmp_path / "keys"
    code, out, err = admin("create-keys", "--keys-dir", str(keys), "S-1")
    assert code == 0, err
    site_key = keys / "sites" / "S-1.key"
    for f in (site_key, keys / "replica-signing.key"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert site_key.read_text().strip() not in out
    first = site_key.read_bytes(), (keys / "replica-signing.key").read_bytes()
    code, _, err = admin("create-keys", "--keys-dir", str(keys), "S-1")  # never replaced
    assert code == 1 and "has a key already" in err and err.count("\n") == 1
    code, _, err = admin("create-keys", "--keys-dir", str(keys), "S-NOPE")
    assert code == 1 and "add it first" in err
    assert (site_key.read_bytes(), (keys / "replica-signing.key").read_bytes()) == first
    assert not (keys / "sites" / "S-NOPE.key").exists()
    code, out, _ = admin("create-keys", "--keys-dir", str(keys))
    assert code == 0 and "already there" in out
    # add-site with a key already there: refused before the site is registered
    (keys / "sites" / "S-2.key").write_text("00" * 32 + "\n")
    before = dump(ledger)
    code, _, err = admin("add-site", "S-2", "--keys-dir", str(keys))
    assert code == 1 and "already exists" in err and dump(ledger) == before
    code, _, err = admin("add-site", "bad site!", "--keys-dir", str(keys))
    assert code == 1 and not (keys / "sites" / "bad site!.key").exists()


def test_master_functions_check_what_programs_give_them(ledger: Ledger):
    from authz.fuel_model import (
        Contract,
        FuelCard,
        Limit,
        LimitUnit,
        Period,
        Product,
        Scope,
    )
    master.create_contract(ledger, Contract(1, "Europe/Moscow", 0, Tariff.REGIONAL, 0))
    with pytest.raises(InvalidInput):
        master.issue_fuel_card(ledger, FuelCard("abc", 1, date(2028, 1, 1), frozenset({ProductGroup.FUEL})))
    with pytest.raises(NotFound):  # a limit on a product the ledger does not know
        master.issue_fuel_card(ledger, FuelCard(CARD, 1, date(2028, 1, 1), frozenset({ProductGroup.FUEL}),
                                                (Limit(1, LimitUnit.MILLILITRES, Period.DAY, 1, Scope.PRODUCT,
                                                       product="AI95"),)))
    master.put_product(ledger, Product("AI95", "AI-95", ProductGroup.FUEL))
    with pytest.raises(InvalidInput):  # a litre limit over the model's largest volume
        master.issue_fuel_card(ledger, FuelCard(CARD, 1, date(2028, 1, 1), frozenset({ProductGroup.FUEL}),
                                                (Limit(1, LimitUnit.MILLILITRES, Period.DAY, 10**9 + 1),)))
    master.put_station(ledger, 5, region=1, groups={ProductGroup.SHOP})
    with pytest.raises(Conflict):  # station 5 sells no fuel
        master.set_price(ledger, 5, "AI95", 6_000)
    with pytest.raises(InvalidInput):
        master.create_club_account(ledger, "p", "identified")  # type: ignore[arg-type]
    assert master.create_club_account(ledger, "p", ClubCardKind.IDENTIFIED) == 1
    with pytest.raises(InvalidInput):
        master.issue_club_card(ledger, "2990000000018", person_id="p", kind=ClubCardKind.IDENTIFIED)
    assert master.master_data_counts(ledger).contracts == 1


def test_the_host_imports_no_card_hardware_and_has_no_personalise_of_its_own():
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[2]
    code = ("import sys, host.admin, host.master, host.checks; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('hw', 'terminal')); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=60, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-m", "host.admin", "personalise-card", "--help"], capture_output=True,
                         text=True, cwd=root, timeout=60, check=False)
    assert out.returncode == 2  # only 'edgepos host' (terminal.cli) adds it


def test_fuzzed_card_numbers_expiries_and_limits_are_issued_or_refused_cleanly(tmp_path_factory, capsys):
    """Random text as the number, the expiry and a limit of issue-card (SQLite): exit 0 and
    the card as typed, or exit 1 with one line and the ledger unchanged; never a traceback."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from host.checks import parse_date

    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'l.sqlite'}"
    for cmd in (["init"], ["put-product", "AI95", "--name", "AI-95", "--group", "fuel"],
                ["create-contract", "1"]):
        assert main(["--db", url, *cmd]) == 0
    capsys.readouterr()
    led = Ledger.open(url)
    numbers = st.one_of(st.text(alphabet="0123456789", min_size=16, max_size=16),
                        st.text(alphabet="0123456789", min_size=15, max_size=17))
    expiries = st.one_of(st.dates(date(2027, 1, 1), date(2040, 12, 31)), st.dates()).map(date.isoformat)
    text = st.text(alphabet=st.sampled_from(list("0123456789-:.LRUBday") + ["７", " ", "x"]), max_size=20)
    amounts = st.sampled_from(["L", "RUB", "l", ""]).flatmap(
        lambda unit: st.one_of(st.integers(0, 10**6).map(str), st.integers(0, 10**13).map(str), st.just("1.5"),
                               text).map(lambda n: n + unit))
    limits = st.tuples(st.integers(0, 9).map(str), st.sampled_from(["day", "month", "week", "eon"]), amounts,
                       st.sampled_from(["", ":all", ":group:fuel", ":group:shop", ":product:AI95", ":product:X"])
                       ).map(lambda t: f"{t[0]}:{t[1]}:{t[2]}{t[3]}")

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.one_of(numbers, text), st.one_of(expiries, text), st.one_of(limits, text))
    def check(card_no, expires, limit):
        before = dump(led)
        code = main(["--db", url, "issue-card", "--contract", "1", f"--expires={expires}", f"--limit={limit}", "--",
                     card_no])  # '=' and '--': a value that starts with '-' is a value, not an option
        out = capsys.readouterr()
        outcomes.append(code)
        if code == 0:
            card = led.fuel_card(card_no)
            assert card.expires_on == parse_date(expires) and len(card.limits) == 1
            assert re.fullmatch(r"[0-9]{16}", card_no)
            led.db.run(lambda db: db.execute("DELETE FROM fuel_cards WHERE card_no = ?", (card_no,)))
        else:
            assert code == 1 and out.err.startswith("error: ") and out.err.count("\n") == 1, out.err
            assert dump(led) == before

    outcomes: list[int] = []
    try:
        check()
    finally:
        led.close()
    assert 0 in outcomes and 1 in outcomes  # both paths taken


def test_bad_club_rules_are_refused_and_change_nothing(admin, ledger: Ledger, tmp_path: Path):
    code, good, _ = admin("club-rules")
    cases = {"not json": "{", "a field missing": '{"categories": []}',
             "a negative cap": good.replace('"redemption_cap_bp":3000', '"redemption_cap_bp":-1'),
             "an unknown zone": good.replace('"tz":"Europe/Moscow"', '"tz":"Mars/Base"')}
    before = dump(ledger)
    for what, text in cases.items():
        (tmp_path / "r.json").write_text(text)
        code, _, err = admin("set-club-rules", str(tmp_path / "r.json"))
        assert code == 1 and err.count("\n") == 1, (what, err)
        assert dump(ledger) == before, what
    code, _, err = admin("set-club-rules", str(tmp_path / "missing.json"))
    assert code == 1 and "cannot read" in err
