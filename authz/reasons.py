"""The one enumeration of decision reasons, shared by fuel and club decisions.

Values are stable integers: they are journaled, sent to the host and used by the native
evaluator, so a value is never reused or renumbered. Documented in docs/rules.md.
"""

from enum import IntEnum


class Reason(IntEnum):
    """Why a decision came out as it did (for an approval: what bound the answer)."""

    #: Approved as asked (fuel: the preset or the station's largest fill bound the volume).
    OK = 0
    #: Fuel, approved for less than asked: a card limit bound the volume.
    LIMIT = 1
    #: Fuel, approved for less than asked: the contract balance (plus credit line) bound it.
    BALANCE = 2
    #: Fuel, declined: a card limit has nothing left in its period.
    LIMIT_EXHAUSTED = 3
    #: Fuel, declined: the contract balance (plus credit line) is used up.
    BALANCE_EXHAUSTED = 4
    #: Declined: the card is on the stop list.
    STOP_LIST = 5
    #: Declined: the card (fuel or club) is blocked.
    CARD_BLOCKED = 6
    #: Fuel, declined: the card expired.
    CARD_EXPIRED = 7
    #: Fuel, declined: the card may not buy this product (its groups or its product list).
    PRODUCT_NOT_ALLOWED = 8
    #: Fuel, declined: the station does not sell this product (region availability, no price).
    PRODUCT_NOT_SOLD = 9
    #: Club, declined: the card is not activated, its payment functions are off.
    CARD_NOT_ACTIVATED = 10
    #: Club, declined: a top-up would take the balance over the card kind's cap.
    BALANCE_CAP = 11
    #: Club, declined: the operation would take the month's turnover over the kind's cap.
    TURNOVER_CAP = 12
    #: Club, declined: more points asked than the card has spendable.
    INSUFFICIENT_POINTS = 13
    #: Club, declined: more points asked than 30% of the eligible lines allows.
    REDEMPTION_CAP = 14
    #: Club, declined: the card balance is less than the part to pay from it.
    INSUFFICIENT_FUNDS = 15
    #: Fuel, declined: the amount preset buys less than one millilitre at the unit price.
    PRESET_TOO_SMALL = 16
    #: Fuel, declined: the card may not buy at this station (home region only, or a list).
    STATION_NOT_ALLOWED = 17
    #: Fuel, declined: the card may not buy at this local day and hour (its time windows).
    OUTSIDE_TIME_WINDOW = 18

    @property
    def approved(self) -> bool:
        """True for the reasons that go with an approval."""
        return self in _APPROVING


_APPROVING = frozenset({Reason.OK, Reason.LIMIT, Reason.BALANCE})
