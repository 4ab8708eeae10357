"""The admin command line and the master-data operations behind it, on both databases."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from authz.club_model import ClubCardKind
from authz.fuel_model import CardStatus, LimitUnit, Period, Scope, Tariff
from host import Conflict, NotFound, master
from host.admin import main, parse_litres, parse_rub
from host.ingest import ingest_batch
from host.ledger import Ledger
from host.publisher import Publisher
from wire import Table

from .edge import CARD, Site

ROOT = Path(__file__).resolve().parents[2]


def run(url: str, *args: str, capsys) -> tuple[int, str, str]:
    code = main(["--db", url, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def admin(ledger_url: str, capsys):
    def call(*args: str) -> tuple[int, str, str]:
        return run(ledger_url, *args, capsys=capsys)
    assert call("init")[0] == 0
    assert call("create-contract", "1", "--tz", "Europe/Moscow", "--balance-rub", "1000", "--name", "Trucks Ltd")[0] == 0
    assert call("issue-card", CARD, "--contract", "1", "--expires", "2028-12-31", "--groups", "fuel,shop")[0] == 0
    return call


def test_amounts_are_parsed_exactly():
    assert parse_rub("1500") == 150_000 and parse_rub("1500.5") == 150_050 and parse_rub("0,07") == 7
    assert parse_litres("40.5") == 40_500 and parse_litres("0.001") == 1
    for bad in ("-1", "1.234", "1e3", "abc", ""):
        with pytest.raises(ValueError):
            parse_rub(bad)


def test_limits_block_tariff_top_up(admin, ledger: Ledger):
    assert admin("set-limit", CARD, "--limit-id", "1", "--litres", "200", "--period", "day")[0] == 0
    assert admin("set-limit", CARD, "--limit-id", "2", "--rub", "50000.50", "--period", "month",
                 "--scope", "group:shop")[0] == 0
    card = ledger.fuel_card(CARD)
    lim = {x.limit_id: x for x in card.limits}
    assert (lim[1].unit, lim[1].period, lim[1].amount) == (LimitUnit.MILLILITRES, Period.DAY, 200_000)
    assert (lim[2].unit, lim[2].amount, lim[2].scope) == (LimitUnit.KOPECKS, 5_000_050, Scope.GROUP)
    assert admin("remove-limit", CARD, "--limit-id", "2")[0] == 0
    assert [x.limit_id for x in ledger.fuel_card(CARD).limits] == [1]

    code, out, _ = admin("block", CARD, "--reason", "stolen")
    assert code == 0 and "blocked" in out and CARD not in out  # masked
    assert CARD in ledger.stop_list() and ledger.fuel_card(CARD).status is CardStatus.BLOCKED
    assert admin("unblock", CARD)[0] == 0
    assert CARD not in ledger.stop_list()

    assert admin("set-tariff", "1", "transit_optimal")[0] == 0
    assert ledger.contract(1).tariff is Tariff.TRANSIT_OPTIMAL
    code, out, _ = admin("top-up", "1", "--rub", "250.25")
    assert code == 0 and "1250.25" in out
    assert ledger.balance_kop(1) == 125_025


def test_a_block_is_a_delta_for_the_publisher(admin, ledger: Ledger):
    pub = Publisher(ledger)
    for d in pub.pending():
        pub.mark_sent(d)
    admin("block", CARD)
    assert [d.table for d in pub.pending()] == [Table.STOP_LIST, Table.FUEL_CARDS] or \
        {d.table for d in pub.pending()} == {Table.STOP_LIST, Table.FUEL_CARDS}


def test_errors_are_clear_and_change_nothing(admin, ledger: Ledger):
    code, _, err = admin("block", "7005830000009999")
    assert code == 1 and "no fuel or club card 70**********9999" in err
    code, _, err = admin("set-limit", CARD, "--limit-id", "1", "--rub", "10", "--litres", "5", "--period", "day")
    assert code == 1 and "one of them" in err
    code, _, err = admin("set-limit", CARD, "--limit-id", "1", "--rub", "-10", "--period", "day")
    assert code == 1 and "1500.50" in err
    code, _, err = admin("set-tariff", "1", "platinum")
    assert code == 1 and "unknown tariff 'platinum'" in err
    code, _, err = admin("top-up", "9", "--rub", "5")
    assert code == 1 and "no contract 9" in err
    code, _, err = admin("create-contract", "1")
    assert code == 1 and "exists already" in err
    assert ledger.balance_kop(1) == 100_000 and ledger.fuel_card(CARD).limits == ()


def test_the_ledger_unreachable_is_exit_3(capsys, tmp_path):
    code, _, err = run("postgresql://postgres@127.0.0.1:1/none", "sites", capsys=capsys)
    assert code == 3 and "cannot connect" in err
    code, _, err = run(f"sqlite:///{tmp_path}/no/such/dir/l.sqlite", "sites", capsys=capsys)
    assert code == 3 and "cannot open" in err


def test_club_cards_at_most_three_per_person_and_replacement_carries_the_balance(admin, ledger: Ledger):
    for no in ("2990000000019", "2990000000026", "2990000000033"):
        code, out, err = admin("issue-club-card", no, "--person", "anna", "--kind", "identified")
        assert code == 0, err
    code, _, err = admin("issue-club-card", "2990000000040", "--person", "anna")
    assert code == 1 and "at most 3 per person" in err
    aid = ledger.club_card("2990000000019").account_id
    ledger.db.run(lambda db: db.execute("UPDATE club_accounts SET balance_kop = 123400 WHERE account_id = ?", (aid,)))
    code, out, err = admin("replace-club-card", "2990000000019", "2990000000057")
    assert code == 0, err
    assert "1234.00 RUB" in out
    assert ledger.club_account_of("2990000000057").account_id == aid
    assert ledger.club_account_of("2990000000057").balance_kop == 123_400
    assert "2990000000019" in ledger.stop_list()
    code, _, err = admin("unblock", "2990000000019")
    assert code == 1 and "replaced" in err
    code, _, err = admin("replace-club-card", "2990000000019", "2990000000064")
    assert code == 1 and "replaced already" in err
    # still three active cards: a fourth is still refused, a block frees a place
    assert admin("issue-club-card", "2990000000040", "--person", "anna")[0] == 1
    assert admin("block", "2990000000026")[0] == 0
    assert admin("issue-club-card", "2990000000040", "--person", "anna")[0] == 0


def test_sites_and_clone_alerts_are_listed(admin, ledger: Ledger, tmp_path):
    from authz import sample
    master.put_products(ledger, sample.PRODUCTS)
    a, b = Site("A-1"), Site("B-2")
    a.fuel_sale(tc=20)
    b.fuel_sale(tc=20, at=a.records[0].at_utc_s + 60)
    for s in (a, b):
        for batch in s.batches(2):
            ingest_batch(ledger, batch)
    code, out, _ = admin("sites")
    assert code == 0 and "A-1" in out and "B-2" in out and "acked up to" in out
    assert [line.split()[2] for line in out.splitlines()[2:]] == ["3", "3"]
    code, out, _ = admin("clone-alerts")
    assert code == 0 and out.count("tc_conflict") == 2 and CARD not in out
    code, out, _ = admin("add-site", "S-NEW", "--keys-dir", str(tmp_path / "keys"))
    assert code == 0 and (tmp_path / "keys" / "sites" / "S-NEW.key").exists()
    assert ledger.site("S-NEW") is not None


def test_help_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "host.admin", "--help"], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert out.returncode == 0
    for name in ("issue-card", "set-limit", "block", "unblock", "set-tariff", "top-up", "replace-club-card", "sites",
                 "clone-alerts", "report"):
        assert name in out.stdout
    bad = subprocess.run([sys.executable, "-m", "host.admin", "no-such"], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert bad.returncode == 2


def test_master_functions_raise_typed_errors(ledger: Ledger):
    with pytest.raises(NotFound):
        master.set_tariff(ledger, 5, Tariff.TRANSIT)
    master.issue_club_card(ledger, "2990000000071", person_id="p", kind=ClubCardKind.IDENTIFIED)
    with pytest.raises(Conflict):
        master.issue_club_card(ledger, "2990000000071", person_id="q", kind=ClubCardKind.IDENTIFIED)


def test_register_club_member_records_phone_and_birth_date_and_refuses_bad_input(admin, ledger: Ledger):
    assert admin("issue-club-card", "2990000000019", "--person", "anna", "--kind", "identified")[0] == 0
    row = "SELECT phone, birth_date FROM web_club_members WHERE person_id = ?"
    for bad, says in ((("--phone", "7900123", "--birth-date", "1990-05-17"), "10 to 15 digits"),
                      (("--phone", "79001234567", "--birth-date", "1990-02-30"), "1990-02-30"),
                      (("--phone", "79001234567", "--birth-date", "2999-01-01"), "from 1900-01-01 to today"),
                      (("--phone", "７９００１２３４５６７", "--birth-date", "1990-05-17"), "10 to 15 digits")):
        code, _, err = admin("register-club-member", "anna", *bad)
        assert code == 1 and says in err, (bad, err)
        assert ledger.db.fetchone(row, ("anna",)) is None
    code, _, err = admin("register-club-member", "nobody", "--phone", "79001234567", "--birth-date", "1990-05-17")
    assert code == 1 and "no club account" in err and ledger.db.fetchone(row, ("nobody",)) is None
    code, out, err = admin("register-club-member", "anna", "--phone", "79001234567", "--birth-date", "1990-05-17")
    assert code == 0, err
    assert "79001234567" not in out and "...4567" in out
    assert tuple(ledger.db.fetchone(row, ("anna",))) == ("79001234567", "1990-05-17")
    code, _, err = admin("register-club-member", "anna", "--phone", "79007654321", "--birth-date", "1991-01-02")
    assert code == 0, err  # a change of phone replaces the old one
    assert tuple(ledger.db.fetchone(row, ("anna",))) == ("79007654321", "1991-01-02")


def test_block_fleet_user_ends_its_sign_in_and_tokens(admin, ledger: Ledger):
    from host import fleet_users as fu
    from host.passwords import Argon2Parameters, Hasher
    hasher = Hasher(Argon2Parameters(time_cost=1, memory_kib=8192, parallelism=1))
    password = "a long enough passphrase 2026"
    uid = fu.create_active_user(ledger, hasher, login="romashka", email="boss@romashka.test", password=password,
                                company="Ромашка")
    other = fu.create_active_user(ledger, hasher, login="vasilek", email="boss@vasilek.test", password=password,
                                  company="Василёк")
    token = fu.create_api_token(ledger, uid, "ERP")
    other_token = fu.create_api_token(ledger, other, "ERP")
    assert fu.api_user(ledger, token) is not None
    code, _, err = admin("block-fleet-user", "nobody")
    assert code == 1 and "no fleet user" in err
    code, _, err = admin("block-fleet-user", "  ")
    assert code == 1 and "login" in err
    assert fu.user(ledger, uid).status == "active"
    code, out, err = admin("block-fleet-user", "Romashka")  # logins are stored lower-cased
    assert code == 0, err
    assert f"id {uid}" in out and "blocked" in out
    assert fu.user(ledger, uid).status == "blocked" and fu.api_user(ledger, token) is None
    assert fu.sign_in(ledger, hasher, "romashka", password, address="127.0.0.1", device_token=None).user is None
    assert fu.user(ledger, other).status == "active" and fu.api_user(ledger, other_token) is not None


# -- the fleet controls (issue 11) ----------------------------------------------------------------

@pytest.fixture
def fleet_admin(admin):
    for cmd in (["put-product", "DT", "--name", "Diesel", "--group", "fuel"],
                ["put-product", "AI95", "--name", "AI-95", "--group", "fuel"],
                ["put-station", "1000", "--region", "7", "--groups", "fuel,shop"],
                ["put-station", "1001", "--region", "8", "--groups", "fuel"]):
        code, _, err = admin(*cmd)
        assert code == 0, (cmd, err)
    return admin


def test_controls_are_set_shown_and_kept(fleet_admin, ledger: Ledger):
    from authz.fuel_model import OnBreach, StationScope, TimeWindow
    code, out, err = fleet_admin("set-controls", CARD, "--products", "DT", "--window", "mon-fri,07:00-19:00",
                                 "--window", "sat,22:00-06:00", "--stations", "1000,1001", "--on-breach", "alert")
    assert code == 0, err
    assert "products DT; time windows mon-fri,07:00-19:00; sat,22:00-06:00; stations 1000,1001; on breach alert" in out
    card = ledger.fuel_card(CARD)
    assert card.products == frozenset({"DT"}) and card.on_breach is OnBreach.ALERT
    assert card.windows == (TimeWindow(frozenset(range(5)), 420, 1140), TimeWindow(frozenset({5}), 1320, 360))
    assert (card.station_scope, card.station_ids) == (StationScope.LISTED, frozenset({1000, 1001}))
    assert fleet_admin("set-controls", CARD, "--stations", "home-region")[0] == 0
    card = ledger.fuel_card(CARD)
    assert (card.station_scope, card.station_ids, card.products) == (StationScope.HOME_REGION, frozenset(),
                                                                     frozenset({"DT"}))
    assert fleet_admin("set-limit", CARD, "--limit-id", "3", "--unit", "purchases", "--amount", "30",
                       "--period", "quarter")[0] == 0
    assert fleet_admin("set-limit", CARD, "--limit-id", "4", "--rub", "90000", "--period", "year",
                       "--on-breach", "alert")[0] == 0
    code, out, _ = fleet_admin("show-card", CARD)
    assert code == 0
    for line in ("products DT", "time windows mon-fri,07:00-19:00; sat,22:00-06:00", "stations home-region",
                 "on breach alert"):
        assert line in out
    assert re.search(r"3 +30 purchases per quarter \(all\) +decline", out)
    assert re.search(r"4 +90000\.00 RUB per year \(all\) +alert", out)
    assert CARD not in out
    assert fleet_admin("set-controls", CARD, "--all-products", "--any-time", "--stations", "network",
                       "--on-breach", "decline")[0] == 0
    card = ledger.fuel_card(CARD)
    assert (card.products, card.windows, card.station_scope, card.on_breach) == (None, (), StationScope.NETWORK,
                                                                                 OnBreach.DECLINE)


def test_a_card_is_issued_with_controls_and_alerting_limits(fleet_admin, ledger: Ledger):
    from authz.fuel_model import LimitUnit, OnBreach, Period, StationScope
    card2 = "7005830000000002"
    code, _, err = fleet_admin("issue-card", card2, "--contract", "1", "--expires", "2028-12-31", "--groups", "fuel",
                               "--limit", "1:quarter:30purchases:alert", "--limit", "2:year:5000RUB",
                               "--products", "DT,AI95", "--stations", "home-region", "--window", "sun,00:00-24:00")
    assert code == 0, err
    card = ledger.fuel_card(card2)
    assert [(x.unit, x.period, x.amount, x.on_breach) for x in card.limits] == [
        (LimitUnit.PURCHASES, Period.QUARTER, 30, OnBreach.ALERT), (LimitUnit.KOPECKS, Period.YEAR, 500_000,
                                                                    OnBreach.DECLINE)]
    assert card.products == frozenset({"DT", "AI95"}) and card.station_scope is StationScope.HOME_REGION
    assert card.windows[0].days == frozenset({6}) and (card.windows[0].start_min, card.windows[0].end_min) == (0, 1440)


@pytest.mark.parametrize("args, says", [
    (["set-controls", CARD, "--products", ""], "give product codes"),
    (["set-controls", CARD, "--products", "DT,KEROSENE"], "allows product 'KEROSENE' the network does not sell"),
    (["set-controls", CARD, "--window", "mon,10:00-10:00"], "a time window of zero length at minute 600"),
    (["set-controls", CARD, "--window", "mon-fri"], "a time window is DAYS,HH:MM-HH:MM"),
    (["set-controls", CARD, "--window", "funday,10:00-11:00"], "unknown day 'funday'"),
    (["set-controls", CARD, "--window", "mon,25:00-26:00"], "a time is HH:MM"),
    (["set-controls", CARD, "--window", "mon,24:00-06:00"], "24:00 only ends a window"),
    (["set-controls", CARD, "--stations", "1000,4242"], "lists unknown station 4242"),
    (["set-controls", CARD, "--stations", "everywhere"], "stations are network, home-region or station ids"),
    (["set-controls", CARD, "--on-breach", "ignore"], "on breach is decline or alert"),
    (["set-controls", CARD, "--products", "DT", "--all-products"], "not both"),
    (["set-controls", CARD], "give at least one of"),
    (["set-limit", CARD, "--limit-id", "5", "--unit", "purchases", "--amount", "-1", "--period", "day"],
     "a count of purchases is a whole number 0 or more, got '-1'"),
    (["set-limit", CARD, "--limit-id", "5", "--unit", "purchases", "--amount", "3", "--period", "transaction"],
     "limit 5 counts purchases per transaction: give it a period"),
    (["set-limit", CARD, "--limit-id", "5", "--unit", "gallons", "--amount", "3", "--period", "day"],
     "a limit's unit is rub, litres or purchases"),
    (["set-limit", CARD, "--limit-id", "5", "--amount", "3", "--period", "day"], "one of them"),
    (["set-limit", CARD, "--limit-id", "5", "--rub", "3", "--period", "fortnight"], "unknown period 'fortnight'"),
    (["issue-card", "7005830000000002", "--contract", "1", "--expires", "2028-12-31", "--limit", "1:day:3purchases",
      "--products", "SHOP"], "allows product 'SHOP' the network does not sell"),
])
def test_bad_controls_are_refused_with_a_clear_line_and_change_nothing(fleet_admin, ledger: Ledger, args, says):
    before = (ledger.fuel_card(CARD), ledger.db.fetchall("SELECT card_no FROM fuel_cards"))
    code, _, err = fleet_admin(*args)
    assert code == 1 and says in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (ledger.fuel_card(CARD), ledger.db.fetchall("SELECT card_no FROM fuel_cards")) == before


def test_window_text_reads_back():
    from host import card_rules as CR
    for text in ("mon-fri,07:00-19:00", "sat,22:00-06:00", "mon,wed,fri,00:00-24:00", "sat-sun,10:30-11:45"):
        assert CR.window_text(CR.parse_window(text)) == text
    assert CR.parse_window("fri-mon,10:00-12:00").days == frozenset({4, 5, 6, 0})  # a range wraps over the week end
    assert CR.parse_window("mon,22:00-00:00").end_min == 1440
