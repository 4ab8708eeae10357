"""A whole fuel-card table from the host, built off the event loop and swapped in on it.

A snapshot of a million fuel cards takes about a second to turn into a native evaluator;
done on the event loop (``Replica.apply_update``) the lanes stall that long. Here the work
is split in three, so the loop only does the cheap ends:

1. :func:`begin` (on the loop): the evaluator's contracts, stations, products, tariffs and
   stop list as they are now, copied natively into columns without cards (milliseconds);
2. :meth:`FuelCardSwap.build` (in a worker thread): the cards of the snapshot streamed into
   those columns (no Python object kept per card) and packed into a new evaluator, while
   the lanes keep deciding on the old one;
3. :meth:`FuelCardSwap.swap` (on the loop): the contract balances the lanes changed in the
   meantime (their completions) carried over to the new evaluator, then one assignment.

A decision made before the swap keeps its numbers (a completion charges what was
authorized, on whichever evaluator is current); the next decision uses the new cards. The
caller holds the daemon's replica lock throughout, so no other host update lands between
:func:`begin` and the swap: only the lanes' own spend changes the old evaluator, and that
is what :meth:`~FuelCardSwap.swap` carries over. A snapshot whose rows do not hold together
(a card of an unknown contract...) fails in :meth:`~FuelCardSwap.build`
(:class:`terminal.replica.ReplicaUpdateError`) and changes nothing.

The completions the lanes apply during the build (noted in ``Replica.fuel_recording``) are
counted again on the new cards' counters at the swap, on any replica: a generated one
(simulations) as well as a host one.

A host replica (one that follows its site's own spend, the balance rule) takes the same
path: :func:`begin` reads the site's spend from the journal up to then, the build
translates each row by it (the host's counters plus this site's deliveries past the row's
watermark, ``Replica._translated``). That read is one consistent point with the lanes: a
completion journaled but not yet applied by its lane is applied by the read (its lane's
apply is then skipped), and one applied but not yet read counts at a provisional seq past
every watermark (``Replica._journal_read``); what the lanes apply from :func:`begin` on is
done again at the swap and joins the spend index only then. So every completion is in the
new table exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from authz.errors import ModelError
from authz.update import FuelUpdate
from native import fuel_evaluator
from native.compact import FuelColumns, release_free_memory
from wire.messages import FuelCardRow, Table

from .follower import FullSnapshot, ReplicaUpdate
from .replica import Replica, ReplicaUpdateError

log = logging.getLogger("edgepos.replica")

__all__ = ["FuelCardSwap", "apply_snapshot", "begin", "can_swap"]


def can_swap(replica: Replica, table: Table) -> bool:
    """Does a snapshot of ``table`` go through this module? Fuel cards on a native
    (compact) fuel evaluator: the one table big enough to stall the lanes. A host replica
    (one that follows its site's own spend, the balance rule) goes through it too: its rows
    are translated in the build (:meth:`FuelCardSwap.build`), and the completions applied
    meanwhile are counted again at the swap."""
    ev = replica.fuel
    return table is Table.FUEL_CARDS and ev is not None and hasattr(ev, "_columns") and hasattr(ev, "columns")


#: Host rows translated at a time in the build (the balance rule).
TRANSLATE_CHUNK = 1_000


@dataclass(slots=True)
class FuelCardSwap:
    """A fuel-card snapshot being built for ``replica`` (module docstring)."""

    replica: Replica
    version: int
    base: FuelColumns  #: the evaluator's columns without cards when the build began
    balances: array  #: the contracts' balances then (what swap compares with)
    built: Any = None  #: the new evaluator, once built
    noted: dict = field(default_factory=dict)  #: the rows' watermarks for this site (a host replica)

    def build(self, rows: Iterable[FuelCardRow]) -> None:
        """Stream ``rows`` (every card of the snapshot) into the base columns and pack the new
        evaluator. Run it in a worker thread. Raises :class:`ReplicaUpdateError` for rows
        that do not hold together; the replica is untouched either way. On a host replica
        each row is first translated to this site's view (the host's counters plus this
        site's spend past the row's watermark, on the spend read at :func:`begin`)."""
        cols = self.base
        products = {p.code: i for i, p in enumerate(cols.products)}
        contracts = {cid: i for i, cid in enumerate(cols.ct_id)}  # type: ignore[attr-defined]
        from native._evaluator import _fill_card_columns
        try:
            _fill_card_columns(((r.card, r.counters) for r in self.replica.translated_rows(
                Table.FUEL_CARDS, self.version, rows, self.noted, {}, chunk=TRANSLATE_CHUNK)), contracts, products, cols)
            built = fuel_evaluator(cols, self.replica.fuel.name)  # type: ignore[union-attr]
        except ModelError as exc:
            raise ReplicaUpdateError(f"fuel_cards snapshot version {self.version} refused: {exc}") from None
        except (TypeError, OverflowError, AttributeError, ValueError) as exc:
            raise ReplicaUpdateError(f"fuel_cards snapshot version {self.version} refused: a row does not fit "
                                     f"its columns: {exc}") from None
        self.base = FuelColumns()  # the columns are packed: drop them
        del cols
        release_free_memory()
        self.built = built

    def abort(self) -> None:
        """On the loop: the build dropped; the replica goes on with the old evaluator, which
        holds every completion applied meanwhile."""
        self.replica.fuel_recording = None
        self.replica.end_build()

    def swap(self) -> int:
        """On the loop: carry over the contract balances changed since :func:`begin`, then
        make the new evaluator the replica's. Returns how many contracts were carried over."""
        if self.built is None:
            raise RuntimeError("swap() before build()")
        old, new = self.replica.fuel, self.built
        assert old is not None
        now = old._columns(_all(old.card_count), None)
        changed: list[int] = []
        if now.ct_balance != self.balances:
            changed = [i for i, (a, b) in enumerate(zip(self.balances, now.ct_balance)) if a != b]
        if changed:
            new.apply(FuelUpdate(contracts=tuple(old.contract_at(i) for i in changed)))
        r = self.replica
        if r.fuel_recording:  # the completions applied meanwhile count on the new counters
            again = r.counters_done_again(new, r.fuel_recording)
            if again is not None:
                new.apply(again)
        r.fuel_recording = None
        r.end_build()
        if r.site_id is not None:
            r._note_balance_fields(Table.FUEL_CARDS, FullSnapshot(Table.FUEL_CARDS, self.version, ()), self.noted, {})
        self.replica.fuel = new
        self.replica._fuel_model = None  # the view is over the old evaluator
        self.replica.table_versions[Table.FUEL_CARDS] = self.version
        self.built = None
        return len(changed)


