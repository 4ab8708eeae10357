"""jsonPTS without I/O (``hw.dispensers.pts2_protocol``) and the PTS-2 driver's reading of
status packets: exact unit conversion, and for any bytes or any JSON a controller might
send, either a valid reply or ``PumpProtocolError`` (fuzzed with hypothesis), never
another exception.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.dispensers.pts2 import Pts2Controller, Pts2Pump
from hw.dispensers.pts2_protocol import (
    Packet,
    Reply,
    decode_request,
    decode_response,
    dumps,
    encode_request,
    from_kop,
    from_ml,
    to_kop,
    to_ml,
)
from hw.pump import PumpError, PumpProtocolError

SENT = [Packet(1, "PumpGetStatus", {"Pump": 1}), Packet(2, "PumpGetTotals", {"Pump": 1, "Nozzle": 1})]


def envelope(*packets: Any) -> bytes:
    return json.dumps({"Protocol": "jsonPTS", "Packets": list(packets)}).encode()


def test_the_request_envelope() -> None:
    body = encode_request([Packet(7, "PumpAuthorize", {"Pump": 1, "Dose": from_ml(12_345), "Price": from_kop(5_499)})])
    assert body == (b'{"Protocol":"jsonPTS","Packets":[{"Id":7,"Type":"PumpAuthorize",'
                    b'"Data":{"Pump":1,"Dose":12.345,"Price":54.99}}]}')
    assert decode_request(body) == [Packet(7, "PumpAuthorize", {"Pump": 1, "Dose": Decimal("12.345"), "Price": Decimal("54.99")})]
    with pytest.raises(ValueError):
        encode_request([Packet(1, "A"), Packet(1, "B")])
    with pytest.raises(TypeError):
        dumps({"Dose": 1.5})


def test_replies_match_by_id_and_errors_are_kept() -> None:
    body = envelope({"Id": 2, "Type": "PumpTotals", "Data": {"Volume": 1.5}},
                    {"Id": 1, "Type": "PumpGetStatus", "Error": True, "Code": 4, "Message": "Pump is offline"})
    replies = decode_response(body, SENT)
    assert replies[2] == Reply(2, "PumpTotals", {"Volume": Decimal("1.5")})
    assert replies[1].error == (4, "Pump is offline")


@pytest.mark.parametrize("body, why", [
    (b"", "not JSON"),
    (b"[]", "not a jsonPTS envelope"),
    (envelope(), "no Packets"),
    (envelope({"Id": 1, "Type": "X"}), r"did not answer packets \[2\]"),
    (envelope({"Id": 1}, {"Id": 1}, {"Id": 2}), "twice"),
    (envelope({"Id": 3}), "not asked"),
    (envelope({"Id": True}), "not asked"),
    (envelope({"Id": 1, "Data": []}, {"Id": 2}), "Data is not an object"),
    (envelope({"Id": 1, "Error": "yes"}, {"Id": 2}), "Error is"),
    (envelope({"Id": 1, "Error": True, "Code": "4"}, {"Id": 2}), "Code"),
    (b'{"Protocol":"jsonPTS","Packets":[{"Id":1,"Data":{"V":NaN}},{"Id":2}]}', "not JSON"),
    (b"\xff\xfe", "not JSON"),
])
def test_unusable_answers_are_protocol_errors(body: bytes, why: str) -> None:
    with pytest.raises(PumpProtocolError, match=why):
        decode_response(body, SENT)


def test_units_are_exact_integers() -> None:
    assert to_ml(Decimal("12.345")) == 12_345 and to_ml(3) == 3_000
    assert to_kop(Decimal("54.99")) == 5_499
    for bad in (Decimal("1.0005"), -1, True, "1", None, Decimal("1e20")):
        with pytest.raises(PumpProtocolError):
            to_ml(bad)
    with pytest.raises(PumpProtocolError, match="more digits"):
        to_kop(Decimal("0.001"))


scalars = (st.none() | st.booleans() | st.integers(-3, 2**40) | st.text(max_size=4)
           | st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-10, max_value=10**6))
json_values = scalars | st.lists(scalars, max_size=2) | st.dictionaries(st.text(max_size=3), scalars, max_size=2)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_any_bytes(body: bytes) -> None:
    try:
        decode_response(body, SENT)
    except PumpProtocolError:
        pass


packet_fields = st.fixed_dictionaries(
    {"Id": st.sampled_from([1, 2]) | json_values},
    optional={"Type": json_values, "Data": json_values, "Error": st.sampled_from([True, False]) | json_values,
              "Code": json_values, "Message": json_values})


@settings(max_examples=150, deadline=None)
@given(st.lists(packet_fields, max_size=3))
def test_fuzz_any_packets(packets: list[dict[str, Any]]) -> None:
    body = dumps({"Protocol": "jsonPTS", "Packets": packets}).encode()
    try:
        replies = decode_response(body, SENT)
    except PumpProtocolError:
        return
    assert set(replies) == {1, 2}


class _Canned(Pts2Controller):
    """A controller that answers from a list (the driver's parsing without HTTP: this
    test is about the bytes' meaning, the HTTP path is tests/hw/test_pts2.py)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__("http://127.0.0.1:1")
        self.reply = reply

    async def request(self, *packets: tuple[str, Any]) -> list[Reply]:
        return [self.reply for _ in packets]


STATUS_TYPES = ["PumpIdleStatus", "PumpFillingStatus", "PumpEndOfTransactionStatus",
                "PumpOfflineStatus", "PumpTotals", "Whatever"]
FIELDS = ["Pump", "Nozzle", "NozzleUp", "Transaction", "Volume", "Amount", "Price"]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(STATUS_TYPES), st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=7))
def test_fuzz_status_packets_give_a_status_or_a_pump_error(ptype: str, data: dict[str, Any]) -> None:
    pump = Pts2Pump(_Canned(Reply(1, ptype, data)), 1, {1: "AI-95", 2: "DT"})
    try:
        status = asyncio.run(pump._dev_status())
    except PumpError:
        return
    assert status.volume_ml >= 0 and status.amount_kop >= 0
    assert status.nozzle in (None, "AI-95", "DT")
