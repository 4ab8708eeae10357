"""The reference evaluators: the rules of :mod:`authz.fuel` and :mod:`authz.club` behind the
evaluator interface (:mod:`authz.interface`), holding their own mutable state."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from . import club, fuel
from .batch import ClubQuoteBatch, ClubQuoteBatchResult, FuelBatch, FuelBatchResult
from .club_model import (AccountState, ClubCommit, ClubModel, ClubPayment, ClubQuote, ClubReturn,
                         ClubReturnResult, ClubSale, ClubState, ClubTopUp, ClubTopUpResult,
                         SaleLine)
from .errors import ModelError, RequestError
from .fuel_model import (FuelCompletion, FuelDecision, FuelModel, FuelRequest, FuelState,
                         LimitCounter)
from .update import ClubUpdate, FuelUpdate, apply_club_update, apply_fuel_update


class ReferenceFuelEvaluator:
    """Fuel decisions by the readable rules; slow, and the specification of the fast one."""

    name = "reference"

    def __init__(self, model: FuelModel) -> None:
        self.model = model
        self.state = FuelState.from_model(model)

    def authorize(self, req: FuelRequest) -> FuelDecision:
        """The largest volume and amount ``req`` may dispense, with the binding reason."""
        return fuel.authorize(self.model, self.state, req)

    def complete(self, req: FuelRequest, decision: FuelDecision, delivered_volume_ml: int) -> FuelCompletion:
        """Charge a delivery under ``decision`` and apply it to balances and counters."""
        return fuel.complete(self.model, self.state, req, decision, delivered_volume_ml)

    def authorize_batch(self, batch: FuelBatch) -> FuelBatchResult:
        """Decisions for every request of ``batch`` (all are checked before any is decided)."""
        requests = [batch.request(self.model, i) for i in range(len(batch))]
        for i, r in enumerate(requests):
            try:
                fuel._resolve(self.model, r)
            except RequestError as exc:
                raise RequestError(f"request {i}: {exc}") from None
        out = FuelBatchResult(len(batch))
        for i, r in enumerate(requests):
            d = fuel.authorize(self.model, self.state, r)
            out.reason[i] = d.reason
            out.volume_ml[i] = d.volume_ml
            out.amount_kop[i] = d.amount_kop
            out.unit_price_kop_per_l[i] = d.unit_price_kop_per_l
            out.binding_limit_id[i] = -1 if d.binding_limit_id is None else d.binding_limit_id
            out.exceptions[i] = min(len(d.exceptions), 255)
        return out

    def apply(self, update: FuelUpdate) -> None:
        """Apply the host's ``update`` now (:mod:`authz.update`): the next decision sees it.
        A ModelError refuses the whole update and changes nothing."""
        self.model, self.state = apply_fuel_update(self.model, self.state, update)

    def set_stop_listed(self, card_no: str, listed: bool) -> bool:
        """Put ``card_no`` on the stop list or take it off, now; returns whether it is a card
        of this model."""
        if type(card_no) is not str or not card_no:
            raise RequestError(f"card_no must be text, got {type(card_no).__name__}")
        if self.state.stop_list is None:
            self.state.stop_list = set(self.model.stop_list)
        (self.state.stop_list.add if listed else self.state.stop_list.discard)(card_no)
        return card_no in self.model.card_index

    def replace_stop_list(self, numbers: Iterable[str]) -> None:
        """The stop list becomes exactly ``numbers`` (a host snapshot of it), now."""
        listed = set()
        for no in numbers:
            if type(no) is not str or not no:
                raise ModelError(f"a stop-list number must be text, got {no!r}")
            listed.add(no)
        self.state.stop_list = listed

    def on_stop_list(self, card_no: str) -> bool:
        """Is ``card_no`` on the stop list now?"""
        return card_no in (self.model.stop_list if self.state.stop_list is None else self.state.stop_list)

    def stop_list_numbers(self) -> Iterator[str]:
        """Every number on the stop list now."""
        return iter(sorted(self.model.stop_list if self.state.stop_list is None else self.state.stop_list))

    def balance_kop(self, contract_id: int) -> int:
        """The contract's balance now (after local completions)."""
        return self.state.balances[contract_id]

    def counter(self, card_no: str, limit_id: int) -> LimitCounter | None:
        """The card limit's counter now, or None when it never counted anything."""
        return self.state.counters.get((card_no, limit_id))


class ReferenceClubEvaluator:
    """Club decisions by the readable rules."""

    name = "reference"

    def __init__(self, model: ClubModel) -> None:
        self.model = model
        self.state = ClubState.from_model(model)

    def apply(self, update: ClubUpdate) -> None:
        """Apply the host's ``update`` now (:mod:`authz.update`): the next decision sees it.
        A ModelError refuses the whole update and changes nothing."""
        self.model, self.state = apply_club_update(self.model, self.state, update)

    def quote(self, sale: ClubSale) -> ClubQuote:
        """What ``sale`` would give (changes nothing)."""
        return club.quote(self.model, self.state, sale)

    def commit(self, sale: ClubSale, payment: ClubPayment, txn_id: int) -> ClubCommit:
        """Commit ``sale`` with ``payment``; an approved commit changes the account."""
        return club.commit(self.model, self.state, sale, payment, txn_id)

    def return_sale(self, ret: ClubReturn) -> ClubReturnResult:
        """Return part or all of an earlier sale."""
        return club.return_sale(self.model, self.state, ret)

    def top_up(self, req: ClubTopUp) -> ClubTopUpResult:
        """Put cash on a card within its caps."""
        return club.top_up(self.model, self.state, req)

    def quote_batch(self, batch: ClubQuoteBatch) -> ClubQuoteBatchResult:
        """Quotes for every sale of ``batch`` (all are checked before any is quoted)."""
        m = self.model
        sales = []
        for i in range(len(batch)):
            c = batch.card[i]
            if not 0 <= c < len(m.cards) or not 0 <= batch.channel[i] < len(m.rules.channels) \
                    or not 0 <= batch.method[i] < len(m.rules.payment_methods):
                raise RequestError(f"sale {i}: card, channel or method position out of range")
            s, n = batch.line_start[i], batch.line_count[i]
            if n <= 0 or s < 0 or s + n > len(batch.line_category):
                raise RequestError(f"sale {i}: line slice {s}:{s + n} out of range")
            lines = []
            for k in range(s, s + n):
                cat = batch.line_category[k]
                if not 0 <= cat < len(m.rules.categories):
                    raise RequestError(f"sale {i}: line {k - s + 1} category position out of range")
                lines.append(SaleLine("", m.rules.categories[cat].code, batch.line_amount_kop[k]))
            sale = ClubSale(m.cards[c].card_no, tuple(lines), batch.now_utc_s[i],
                            m.rules.channels[batch.channel[i]], m.rules.payment_methods[batch.method[i]])
            try:
                club._check_time(sale.now_utc_s)
                club.SaleTotals(m, sale)
            except RequestError as exc:
                raise RequestError(f"sale {i}: {exc}") from None
            sales.append(sale)
        out = ClubQuoteBatchResult(len(batch))
        for i, sale in enumerate(sales):
            q = club.quote(m, self.state, sale)
            out.reason[i] = q.reason
            for name in ClubQuoteBatchResult.__slots__[1:]:
                getattr(out, name)[i] = getattr(q, name)
        return out

    def account(self, account_id: int) -> AccountState:
        """A copy of the account's state now."""
        a = self.state.accounts[account_id]
        return AccountState(a.balance_kop, a.turnover_month, a.turnover_kop, list(a.lots))
