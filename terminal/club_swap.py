"""A whole club-accounts table from the host, built off the event loop and swapped in on it.

A snapshot of 100,000 club accounts took about 0.3 s on the event loop (more on a host
replica, whose rows are translated by the balance rule first): the tills stalled that long.
Here, as for fuel cards (:mod:`terminal.snapshot_swap`), the loop only does the cheap ends:

1. :func:`begin` (on the loop): this site's spend read from the journal up to now, and the
   live club evaluator wrapped in a :class:`RecordingClub` that passes every call through
   and notes each approved commit, return and top-up the tills make from then on;
2. :meth:`ClubSwap.build` (in a worker thread): the rows translated to this site's view
   (the host's figures plus this site's spend past each row's watermark, on the spend read
   at :func:`begin`) and packed into a new evaluator, while the tills keep deciding on the
   old one;
3. :meth:`ClubSwap.swap` (on the loop): one assignment, then the operations noted during the
   build (they are past what the build read) applied on the new evaluator with the figures
   their decisions had (:meth:`terminal.replica.Replica.club_done_again`, the balance
   rule's :func:`authz.balance.account_after`), and the offline redemption counts carried
   over, with no await in between.

A sale decided before the swap keeps its numbers; the next one uses the new table. An
operation noted is never decided again on the new figures: it was approved, so it counts
once, whatever the new table says (a balance lowered at the host, a card blocked since); a
declined one is not noted and never counts. Rows that do not hold together fail in the build
(:class:`terminal.replica.ReplicaUpdateError`): the wrapper is taken off and nothing changed.
The caller holds the daemon's replica lock throughout, so no other host update lands
between :func:`begin` and the swap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from authz.balance import ClubSpend
from authz.errors import ModelError
from native import club_evaluator
from native.compact import ClubColumns, release_free_memory
from wire.messages import ClubAccountRow, Table

from .follower import FullSnapshot
from .own_spend import lane_spend
from .replica import Replica, ReplicaUpdateError

log = logging.getLogger("edgepos.replica")

#: Rows translated at a time while the table is built.
CHUNK = 1_000

__all__ = ["CHUNK", "ClubSwap", "RecordingClub", "apply_club_snapshot", "begin", "can_swap"]


class RecordingClub:
    """The live club evaluator while a new one is built: every call passed through, and each
    approved ``commit``, ``return_sale`` and ``top_up`` noted (as the typed spend with its
    decision's figures, :func:`terminal.own_spend.lane_spend`) to be applied on the new
    evaluator at the swap."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.ops: list[ClubSpend] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _noted(self, name: str, args: tuple) -> Any:
        result = getattr(self.inner, name)(*args)
        op = lane_spend(name, args, result)
        if op is not None:
            self.ops.append(op)
        return result

    def commit(self, sale: Any, payment: Any, txn_id: int) -> Any:
        """:meth:`commit` of the live evaluator, noted when approved."""
        return self._noted("commit", (sale, payment, txn_id))

    def return_sale(self, ret: Any) -> Any:
        """:meth:`return_sale` of the live evaluator, noted when approved."""
        return self._noted("return_sale", (ret,))

    def top_up(self, req: Any) -> Any:
        """:meth:`top_up` of the live evaluator, noted when approved."""
        return self._noted("top_up", (req,))


@dataclass(slots=True)
class ClubSwap:
    """A club-accounts snapshot being built for ``replica`` (module docstring)."""

    replica: Replica
    version: int
    recording: RecordingClub
    rules: Any
    redeemed_at_begin: Counter[str]
    built: Any = None
    noted: dict = field(default_factory=dict)
    allowed: dict = field(default_factory=dict)
    redeemed: dict[str, int] | None = None

    def build(self, rows: Iterable[ClubAccountRow]) -> None:
        """Translate ``rows`` (every account of the snapshot) and pack the new evaluator. Run it
        in a worker thread. The rows are streamed, a chunk at a time, and never held whole:
        freeing a hundred thousand accounts' objects at once holds the interpreter lock for
        most of a second. Raises :class:`ReplicaUpdateError` for rows that do not hold
        together (then :meth:`abort` on the loop)."""
        try:
            cols = ClubColumns.from_rows(self.rules, self._accounts(rows))
            built = club_evaluator(cols, self.recording.inner.name)
        except ModelError as exc:
            raise ReplicaUpdateError(f"club_accounts snapshot version {self.version} refused: {exc}") from None
        except (TypeError, OverflowError, AttributeError, ValueError) as exc:
            raise ReplicaUpdateError(f"club_accounts snapshot version {self.version} refused: a row does not fit: "
                                     f"{exc}") from None
        del cols  # freed here, in the thread, not on the loop
        release_free_memory()
        self.built = built

    def _accounts(self, rows: Iterable[ClubAccountRow]) -> Iterator[tuple[Any, tuple]]:
        """(account, cards) of each row, translated to this site's view on a host replica."""
        if self.replica.site_id is not None:
            self.redeemed = {}
        for row in self.replica.translated_rows(Table.CLUB_ACCOUNTS, self.version, rows, self.noted, self.allowed,
                                                redeemed=self.redeemed, chunk=CHUNK):
            yield row.account, tuple(row.cards)

    def abort(self) -> None:
        """Take the wrapper off: the replica's club evaluator is the old one, as it was."""
        if self.replica.club_evaluator is self.recording:
            self.replica.club = self.recording.inner
            self.replica._club_model = None
        self.replica.end_build()

    def swap(self) -> int:
        """On the loop: the new evaluator made the replica's, the operations noted during the
        build applied on it as they were decided (:meth:`Replica.club_done_again`), the
        offline redemption counts carried over. Returns how many operations were applied."""
        if self.built is None:
            raise RuntimeError("swap() before build()")
        r, new = self.replica, self.built
        old = r.club_evaluator
        r.club = new
        r._club_model = None
        try:
            done = r.club_done_again(self.recording.ops)
        except ModelError as exc:  # the operations do not fit the new table: the old one stays
            r.club = old
            r._club_model = None
            raise ReplicaUpdateError(f"club_accounts snapshot version {self.version} refused: the tills' "
                                     f"operations during the build do not fit it: {exc}") from None
        if self.redeemed is not None:  # the host's count, plus what the tills redeemed meanwhile
            live = r.offline_redeemed
            for card_no, pts in self.redeemed.items():
                r._set_redeemed(card_no, pts + live[card_no] - self.redeemed_at_begin[card_no])
        r.end_build()
        r.table_versions[Table.CLUB_ACCOUNTS] = self.version
        r._note_balance_fields(Table.CLUB_ACCOUNTS, FullSnapshot(Table.CLUB_ACCOUNTS, self.version, ()),
                               self.noted, self.allowed)
        self.built = None
        return done


def can_swap(replica: Replica) -> bool:
    """Does a club-accounts snapshot go through this module? Whenever the site runs the club
    (either evaluator) and no other build is under way."""
    ev = replica.club_evaluator
    return ev is not None and not isinstance(ev, RecordingClub)


def begin(replica: Replica, version: int) -> ClubSwap:
    """On the loop: this site's spend read up to now, the live evaluator wrapped."""
    ev = replica.club_evaluator
    if ev is None or isinstance(ev, RecordingClub):
        raise ReplicaUpdateError("a club swap needs a club evaluator and no other swap under way")
    if replica.site_id is not None:
        replica._read_spend()  # one consistent point with the tills (terminal.snapshot_swap)
    rec = RecordingClub(ev)
    swap = ClubSwap(replica, version, rec, ev.model.rules, Counter(replica.offline_redeemed))
    replica.club = rec
    replica.begin_build()
    return swap


async def apply_club_snapshot(replica: Replica, version: int, rows: Callable[[], Iterable[ClubAccountRow]]) -> int:
    """:func:`begin`, :meth:`ClubSwap.build` in a worker thread (``rows()`` read there: the
    store's staged rows), :meth:`ClubSwap.swap`. Returns the operations done again. Raises
    :class:`ReplicaUpdateError` (nothing changed) for rows that do not hold together."""
    swap = begin(replica, version)
    t0 = time.perf_counter()
    try:
        await asyncio.to_thread(lambda: swap.build(rows()))
        again = swap.swap()
    except BaseException:
        swap.abort()
        raise
    log.info("replica club_accounts at version %d: built off the loop in %.2f s and swapped in (%d operation(s) "
             "of the tills done again)", version, time.perf_counter() - t0, again)
    return again
