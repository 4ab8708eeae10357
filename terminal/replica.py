"""The site's replica: the fuel and club models the host sends, loaded into the native
evaluator, with the local spend since the last host update applied on top.

Every purchase on this site goes through the one evaluator instance of its business, so two
purchases never spend the same balance twice; the journal is the record of that spend, and
:meth:`Replica.replay` re-applies it after a restart (the evaluator state is memory only).
A replica from the host re-applies only the spend past each row's watermark, and translates
every balance row an update brings the same way (the balance rule, :mod:`authz.balance`,
:mod:`terminal.own_spend`; docs/sync.md).

The replica is also where the lanes reserve what the evaluators do not keep: points
redeemed offline per card, returns decided but not yet on disk per sale, and the fuel
authorizations open per contract and per card. A lane checks and reserves in one
synchronous step (no ``await`` between), so every rule that spans lanes is decided for the
whole site at once (docs/lanes.md).
Until the sync issue brings host snapshots, the simulated site builds its models with
:mod:`authz.sample` (the fuel network and the club chain as columns, :mod:`native.compact`,
so a replica of a million cards costs no Python object per card), with the site's own
station and prices from the configuration.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from authz import sample
from authz.balance import ClubSpend, account_after, allowance_for, club_card_of, named_watermark, own_watermark
from authz.club_model import (
    ClubCard,
    ClubModel,
    ClubPayment,
    ClubReturn,
    ClubSale,
    ClubTopUp,
    SaleLine,
)
from authz.errors import ModelError, RequestError
from authz.fuel_model import (
    FuelCard,
    FuelDecision,
    FuelModel,
    FuelRequest,
    ProductGroup,
    Station,
    Tariff,
)
from authz.update import ClubUpdate, FuelUpdate
from native import club_evaluator, fuel_evaluator
from native.compact import (
    ClubColumns,
    FuelColumns,
    foreign_stop_keys,
    StoredCards,
    release_free_memory,
    sample_club_columns,
)
from native.compact import sample_fuel_columns as compact_sample
from wire.bodies import decision_from_json, decision_json
from wire.messages import ClubAccountRow, FuelCardRow, ReplicaDelta, Table, row_key

from .config import SiteConfig
from .follower import FullSnapshot, ReplicaUpdate
from .own_spend import (
    PROVISIONAL_SEQ,
    SPEND_KINDS,
    OwnSpend,
    SpendItem,
    SpendSource,
    approved_record,
    club_item,
    fuel_item,
    item_of,
    lane_spend,
    spend_of,
    translate_account,
    translate_card,
    translate_contract,
)

log = logging.getLogger("edgepos.replica")

#: Journal record kinds whose bodies change evaluator state (see lanes' record bodies).
FUEL_COMPLETED = "fuel.completed"
CLUB_COMMITTED = "till.sale_committed"
CLUB_RETURNED = "till.return"
CLUB_TOPPED_UP = "till.topup"


#: The host tables of each business (a pump site follows the fuel ones, a till site the club ones).
FUEL_TABLES = (Table.PRODUCTS, Table.STATIONS, Table.TARIFFS, Table.CONTRACTS, Table.FUEL_CARDS, Table.STOP_LIST)
CLUB_TABLES = (Table.CLUB_RULES, Table.CLUB_ACCOUNTS)



def _accounts_now(ev: Any, cm: ClubModel, aids: Iterable[int]) -> Iterator[tuple[int, Any, tuple[ClubCard, ...]]]:
    """Each of accounts ``aids``, in id order, as club evaluator ``ev`` holds it now (its
    balance, turnovers and lots over the model's row) with its cards: what a translation or
    a replay of the site's own spend starts from."""
    wanted = set(aids)
    cards_of: dict[int, list[ClubCard]] = {a: [] for a in wanted}
    for i in range(len(cm.cards)):
        c = cm.cards[i]
        if c.account_id in cards_of:
            cards_of[c.account_id].append(c)
    for aid in sorted(wanted):
        st = ev.account(aid)
        acct = replace(cm.accounts[cm.account_index[aid]], balance_kop=st.balance_kop,
                       turnover_month=st.turnover_month, turnover_kop=st.turnover_kop, lots=tuple(st.lots))
        yield aid, acct, tuple(cards_of[aid])


class ReplicaUpdateError(ModelError):
    """A replica update the site refuses as a whole: rows that disagree with each other or
    with the replica (a card of an unknown contract, a limit of an unknown product, an
    unknown tariff...), or a delta that does not follow the version held. Nothing changed."""


@dataclass(frozen=True, slots=True)
class ReplicaVersion:
    """Which host snapshot the replica holds (0: generated locally by the simulation)."""

    fuel: int = 0
    club: int = 0


class Replica:
    """The evaluators of one site over its fuel and club models, plus offline allowances.

    The fuel replica is a FuelModel (small replicas, tests) or FuelColumns (the compact
    replica, :mod:`native.compact`: no Python object per card; what ``simulated`` builds by
    default). Either way ``fuel_model`` is a FuelModel: the one given, or a read-only
    :class:`native.compact.CompactFuelModel` view over the evaluator's tables that makes a
    card, contract or counter only when asked. Prefer ``fuel_card_count``, ``fuel_card`` and
    ``has_fuel_card`` in new code: they cost the same for both kinds.

    The club replica likewise is a ClubModel or ClubColumns, and ``club_model`` a ClubModel
    (for columns a :class:`native.compact.CompactClubModel` view, read-only, whose accounts
    are the evaluator's now).
    """

    def __init__(self, fuel_model: FuelModel | FuelColumns | None, club_model: ClubModel | ClubColumns | None, *,
                 version: ReplicaVersion = ReplicaVersion(), impl: str | None = None) -> None:
        #: this site's id when the replica is the host's (from_rows): its rows carry the balance
        #: rule's watermarks and allowances (:mod:`authz.balance`); None: a generated replica
        self.site_id: str | None = None
        #: this site's spend (its journal), set by :meth:`follow_own_spend`: re-applied on top
        #: of the host's figures past each row's watermark
        self.own: SpendSource | None = None
        self.fuel = fuel_evaluator(fuel_model, impl) if fuel_model is not None else None
        self._fuel_model = fuel_model if isinstance(fuel_model, FuelModel) else None
        self._club_ev: Any = None
        self._club_view: Any = None
        self.club = club_evaluator(club_model, impl) if club_model is not None else None
        self._club_model = club_model if isinstance(club_model, ClubModel) else None
        self.version = version
        #: the version of each host table this replica holds (what a delta must follow)
        self.table_versions: dict[Table, int] = {}
        #: points redeemed per club card on this site since the last host update
        self.offline_redeemed: Counter[str] = Counter()
        #: approved returns decided and not yet known on disk: sale id -> {record id: kop}
        self.returns_in_flight: dict[str, dict[str, int]] = {}
        #: kopecks held per fuel contract by the site's open authorizations
        self.fuel_holds: dict[int, int] = {}
        #: fuel cards with an open authorization on this site: card number -> transaction id
        self.fuel_open_cards: dict[str, str] = {}
        #: this site's batch watermark of each contract, fuel card and club account row: the one
        #: the row names it with, else the one the last row of that key named it with (kept:
        #: the host stops naming a site only once this covers its spend there); absent: 0
        self.own_watermarks: dict[tuple[Table, Any], int] = {}
        #: this site's offline allowance per contract (kopecks of uncounted spend), where the
        #: host gives one
        self.allowances: dict[int, int] = {}
        #: this site's spend read from the journal so far (up to seq ``_spend_seq``), by row;
        #: what a row's watermark passes is dropped, so it holds about the uncounted spend
        self._spend = OwnSpend()
        self._spend_seq = 0
        #: the lanes' operations and the journal, matched (the balance rule under concurrency):
        #: operations a lane applied that the journal has not been read past yet (in the spend
        #: index at provisional seqs), by key; fuel completions the journal was read past before
        #: their lane applied them (applied by the read: the lane's apply is then skipped); and,
        #: while a table is built off the loop, the lanes' operations noted meanwhile (the index
        #: is the build's and stays as it was until the swap)
        self._pending: dict[str, list[SpendItem]] = {}
        self._read_first: Counter[str] = Counter()
        self._deferred: list[SpendItem] | None = None
        self._provisional = itertools.count(PROVISIONAL_SEQ)
        #: the kept watermarks of rows that name this site no more, to be written beside the
        #: journal (:meth:`persist_marks`), and those written (the balance rule's pruning)
        self.marks_to_save: dict[tuple[Table, Any], int] = {}
        self._saved_marks: dict[tuple[Table, Any], int] = {}
        #: the kept watermarks written beside the journal that no row needs any more (its row
        #: deleted, or naming this site again), to be deleted after the store commits
        #: (:meth:`drop_marks`)
        self.marks_to_drop: set[tuple[Table, Any]] = set()
        #: how many stop-list updates were applied (a plan made against another is stale), and
        #: the numbers the deltas among them changed since the last whole list (the evaluator
        #: keeps those beside its packed list: :mod:`terminal.stop_list_swap` replaces the list
        #: whole once they are many)
        self.stop_generation = 0
        self.stop_touched: set[str] = set()
        #: while a fuel-card table is built off the loop (:mod:`terminal.snapshot_swap`), the
        #: bodies of the completions applied meanwhile: their counters are done again on it
        self.fuel_recording: list[dict] | None = None
        #: the contracts' time zones read so far, for the fuel model they were read from
        self._tz_kept: tuple[Any, dict[int, str | None]] = (None, {})

    def return_on_disk(self, sale_id: str, record_id: str) -> None:
        """The return ``record_id`` of ``sale_id`` is committed: the journal counts it now."""
        pending = self.returns_in_flight.get(sale_id)
        if pending is not None:
            pending.pop(record_id, None)
            if not pending:
                del self.returns_in_flight[sale_id]

    @property
    def club(self) -> Any:
        """The club evaluator the tills call. On a replica that follows its site's spend it is
        wrapped (:class:`_TrackedClub`) so that every commit, return and top-up is matched with
        its journal record (the balance rule under concurrency, :meth:`_lane_applied`)."""
        return self._club_view

    @club.setter
    def club(self, ev: Any) -> None:
        self._club_ev = ev
        self._club_view = _TrackedClub(ev, self) if ev is not None and self.tracking else ev

    @property
    def club_evaluator(self) -> Any:
        """The club evaluator itself (what :attr:`club` wraps on a replica that follows its
        site's spend)."""
        return self._club_ev

    @property
    def tracking(self) -> bool:
        """Does this replica follow its site's own spend (a host replica with its journal)?"""
        return self.own is not None and self.site_id is not None

    def _lane_applied(self, item: SpendItem) -> None:
        """A lane applied ``item`` (a provisional seq) to the evaluators: indexed as pending
        until the journal is read past its record, or noted for the swap while a build runs."""
        if self._deferred is not None:
            self._deferred.append(item)
            return
        self._spend.add(item)
        self._pending.setdefault(item.key, []).append(item)

    def begin_build(self) -> None:
        """A table is built off the loop on the spend index as it is now: the lanes'
        operations from now on are noted aside (the swap does them again on the new table)."""
        if self.tracking and self._deferred is None:
            self._deferred = []

    def end_build(self) -> None:
        """The build is swapped in or dropped: the operations noted meanwhile join the index
        as pending (the evaluator current now holds them either way)."""
        deferred, self._deferred = self._deferred, None
        for item in deferred or ():
            self._lane_applied(item)

    def _journal_read(self, item: SpendItem, body: dict) -> None:
        """A spend record read from the journal: matched with the lane's operation it records
        (its provisional entry replaced by the journaled one), or, for a fuel completion its
        lane has not applied yet, applied now (its lane's apply will be skipped), so the index
        and the evaluators hold the same operations at every read."""
        waiting = self._pending.get(item.key)
        if waiting:
            self._spend.remove(waiting.pop(0))
            if not waiting:
                del self._pending[item.key]
        elif item.fuel is not None and self.fuel is not None:
            try:
                self._complete_fuel(body)
            except RequestError as exc:  # as the lane would: the host settles it
                log.error("replica: a journaled completion not applied: %s", exc)
            self._read_first[item.key] += 1
        self._spend.add(item)

    def _complete_fuel(self, body: dict) -> None:
        assert self.fuel is not None
        req, decision = fuel_request_from_body(body["request"]), fuel_decision_from_body(body["decision"])
        self.fuel.complete(req, decision, body["delivered_volume_ml"])

    @property
    def fuel_model(self) -> FuelModel | None:
        """The fuel replica as a FuelModel (a view over the evaluator for a compact replica)."""
        if self._fuel_model is None and self.fuel is not None:
            self._fuel_model = self.fuel.model
        return self._fuel_model

    @property
    def club_model(self) -> ClubModel | None:
        """The club replica as a ClubModel (a view over the evaluator for a compact replica:
        ``cards[i]``, ``card_index``, ``accounts[i]``, ``account_index`` make an object only
        when asked)."""
        if self._club_model is None and self.club is not None:
            self._club_model = self.club.model
        return self._club_model

    @property
    def fuel_card_count(self) -> int:
        """Fuel cards in the replica (0 without a fuel replica); no object is made."""
        if self.fuel is None:
            return 0
        return self.fuel.card_count if hasattr(self.fuel, "card_count") else len(self.fuel.model.cards)

    def has_fuel_card(self, card_no: str) -> bool:
        """Is ``card_no`` a card of the fuel replica?"""
        return self.fuel is not None and card_no in self.fuel_model.card_index

    def fuel_card(self, card_no: str) -> FuelCard | None:
        """The fuel card ``card_no`` (made on demand in a compact replica), or None."""
        if self.fuel is None:
            return None
        i = self.fuel_model.card_index.get(card_no) if isinstance(card_no, str) else None
        return None if i is None else self.fuel_model.cards[i]

    def fuel_card_numbers(self) -> Iterator[str]:
        """Every fuel card number, in replica order (a million strings for a million cards:
        prefer ``fuel_card_number(i)``)."""
        return iter(self.fuel_model.card_index) if self.fuel is not None else iter(())

    def fuel_card_number(self, i: int) -> str:
        """The number of the fuel card at position ``i``."""
        return self.fuel_model.cards[i].card_no if not hasattr(self.fuel, "card_number") else self.fuel.card_number(i)

    @classmethod
    def simulated(cls, config: SiteConfig, *, fuel_cards: int = 10_000, club_accounts: int = 5_000,
                  stop_list: int = 0, seed: int = 1, impl: str | None = None, compact: bool = True) -> "Replica":
        """A generated network and club chain in which this site's station is the one configured;
        ``stop_list`` pads the stop list with that many numbers of cards issued elsewhere.

        ``compact`` (the default) builds the fuel and club replicas as columns (no FuelModel or
        ClubModel objects: a million fuel cards in ~0.3 s and ~60 MB, 100,000 club accounts in
        ~0.1 s and ~15 MB); the network and the chain, and so every decision, are the same as
        with ``compact=False`` (the models of ``authz.sample.fuel_model`` and ``club_model``)."""
        fuel = None
        if config.pumps:
            base = compact_sample(n_cards=fuel_cards, seed=seed) if compact else sample.fuel_model(n_cards=fuel_cards, seed=seed)
            product_index = {p.code: p for p in base.products}
            groups = {ProductGroup.FUEL}
            for code in config.prices_kop_per_l:
                p = product_index.get(code)
                if p is not None:
                    groups.add(p.group)
            prices = {c: v for c, v in config.prices_kop_per_l.items() if c in product_index}
            own = Station(config.station_id, config.region, frozenset(groups), prices)
            if compact:
                fuel = base.with_station(own)
                pad = max(0, stop_list - fuel.stop_list_size)
                if pad:
                    fuel = fuel.with_stop_keys(foreign_stop_keys(pad))
                del base
            else:
                stations = [s for s in base.stations if s.station_id != config.station_id] + [own]
                stops = set(base.stop_list)
                stops.update(f"700584{i:010d}" for i in range(max(0, stop_list - len(stops))))
                fuel = FuelModel(products=base.products, stations=stations, contracts=base.contracts,
                                 cards=base.cards, discounts=base.discounts, stop_list=stops,
                                 counters=base.counters)
        club = None
        if config.tills:
            club = sample_club_columns(n_accounts=club_accounts, seed=seed + 1) if compact else \
                sample.club_model(n_accounts=club_accounts, seed=seed + 1)
        replica = cls(fuel, club, impl=impl)
        if compact:
            del fuel, club
            release_free_memory()  # the columns' pages, now packed into the evaluators
        return replica

    # -- the host's tables --

    @classmethod
    def from_rows(cls, rows: Mapping[Table, Iterable[Any]], *, fuel: bool = True, club: bool = True,
                  versions: Mapping[Table, int] | None = None, impl: str | None = None,
                  site_id: str | None = None) -> Replica:
        """The replica of a site built from a complete set of the host's tables.

        ``rows[table]`` is every row of ``table`` as :mod:`wire` decodes them (an iterable,
        read once, so a store can stream a million cards; a missing table is empty).
        ``fuel`` builds the fuel business from :data:`FUEL_TABLES` (a pump site), ``club``
        the club from :data:`CLUB_TABLES` (a till site; ``club_rules`` holds its one row).
        Fuel cards' counters and club accounts' lots are the host's. ``versions`` is the
        version of each table the rows are (kept in :attr:`table_versions`: a delta must
        follow it). With the native evaluator (the default) no Python object is kept per
        card: the rows become columns, then packed tables (:mod:`native.compact`).

        ``site_id`` (this site's): the rows' figures are the host's, and the site's own spend
        the host has not counted is re-applied on them by :meth:`replay` once
        :meth:`follow_own_spend` gives the journal (the balance rule, :mod:`authz.balance`);
        each row's watermark and allowance for this site are kept for it.

        Raises :class:`ReplicaUpdateError` when the rows are inconsistent."""
        marks: dict[tuple[Table, Any], int] = {}
        allowances: dict[int, int] = {}
        if site_id is not None:
            rows = _noting_balance_fields(rows, site_id, marks, allowances)
        try:
            fuel_src = _fuel_source(rows) if fuel else None
            club_src = _club_source(rows) if club else None
            replica = cls(fuel_src, club_src, impl=impl)
        except ModelError as exc:
            raise ReplicaUpdateError(f"the host's tables are inconsistent: {exc}") from None
        del fuel_src, club_src
        release_free_memory()
        replica.table_versions = {Table(t): int(v) for t, v in (versions or {}).items()}
        replica.site_id, replica.own_watermarks, replica.allowances = site_id, marks, allowances
        return replica

    def follow_own_spend(self, source: SpendSource) -> None:
        """From now on, re-apply ``source``'s spend (this site's journal) on top of the host's
        balances, counters and accounts: at :meth:`replay`, and on every row an update brings."""
        if self.site_id is None:
            self.site_id = source.site_id
        elif source.site_id != self.site_id:
            raise ReplicaUpdateError(f"the replica is site {self.site_id}'s, not {source.site_id}'s")
        self.own = source
        self.club = self._club_ev  # wrapped now: the tills' operations are matched with the journal
        load = getattr(source, "load_marks", None)
        if load is not None:  # rows stored without this site's name keep the mark they last had
            saved = load()
            self._saved_marks.update(saved)
            for key, w in saved.items():
                if key in self.own_watermarks or not self._holds_row(key):
                    # a stored row names the site (it wins), or the row is gone: a mark left by a
                    # run that stopped before it could drop it (:meth:`drop_marks`)
                    self.marks_to_drop.add(key)
                else:
                    self.own_watermarks[key] = w

    def _holds_row(self, key: tuple[Table, Any]) -> bool:
        """Does the replica hold the contract, fuel card or club account row ``key``?"""
        table, k = key
        if table is Table.FUEL_CARDS:
            return self.fuel is not None and self.has_fuel_card(k)
        if table is Table.CONTRACTS:
            m = self.fuel_model
            return m is not None and k in m.contract_index
        cm = self.club_model
        return cm is not None and k in cm.account_index

    async def drop_marks(self) -> int:
        """Delete from beside the journal (``SpendSource.drop_marks``) the kept watermarks no row
        needs any more (:attr:`marks_to_drop`): of a row deleted (by a delta, or absent from a
        snapshot) and of a row that names this site again (its stored watermark wins). Call it
        after the store has committed the update that made them so: a site stopped before
        still finds every mark its stored rows need, and one it does not need is dropped at
        the next start. Returns how many were deleted."""
        keys, self.marks_to_drop = self.marks_to_drop, set()
        drop = getattr(self.own, "drop_marks", None)
        if not keys or drop is None:
            return 0
        try:
            await drop(keys)
        except BaseException:
            self.marks_to_drop |= keys
            raise
        for key in keys:
            self._saved_marks.pop(key, None)
        return len(keys)

    async def persist_marks(self) -> int:
        """Write the kept watermarks of rows that name this site no more (:attr:`marks_to_save`)
        beside the journal (``SpendSource.save_marks``), before those rows are stored: after a
        restart such a row still has its mark (a missing watermark is an unchanged one,
        :func:`authz.balance.kept_watermark`). Returns how many were written."""
        marks, self.marks_to_save = self.marks_to_save, {}
        save = getattr(self.own, "save_marks", None)
        if not marks or save is None:
            return 0
        try:
            await save(marks)
        except BaseException:
            self.marks_to_save.update(marks)
            raise
        self._saved_marks.update(marks)
        return len(marks)

    def apply_update(self, update: ReplicaUpdate) -> None:
        """Apply one host update of one table (a :class:`wire.ReplicaDelta`, or a
        :class:`terminal.follower.FullSnapshot` replacing the whole table) to the running
        evaluators, at once: the next decision sees it, one already made keeps its numbers
        (a completion charges at the price it was authorized at). Call it on the event loop,
        between two lane steps (the lanes call the evaluators synchronously, so each
        decision sees the replica before or after the update, never half of it).

        Upserted rows carry the host's state (a contract's balance, a card's counters, an
        account's balance and lots); the rules are in :mod:`authz.update`. A table of a
        business this site does not run is only counted (its version). A delta whose
        ``from_version`` is not the version held, or rows that would make the replica
        inconsistent, raise :class:`ReplicaUpdateError` and change nothing.

        A snapshot of fuel cards or club accounts builds that business's evaluator anew
        from the rows (about a second per million cards) and swaps it in one assignment."""
        table = Table(update.table)
        held = self.table_versions.get(table)
        if isinstance(update, ReplicaDelta):
            if held is not None and update.from_version != held:
                raise ReplicaUpdateError(f"{table.value} delta {update.from_version}->{update.to_version} "
                                         f"does not follow version {held}")
            new_version = update.to_version
        elif isinstance(update, FullSnapshot):
            new_version = update.version
        else:
            raise ReplicaUpdateError(f"not a replica update: {type(update).__name__}")
        try:
            noted: dict[tuple[Table, Any], int] = {}
            allowed: dict[int, int | None] = {}
            named: set[tuple[Table, Any]] = set()
            if self.site_id is not None and table in (Table.CONTRACTS, Table.FUEL_CARDS, Table.CLUB_ACCOUNTS):
                update = self._translated(table, update, noted, allowed, named=named)
            if table in FUEL_TABLES and self.fuel is not None:
                self._apply_fuel(table, update)
            elif table in CLUB_TABLES and self.club is not None:
                self._apply_club(table, update)
        except ModelError as exc:
            raise ReplicaUpdateError(f"{table.value} update to version {new_version} refused: {exc}") from None
        self.table_versions[table] = new_version
        self._note_balance_fields(table, update, noted, allowed)
        self.marks_to_drop |= named
        if table is Table.STOP_LIST:
            self.note_stop_list(update)

    def note_stop_list(self, update: ReplicaUpdate) -> None:
        """Count a stop-list update applied, and the numbers a delta changed."""
        self.stop_generation += 1
        if isinstance(update, FullSnapshot):
            self.stop_touched.clear()
        else:
            self.stop_touched.update(r.card_no for r in update.upserts)
            self.stop_touched.update(str(k) for k in update.deletes)

    def _apply_fuel(self, table: Table, update: ReplicaUpdate) -> None:
        ev = self.fuel
        assert ev is not None
        if isinstance(update, FullSnapshot):
            if table is Table.FUEL_CARDS and hasattr(ev, "columns"):
                self._swap_fuel_cards(update.rows)
                return
            if table is Table.STOP_LIST:
                ev.replace_stop_list(r.card_no for r in update.rows)
                return
            upserts, deletes = update.rows, tuple(_fuel_keys(ev, table) - {_key(table, r) for r in update.rows})
        else:
            upserts, deletes = update.upserts, update.deletes
        ev.apply(fuel_update(table, upserts, deletes))
        self._fuel_model = None  # a new model (reference) or a view over the changed tables (native)

    def _swap_fuel_cards(self, rows: Iterable[FuelCardRow]) -> None:
        """A whole fuel card table: the native evaluator built anew, then swapped in."""
        ev = self.fuel
        assert ev is not None
        contracts = (ev.contract_at(i) for i in range(ev.contract_count))  # with their balances now
        new = FuelColumns.from_rows(products=ev.products, stations=ev.stations, discounts=ev.discounts,
                                    contracts=contracts, cards=((r.card, r.counters) for r in rows),
                                    stop_list=ev._stop_now())
        self.fuel = fuel_evaluator(new, ev.name)
        self._fuel_model = None

    def _apply_club(self, table: Table, update: ReplicaUpdate) -> None:
        ev = self.club
        assert ev is not None
        if table is Table.CLUB_RULES:
            rows = update.rows if isinstance(update, FullSnapshot) else update.upserts
            if len(rows) > 1:
                raise ModelError(f"club_rules has one row, got {len(rows)}")
            if rows:
                ev.apply(ClubUpdate(rules=rows[0]))
        elif isinstance(update, FullSnapshot):
            new = ClubColumns.from_rows(ev.model.rules, ((r.account, r.cards) for r in update.rows))
            self.club = club_evaluator(new, ev.name)
            self._club_model = None
            return
        else:
            ev.apply(ClubUpdate(accounts=tuple((r.account, tuple(r.cards)) for r in update.upserts),
                                delete_accounts=tuple(int(k) for k in update.deletes)))
        self._club_model = None

    # -- the balance rule: the host's figures plus this site's spend past the watermark --

    def _tz_of(self, contract_id: int) -> str | None:
        """A contract's time zone (None: not in the replica), kept per fuel model: a compact
        replica makes a contract object on every read, twice per delivery otherwise. Every
        change of the fuel tables makes a new model (``_fuel_model`` set to None), so a kept
        zone is never one of an older contracts table."""
        m = self.fuel_model
        if m is None:
            return None
        kept = self._tz_kept
        if kept[0] is not m:
            kept = self._tz_kept = (m, {})
        zones = kept[1]
        if contract_id in zones:
            return zones[contract_id]
        i = m.contract_index.get(contract_id)
        tz = zones[contract_id] = None if i is None else m.contracts[i].tz
        return tz

    def _seq_of(self) -> Callable[[int], int]:
        """Batch watermark -> journal seq, through the journal (memoized for one update)."""
        own = self.own
        memo: dict[int, int] = {0: 0}

        def seq(batch: int) -> int:
            if batch not in memo:
                memo[batch] = own.seq_of_batch(batch) if own is not None else 0
            return memo[batch]
        return seq

    def _translated(self, table: Table, update: ReplicaUpdate, noted: dict[tuple[Table, Any], int],
                    allowed: dict[int, int | None], *, read: bool = True,
                    redeemed: dict[str, int] | None = None,
                    named: set[tuple[Table, Any]] | None = None) -> ReplicaUpdate:
        """``update`` with every row's figures translated to this site's view (the host's plus
        this site's spend past the row's watermark); fills ``noted`` (the rows' watermarks
        for this site) and ``allowed`` (a contract's allowance for it).

        ``read=False``: on the spend read so far, without reading the journal again (a build
        off the loop, :mod:`terminal.club_swap`, whose later spend is done again at the
        swap); ``redeemed``: the club cards' offline redemption counts are put there instead
        of into :attr:`offline_redeemed`; ``named``: the keys of rows that name this site
        again while a kept mark of theirs is written are put there."""
        if (table is Table.CLUB_ACCOUNTS and self.club is None) or (table is not Table.CLUB_ACCOUNTS
                                                                   and self.fuel is None):
            return update
        site = self.site_id
        assert site is not None
        rows = update.rows if isinstance(update, FullSnapshot) else update.upserts
        kept_ = self.own_watermarks
        for r in rows:
            key = (table, row_key(table, r))
            named_w = named_watermark(r.watermarks, site)
            w = noted[key] = kept_.get(key, 0) if named_w is None else named_w  # authz.balance.kept_watermark
            if named_w is None:
                if w and self._saved_marks.get(key) != w:
                    self.marks_to_save[key] = w  # the row names this site no more: its mark must outlive a restart
                    self.marks_to_drop.discard(key)
            elif named is not None and key in self._saved_marks:
                named.add(key)  # named again: its stored row wins, the mark goes once it is stored
            if table is Table.CONTRACTS:
                allowed[r.contract_id] = allowance_for(r.allowances, site)
        seq_of = self._seq_of()
        seqs = {key: seq_of(w) for key, w in noted.items()}
        spend = self._read_spend() if read else self._spend
        fm, cm = self.fuel_model, self.club_model
        if table is Table.CONTRACTS:
            new = [translate_contract(r, seqs[(table, r.contract_id)], allowed[r.contract_id], spend) for r in rows]
        elif table is Table.FUEL_CARDS:
            assert fm is not None
            products = {p.code: p for p in fm.products}
            new = [translate_card(r, seqs[(table, r.card.card_no)], products, spend) for r in rows]
        else:
            assert cm is not None
            rules = cm.rules
            new = [translate_account(r, seqs[(table, r.account.account_id)], rules, spend) for r in rows]
            for r in rows:  # the per-card offline redemption allowance starts again from the host's count
                for c in r.cards:
                    pts = spend.redeemed_past(c.card_no, seqs[(table, r.account.account_id)])
                    if redeemed is None:
                        self._set_redeemed(c.card_no, pts)
                    else:
                        redeemed[c.card_no] = pts
        self._forget(table, rows, seqs)
        if isinstance(update, FullSnapshot):
            return replace(update, rows=tuple(new))
        return replace(update, upserts=tuple(new))

    def translated_rows(self, table: Table, version: int, rows: Iterable[Any], noted: dict[tuple[Table, Any], int],
                        allowed: dict[int, int | None], *, redeemed: dict[str, int] | None = None,
                        chunk: int = 1_000) -> Iterator[Any]:
        """The whole table ``rows`` (a snapshot at ``version``) streamed, each row translated
        as :meth:`_translated` does on the spend read so far (``read=False``), ``chunk`` rows
        at a time: a build off the loop (:mod:`terminal.snapshot_swap`,
        :mod:`terminal.club_swap`) never holds them all. Rows pass as they are on a replica
        that does not follow its site's spend."""
        if self.site_id is None:
            yield from rows
            return
        part: list[Any] = []
        for row in rows:
            part.append(row)
            if len(part) == chunk:
                yield from self._translated_part(table, version, part, noted, allowed, redeemed)
                part = []
        yield from self._translated_part(table, version, part, noted, allowed, redeemed)

    def _translated_part(self, table: Table, version: int, part: list[Any], noted: dict[tuple[Table, Any], int],
                         allowed: dict[int, int | None], redeemed: dict[str, int] | None) -> tuple[Any, ...]:
        if not part:
            return ()
        update = self._translated(table, FullSnapshot(table, version, tuple(part)), noted, allowed, read=False,
                                  redeemed=redeemed)
        assert isinstance(update, FullSnapshot)
        return update.rows

    def _read_spend(self) -> OwnSpend:
        """The spend index, with the journal's records since the last read added, each matched
        with the lane's operation it records (:meth:`_journal_read`): the index then holds
        exactly the operations the evaluators hold, whatever the lanes were in the middle of."""
        if self.own is not None:
            if self._deferred is not None:
                raise RuntimeError("the journal read while a table is built on the spend index")
            last = self._spend_seq
            for r in self.own.records_after(self._spend_seq):
                last = max(last, r.seq or 0)
                if r.kind in SPEND_KINDS:
                    item = item_of(r, self._tz_of)
                    if item is not None:
                        self._journal_read(item, r.body)
            self._spend_seq = last
        return self._spend

    def _forget(self, table: Table, rows: Iterable[Any], seqs: Mapping[tuple[Table, Any], int]) -> None:
        """Drop from the spend index what the rows' watermarks now count (a translation
        failing later only leaves spend the next row of the key counts anyway)."""
        for r in rows:
            key = row_key(table, r)
            seq = seqs.get((table, key), 0)
            if not seq:
                continue
            if table is Table.CONTRACTS:
                self._spend.forget_contract(key, seq)
            elif table is Table.FUEL_CARDS:
                self._spend.forget_fuel_card(key, seq)
            else:
                self._spend.forget_club_cards((c.card_no for c in r.cards), seq)

    def _set_redeemed(self, card_no: str, points: int) -> None:
        if points:
            self.offline_redeemed[card_no] = points
        else:
            self.offline_redeemed.pop(card_no, None)

    def _note_balance_fields(self, table: Table, update: ReplicaUpdate, noted: dict[tuple[Table, Any], int],
                             allowed: dict[int, int | None]) -> None:
        """Keep the watermarks and allowances of an update just applied."""
        if table not in (Table.CONTRACTS, Table.FUEL_CARDS, Table.CLUB_ACCOUNTS):
            return
        if isinstance(update, FullSnapshot):
            for key in [k for k in self.own_watermarks if k[0] is table]:
                del self.own_watermarks[key]
            if table is Table.CONTRACTS:
                self.allowances.clear()
            gone_keys = [k for k in self._saved_marks if k[0] is table and k not in noted]
        else:
            gone_keys = []
            for gone in update.deletes:
                self.own_watermarks.pop((table, gone), None)
                gone_keys.append((table, gone))
                if table is Table.CONTRACTS:
                    self.allowances.pop(int(gone), None)
        for key in gone_keys:  # the row is gone: so goes its kept mark, once the store has it so
            self.marks_to_save.pop(key, None)
            if key in self._saved_marks:
                self.marks_to_drop.add(key)
        self.own_watermarks.update((k, w) for k, w in noted.items() if w)
        for key in [k for k, w in noted.items() if not w]:
            self.own_watermarks.pop(key, None)
        for cid, a in allowed.items():
            if a is None:
                self.allowances.pop(cid, None)
            else:
                self.allowances[cid] = a

    # -- replay of local spend --

    def replay(self, records: Iterable[Any]) -> int:
        """Re-apply journaled local spend (records in journal order); returns how many applied.

        A replica from the host that follows this site's spend (:meth:`follow_own_spend`)
        re-applies, on each contract, fuel card and club account, only the records past that
        row's watermark (the balance rule); a generated replica re-applies every record."""
        if self.own is not None and self.site_id is not None:
            n = self._rebase(records)
        else:
            n = 0
            for rec in records:
                if self.apply(rec.kind, rec.body):
                    n += 1
        log.info("replica: re-applied %d journaled operations", n)
        return n

    def _rebase(self, records: Iterable[Any]) -> int:
        """The evaluators' figures (the host's, as loaded) plus this site's spend past each
        row's watermark, applied as one update per business; returns the spend records read."""
        last = [0]

        def noting(records: Iterable[Any]) -> Iterator[Any]:
            for r in records:
                last[0] = max(last[0], r.seq or 0)
                if r.kind in SPEND_KINDS:
                    yield r
        self._spend, self._spend_seq = spend_of(noting(records), self._tz_of), 0
        self._pending.clear()  # nothing is in flight at a start
        self._read_first.clear()
        spend = self._spend
        self._spend_seq = last[0]
        n = sum(len(v) for v in spend.by_contract.values()) + sum(len(v) for v in spend.by_club_card.values())
        seq_of = self._seq_of()
        wm = self.own_watermarks
        if self.fuel is not None:
            ev, m = self.fuel, self.fuel_model
            assert m is not None
            contracts = []
            for cid in sorted(set(spend.by_contract) | set(self.allowances)):
                i = m.contract_index.get(cid)
                if i is None:
                    continue
                now = replace(m.contracts[i], balance_kop=ev.balance_kop(cid))
                seq = seq_of(wm.get((Table.CONTRACTS, cid), 0))
                contracts.append(translate_contract(now, seq, self.allowances.get(cid), spend))
                spend.forget_contract(cid, seq)
            products = {p.code: p for p in m.products}
            cards = []
            for card_no in sorted(spend.by_fuel_card):
                card = self.fuel_card(card_no)
                if card is None:
                    continue
                counters = tuple((lim.limit_id, c) for lim in card.limits
                                 if (c := ev.counter(card_no, lim.limit_id)) is not None)
                seq = seq_of(wm.get((Table.FUEL_CARDS, card_no), 0))
                row = translate_card(FuelCardRow(card, counters), seq, products, spend)
                cards.append((row.card, row.counters))
                spend.forget_fuel_card(card_no, seq)
            if contracts or cards:
                ev.apply(FuelUpdate(contracts=tuple(contracts), cards=tuple(cards)))
                self._fuel_model = None
        if self.club is not None and spend.by_club_card:
            ev, cm = self.club, self.club_model
            assert cm is not None
            touched = {cm.cards[cm.card_index[no]].account_id for no in spend.by_club_card if no in cm.card_index}
            rows = []
            for aid, acct, held in _accounts_now(ev, cm, touched):
                seq = seq_of(wm.get((Table.CLUB_ACCOUNTS, aid), 0))
                row = translate_account(ClubAccountRow(acct, held), seq, cm.rules, spend)
                rows.append((row.account, row.cards))
                for c in held:
                    self._set_redeemed(c.card_no, spend.redeemed_past(c.card_no, seq))
                spend.forget_club_cards((c.card_no for c in held), seq)
            ev.apply(ClubUpdate(accounts=tuple(rows)))
            self._club_model = None
        return n

    def club_done_again(self, ops: Iterable[ClubSpend]) -> int:
        """The approved club operations ``ops`` (made on another table meanwhile: a build off
        the loop, :mod:`terminal.club_swap`) applied to this replica's club evaluator with
        the figures their decisions had (:func:`authz.balance.account_after`), never decided
        again: each counts once whatever the new table's figures are. Returns how many
        operations were applied (one on a card this table does not hold is left out)."""
        ev, cm = self.club_evaluator, self.club_model
        if ev is None or cm is None:
            return 0
        by_account: dict[int, list[ClubSpend]] = {}
        for op in ops:
            i = cm.card_index.get(club_card_of(op))
            if i is not None:
                by_account.setdefault(cm.cards[i].account_id, []).append(op)
        if not by_account:
            return 0
        rows = [(account_after(cm.rules, acct, cards, by_account[aid]), cards)
                for aid, acct, cards in _accounts_now(ev, cm, by_account)]
        ev.apply(ClubUpdate(accounts=tuple(rows)))
        self._club_model = None
        return sum(len(v) for v in by_account.values())

    def counters_done_again(self, ev: Any, bodies: Iterable[dict]) -> FuelUpdate | None:
        """The cards of fuel evaluator ``ev`` (a new one, not yet this replica's) with the
        counters of the completions ``bodies`` (applied to the old one meanwhile) counted on
        them, by the rule of :func:`authz.balance.counters_after`; None when there are none.
        Balances are not touched (the swap carries those over)."""
        spend = spend_of((_Journaled(n + 1, FUEL_COMPLETED, b) for n, b in enumerate(bodies)), self._tz_of)
        if not spend.by_fuel_card:
            return None
        model = ev.model
        products = {p.code: p for p in model.products}
        cards = []
        for card_no in sorted(spend.by_fuel_card):
            i = model.card_index.get(card_no)
            if i is None:
                continue
            card = model.cards[i]
            counters = tuple((lim.limit_id, c) for lim in card.limits if (c := ev.counter(card_no, lim.limit_id)))
            row = translate_card(FuelCardRow(card, counters), 0, products, spend)
            cards.append((row.card, row.counters))
        return FuelUpdate(cards=tuple(cards)) if cards else None

    def apply(self, kind: str, body: dict) -> bool:
        """Apply one journaled operation to the evaluators (what the lane did live)."""
        if kind == FUEL_COMPLETED and self.fuel is not None:
            if not self.tracking:
                self._complete_fuel(body)
                if self.fuel_recording is not None:
                    self.fuel_recording.append(body)
                return True
            item = fuel_item(next(self._provisional), body, self._tz_of)
            if self._read_first[item.key]:  # the journal read applied it already: once
                self._read_first[item.key] -= 1
                if not self._read_first[item.key]:
                    del self._read_first[item.key]
                return True
            try:
                self._complete_fuel(body)
                if self.fuel_recording is not None:
                    self.fuel_recording.append(body)
            finally:  # refused or not, the journal holds it: matched with it once read
                self._lane_applied(item)
            return True
        if kind == CLUB_COMMITTED and self.club is not None:
            sale = club_sale_from_body(body["sale"])
            result = self.club.commit(sale, ClubPayment(**body["payment"]), body["txn_no"])
            if result.approved:
                self.offline_redeemed[sale.card_no] += result.redeemed_points
            return True
        if kind in (CLUB_RETURNED, CLUB_TOPPED_UP) and self.club is not None and not approved_record(kind, body):
            return False  # declined at the till: it changed nothing then, and does not now
        if kind == CLUB_RETURNED and self.club is not None:
            self.club.return_sale(ClubReturn(**body["return"]))
            return True
        if kind == CLUB_TOPPED_UP and self.club is not None:
            self.club.top_up(ClubTopUp(**body["topup"]))
            return True
        return False


class _TrackedClub:
    """A club evaluator whose every approved commit, return and top-up is noted to its replica
    (:meth:`Replica._lane_applied`) as the till applies it, before the till journals it;
    every other call passed through."""

    __slots__ = ("inner", "replica")

    def __init__(self, inner: Any, replica: Replica) -> None:
        self.inner = inner
        self.replica = replica

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _seq(self) -> int:
        return next(self.replica._provisional)

    def _noted(self, name: str, args: tuple) -> Any:
        result = getattr(self.inner, name)(*args)
        op = lane_spend(name, args, result)
        if op is not None:
            redeemed = result.redeemed_points if name == "commit" else 0
            self.replica._lane_applied(club_item(self._seq(), op, redeemed))
        return result

    def commit(self, sale: ClubSale, payment: ClubPayment, txn_no: int) -> Any:
        """The evaluator's ``commit``; an approved one is noted (a declined one journals no spend)."""
        return self._noted("commit", (sale, payment, txn_no))

    def return_sale(self, ret: ClubReturn) -> Any:
        """The evaluator's ``return_sale``, noted when approved with what it did (a declined
        one changed nothing, and its record is no spend: :func:`terminal.own_spend.item_of`)."""
        return self._noted("return_sale", (ret,))

    def top_up(self, req: ClubTopUp) -> Any:
        """The evaluator's ``top_up``, noted when approved (as :meth:`return_sale`)."""
        return self._noted("top_up", (req,))


@dataclass(frozen=True, slots=True)
class _Journaled:
    """A journal record's parts as :func:`terminal.own_spend.spend_of` reads them."""

    seq: int
    kind: str
    body: dict


def _key(table: Table, row: Any) -> Any:
    return row_key(table, row)


def _noting_balance_fields(rows: Mapping[Table, Iterable[Any]], site_id: str, marks: dict[tuple[Table, Any], int],
                           allowances: dict[int, int]) -> dict[Table, Iterable[Any]]:
    """``rows`` read once as before, noting on the way each balance row's watermark and
    allowance for ``site_id``."""
    def note(table: Table, r: Any) -> None:
        w = own_watermark(r.watermarks, site_id)
        if w:
            marks[(table, row_key(table, r))] = w
        if table is Table.CONTRACTS:
            a = allowance_for(r.allowances, site_id)
            if a is not None:
                allowances[r.contract_id] = a

    def noting(table: Table, it: Iterable[Any]) -> Iterator[Any]:
        for r in it:
            note(table, r)
            yield r
    out: dict[Table, Iterable[Any]] = dict(rows)
    for t in (Table.CONTRACTS, Table.FUEL_CARDS, Table.CLUB_ACCOUNTS):
        if isinstance(out.get(t), StoredCards):  # the store's fuel cards: noted as the loader makes rows
            out[t] = out[t].noting(lambda r, t=t: note(t, r))  # type: ignore[attr-defined]
        elif t in out:
            out[t] = noting(t, out[t])
    return out


def fuel_update(table: Table, upserts: Iterable[Any], deletes: Iterable[Any]) -> FuelUpdate:
    """The FuelUpdate of a delta of one fuel table (rows as :mod:`wire` decodes them)."""
    upserts, deletes = tuple(upserts), tuple(deletes)
    if table is Table.STOP_LIST:
        return FuelUpdate(stop_listed=tuple(r.card_no for r in upserts), stop_unlisted=deletes)
    if table is Table.PRODUCTS:
        return FuelUpdate(products=upserts, delete_products=deletes)
    if table is Table.STATIONS:
        return FuelUpdate(stations=upserts, delete_stations=deletes)
    if table is Table.TARIFFS:
        return FuelUpdate(tariffs=tuple((Tariff(r.tariff), tuple(r.discounts)) for r in upserts),
                          delete_tariffs=tuple(Tariff(int(k)) for k in deletes))
    if table is Table.CONTRACTS:
        return FuelUpdate(contracts=upserts, delete_contracts=deletes)
    if table is Table.FUEL_CARDS:
        return FuelUpdate(cards=tuple((r.card, tuple(r.counters)) for r in upserts), delete_cards=deletes)
    raise ModelError(f"{table.value} is not a fuel table")


def _fuel_keys(ev: Any, table: Table) -> set:
    """The keys of ``table`` in the fuel evaluator now (a snapshot deletes the others)."""
    m = ev.model
    if table is Table.STOP_LIST:
        return ev._stop_now() if hasattr(ev, "_stop_now") else set(ev.stop_list_numbers())
    if table is Table.PRODUCTS:
        return {p.code for p in m.products}
    if table is Table.STATIONS:
        return {s.station_id for s in m.stations}
    if table is Table.TARIFFS:
        return {int(d.tariff) for d in m.discounts}
    if table is Table.CONTRACTS:
        return set(m.contract_index)
    if table is Table.FUEL_CARDS:
        return set(m.card_index)
    raise ModelError(f"{table.value} is not a fuel table")


def _fuel_source(rows: Mapping[Table, Iterable[Any]]) -> FuelColumns:
    products = tuple(rows.get(Table.PRODUCTS, ()))
    stations = tuple(rows.get(Table.STATIONS, ()))
    discounts = tuple(d for r in rows.get(Table.TARIFFS, ()) for d in r.discounts)
    contracts = rows.get(Table.CONTRACTS, ())
    cards = rows.get(Table.FUEL_CARDS, ())
    stop_rows = rows.get(Table.STOP_LIST, ())
    stop = stop_rows if isinstance(stop_rows, StoredCards) and stop_rows.table is Table.STOP_LIST else (  # type: ignore[attr-defined]
        r.card_no for r in stop_rows)
    pairs = cards if isinstance(cards, StoredCards) and cards.table is Table.FUEL_CARDS else (  # type: ignore[attr-defined]
        (r.card, r.counters) for r in cards)  # the store's rows go to the native loader as bytes
    return FuelColumns.from_rows(products=products, stations=stations, discounts=discounts, contracts=contracts,
                                 cards=pairs, stop_list=stop)


def _club_source(rows: Mapping[Table, Iterable[Any]]) -> ClubColumns:
    rules = tuple(rows.get(Table.CLUB_RULES, ()))
    if len(rules) != 1:
        raise ModelError(f"club_rules must hold one row, has {len(rules)}")
    accounts = rows.get(Table.CLUB_ACCOUNTS, ())
    return ClubColumns.from_rows(rules[0], ((r.account, r.cards) for r in accounts))


def returned_kop_of(records: Iterable[Any]) -> int:
    """Kopecks of a sale given back by its approved returns among ``records`` (the sale's
    journal records): what :meth:`terminal.till.TillLane.return_sale` and the host count."""
    return sum(r.body["return"]["returned_kop"] for r in records
               if r.kind == CLUB_RETURNED and r.body["result"]["reason"] == "OK")


# -- request/decision bodies as journaled (plain JSON objects) --

def fuel_request_body(req: FuelRequest) -> dict:
    """A FuelRequest as a JSON object."""
    return {"card_no": req.card_no, "station_id": req.station_id, "product": req.product,
            "now_utc_s": req.now_utc_s, "preset_volume_ml": req.preset_volume_ml,
            "preset_amount_kop": req.preset_amount_kop}


def fuel_request_from_body(body: dict) -> FuelRequest:
    """The FuelRequest journaled as ``body``."""
    return FuelRequest(**body)


def fuel_decision_body(d: FuelDecision) -> dict:
    """A FuelDecision as a JSON object (the reason by name; ``exceptions``
    ``[[reason_name, limit_id_or_null], ...]`` only when the approval raised any): the one
    shape of ``wire.bodies.decision_json``."""
    return decision_json(d)


def fuel_decision_from_body(body: dict) -> FuelDecision:
    """The FuelDecision journaled as ``body`` (with its exceptions, if it has any)."""
    return decision_from_json(body)


def club_sale_body(sale: ClubSale) -> dict:
    """A ClubSale as a JSON object."""
    return {"card_no": sale.card_no, "now_utc_s": sale.now_utc_s, "channel": sale.channel,
            "payment_method": sale.payment_method,
            "lines": [{"sku": l.sku, "category": l.category, "amount_kop": l.amount_kop} for l in sale.lines]}


def club_sale_from_body(body: dict) -> ClubSale:
    """The ClubSale journaled as ``body``."""
    return ClubSale(body["card_no"], tuple(SaleLine(**l) for l in body["lines"]), body["now_utc_s"],
                    body["channel"], body["payment_method"])


def with_card(sale: ClubSale, card_no: str) -> ClubSale:
    """``sale`` attached to club card ``card_no``."""
    return replace(sale, card_no=card_no)