def _all(n: int) -> bytearray:
    return bytearray(b"\x01") * max(n, 1)


def begin(replica: Replica, version: int) -> FuelCardSwap:
    """On the loop: the evaluator's columns without cards, now (see the module docstring)."""
    ev = replica.fuel
    if ev is None or not can_swap(replica, Table.FUEL_CARDS):
        raise ReplicaUpdateError("a fuel-card swap needs the native fuel evaluator")
    if replica.site_id is not None:  # the balance rule: the spend up to now is translated in the build ...
        replica._read_spend()  # (every operation the journal holds now applied, once: Replica._journal_read)
    base = ev._columns(_all(ev.card_count), None)
    replica.fuel_recording = []  # ... and what the lanes complete from now on is counted at the swap
    replica.begin_build()  # (and joins the spend index then)
    return FuelCardSwap(replica, version, base, base.ct_balance[:])


async def apply_snapshot(replica: Replica, table: Table, version: int, rows: Callable[[], Iterable[Any]],
                         apply: Callable[[ReplicaUpdate], None]) -> None:
    """Apply a whole ``table`` at ``version`` to ``replica``'s evaluators, its rows read by
    ``rows()`` (in a worker thread: the store's staged rows). Fuel cards on the native
    evaluator go through :func:`begin` / :meth:`FuelCardSwap.build` / :meth:`FuelCardSwap.swap`
    (the lanes keep deciding meanwhile); any other table is read in the thread and handed to
    ``apply`` (the daemon's ``Replica.apply_update`` and its events) on the loop as a
    :class:`~terminal.follower.FullSnapshot`. Raises :class:`ReplicaUpdateError` (nothing
    changed) for rows that do not hold together."""
    if can_swap(replica, table):
        swap = begin(replica, version)
        t0 = time.perf_counter()
        try:
            await asyncio.to_thread(swap.build, rows())
            carried = swap.swap()
        except BaseException:
            swap.abort()
            raise
        log.info("replica fuel_cards at version %d: built off the loop in %.2f s and swapped in (%d contract "
                 "balance(s) carried over)", version, time.perf_counter() - t0, carried)
        return
    whole = await asyncio.to_thread(lambda: tuple(rows()))
    apply(FullSnapshot(table, version, whole))
