"""The fleet controls' text forms (host.card_rules, read by the admin command line and the
cabinet) and the rule exceptions a site journals (host.alerts), fuzzed with hypothesis:
any input is read or refused with the host's own error, never anything else; every window
reads back from the text it is shown as."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from authz.fuel_model import TimeWindow
from host import alerts
from host import card_rules as CR
from host.errors import InvalidInput
from wire.bodies import BodyError

TEXT = st.text(alphabet=st.sampled_from("montuewdhfrisa-,:0123456789 ;\n\x00ы24"), max_size=40) | st.text(max_size=20)
WINDOWS = st.builds(TimeWindow, st.frozensets(st.integers(0, 6), min_size=1), st.integers(0, 1439),
                    st.integers(1, 1440)).filter(lambda w: w.start_min != w.end_min)


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_any_text_is_read_or_refused_with_invalid_input(text):
    for parse in (CR.parse_window, CR.parse_stations, CR.parse_products, CR.parse_on_breach,
                  lambda t: CR.parse_amount("purchases", t), lambda t: CR.parse_amount(t, "1")):
        try:
            parse(text)
        except InvalidInput as exc:
            assert str(exc)


@settings(max_examples=300, deadline=None)
@given(WINDOWS)
def test_every_window_reads_back_from_its_text(w):
    assert CR.parse_window(CR.window_text(w)) == w


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(-3, 2**64) | st.sampled_from(
    ["LIMIT", "OUTSIDE_TIME_WINDOW", "OK", "STATION_NOT_ALLOWED", ""]) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=8))
def test_any_exceptions_value_gives_rows_or_a_body_error(value):
    body = {"decision": {"reason": "OK", "exceptions": value}, "request": {"station_id": 1, "product": "AI95"},
            "card_no": "7005830000000001", "contract_id": 1, "delivered_volume_ml": 1_000, "amount_kop": 6_000}
    rec = SimpleNamespace(record_id="r", lane="pump-1", body=body, at_utc_s=1)
    try:
        rows = alerts._rule_rows("S1", rec, 2)
    except BodyError as exc:
        assert str(exc)
        return
    assert value is None and rows == [] or len(rows) == len(value)
