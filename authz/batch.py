"""Batches: many requests as typed arrays (struct of arrays), for the batch evaluators.

A batch names cards, stations, products and categories by their *position* in the model's
tuples, so the native evaluator reads plain integers and makes no Python object per
decision. ``from_requests`` builds one from request objects; benchmarks fill arrays directly.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

from .club_model import ClubModel, ClubSale
from .errors import RequestError
from .fuel_model import FuelModel, FuelRequest, mask_card_no


def _zeros(code: str, n: int) -> array[Any]:
    return array(code, bytes(array(code).itemsize * n))


class FuelBatch:
    """Fuel authorization requests: positions of card, station and product, time, presets.

    A preset of 0 means "none"; at most one of the two may be non-zero per request.
    """

    __slots__ = ("card", "station", "product", "now_utc_s", "preset_volume_ml", "preset_amount_kop")

    def __init__(self, n: int) -> None:
        self.card = _zeros("i", n)
        self.station = _zeros("i", n)
        self.product = _zeros("i", n)
        self.now_utc_s = _zeros("q", n)
        self.preset_volume_ml = _zeros("q", n)
        self.preset_amount_kop = _zeros("q", n)

    def __len__(self) -> int:
        return len(self.card)

    @classmethod
    def from_requests(cls, model: FuelModel, requests: Sequence[FuelRequest]) -> "FuelBatch":
        """A batch of ``requests``; an unknown card, station or product is a RequestError."""
        b = cls(len(requests))
        for i, r in enumerate(requests):
            try:
                b.card[i] = model.card_index[r.card_no]
                b.station[i] = model.station_index[r.station_id]
                b.product[i] = model.product_index[r.product]
            except KeyError:
                raise RequestError(f"request {i}: unknown card {mask_card_no(r.card_no)}, station "
                                   f"{r.station_id!r} or product {r.product!r}") from None
            b.now_utc_s[i] = r.now_utc_s
            b.preset_volume_ml[i] = r.preset_volume_ml or 0
            b.preset_amount_kop[i] = r.preset_amount_kop or 0
        return b

    def request(self, model: FuelModel, i: int) -> FuelRequest:
        """Request ``i`` as a FuelRequest (positions checked, RequestError naming ``i``)."""
        c, s, p = self.card[i], self.station[i], self.product[i]
        if not (0 <= c < len(model.cards) and 0 <= s < len(model.stations) and 0 <= p < len(model.products)):
            raise RequestError(f"request {i}: card, station or product position out of range")
        return FuelRequest(model.cards[c].card_no, model.stations[s].station_id, model.products[p].code,
                           self.now_utc_s[i], self.preset_volume_ml[i] or None,
                           self.preset_amount_kop[i] or None)


class FuelBatchResult:
    """Decisions of a fuel batch, one array per field (binding limit -1 when none);
    ``exceptions`` counts each decision's exceptions (the alerting rules its answer breaks:
    ``len(FuelDecision.exceptions)``, at most 255; ask the single call for the list)."""

    __slots__ = ("reason", "volume_ml", "amount_kop", "unit_price_kop_per_l", "binding_limit_id", "exceptions")

    def __init__(self, n: int) -> None:
        self.reason = _zeros("b", n)
        self.volume_ml = _zeros("q", n)
        self.amount_kop = _zeros("q", n)
        self.unit_price_kop_per_l = _zeros("q", n)
        self.binding_limit_id = _zeros("q", n)
        self.exceptions = _zeros("B", n)

    def __len__(self) -> int:
        return len(self.reason)


class ClubQuoteBatch:
    """Club quote requests: card position, time, channel and method positions, and a slice of
    the shared line arrays (category position, amount)."""

    __slots__ = ("card", "now_utc_s", "channel", "method", "line_start", "line_count",
                 "line_category", "line_amount_kop")

    def __init__(self, n: int, n_lines: int) -> None:
        self.card = _zeros("i", n)
        self.now_utc_s = _zeros("q", n)
        self.channel = _zeros("i", n)
        self.method = _zeros("i", n)
        self.line_start = _zeros("i", n)
        self.line_count = _zeros("i", n)
        self.line_category = _zeros("i", n_lines)
        self.line_amount_kop = _zeros("q", n_lines)

    def __len__(self) -> int:
        return len(self.card)

    @classmethod
    def from_sales(cls, model: ClubModel, sales: Sequence[ClubSale]) -> "ClubQuoteBatch":
        """A batch of ``sales``; unknown cards, categories, channels, methods are RequestErrors."""
        b = cls(len(sales), sum(len(s.lines) for s in sales))
        k = 0
        for i, s in enumerate(sales):
            try:
                b.card[i] = model.card_index[s.card_no]
                b.channel[i] = model.channel_index[s.channel]
                b.method[i] = model.method_index[s.payment_method]
                b.now_utc_s[i] = s.now_utc_s
                b.line_start[i], b.line_count[i] = k, len(s.lines)
                for line in s.lines:
                    b.line_category[k] = model.category_index[line.category]
                    b.line_amount_kop[k] = line.amount_kop
                    k += 1
            except (KeyError, OverflowError, TypeError) as exc:
                raise RequestError(f"sale {i}: {exc!r}") from None
        return b


class ClubQuoteBatchResult:
    """Quotes of a club batch, one array per field of :class:`authz.club_model.ClubQuote`."""

    __slots__ = ("reason", "total_kop", "points_spendable", "max_redeem_points", "accrual_points",
                 "accrual_points_at_max_redeem", "balance_kop")

    def __init__(self, n: int) -> None:
        self.reason = _zeros("b", n)
        for name in self.__slots__[1:]:
            setattr(self, name, _zeros("q", n))

    def __len__(self) -> int:
        return len(self.reason)
