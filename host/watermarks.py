"""The watermarks a published balance or counter row carries, and the offline allowances a
contract row carries (the balance rule, :mod:`authz.balance`; docs/sync.md).

Read inside the publisher's read transaction, with the rows, so the figures and the
watermarks are of one moment:

- **Watermarks.** A site's watermark is the highest batch number n such that the ledger holds
  every batch 1..n of the site and this row's figures hold exactly their spend:
  ``sites.up_to_seq`` (every batch to there settled), lowered to just before the first batch
  the host refused (its records are not in the ledger). A batch applied past a gap is in the
  figures but not under the watermark: the site counts it once more until the gap fills
  (which only declines more). A row names the sites whose spend ingest put in it
  (``replica_spenders``, written beside the dirty marks); a site it does not name has none.
- **Allowances.** A contract's offline exposure (``contracts.offline_exposure_kop``, else the
  host's default; none: no allowances) is shared among the active sites: a site whose spend
  the contract holds (a station its cards buy at) weighs ``priority_weight``, every other
  site 1 (the row's ``"*"`` allowance). The shares add up to at most the exposure, so all the
  sites together, each within its allowance, never spend more than the balance, the credit
  line and the exposure (docs/rules.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from authz.balance import Allowance, Watermark
from authz.money import MAX_AMOUNT_KOP
from wire import Table

from .db import Database
from .errors import InvalidInput, NotFound
from .ledger import Ledger
from .versions import record_change

__all__ = ["AllowancePolicy", "site_watermarks", "row_watermarks", "contract_allowances", "set_offline_exposure"]


@dataclass(frozen=True, slots=True)
class AllowancePolicy:
    """How the host shares a contract's offline exposure among the sites.

    ``default_exposure_kop``: the exposure of a contract that sets none (None: such a contract
    gets no allowances, its sites are not capped); ``priority_weight``: the weight of a site
    the contract's cards already buy at, against 1 for any other site."""

    default_exposure_kop: int | None = None
    priority_weight: int = 3

    def __post_init__(self) -> None:
        if self.default_exposure_kop is not None and self.default_exposure_kop < 0:
            raise ValueError(f"default_exposure_kop must be >= 0, got {self.default_exposure_kop}")
        if self.priority_weight < 1:
            raise ValueError(f"priority_weight must be >= 1, got {self.priority_weight}")


def site_watermarks(db: Database) -> dict[str, int]:
    """Each site's watermark now: batches 1..n of it are all in the ledger's figures."""
    first_refused = dict(db.fetchall("SELECT site_id, MIN(batch_seq) FROM batches WHERE status = 'rejected' "
                                     "GROUP BY site_id"))
    out = {}
    for site, up_to in db.fetchall("SELECT site_id, up_to_seq FROM sites"):
        refused = first_refused.get(site)
        out[site] = up_to if refused is None else min(up_to, refused - 1)
    return out


def _spenders(db: Database, table: Table, keys: Sequence | None) -> dict[str, list[str]]:
    if keys is None:
        rows = db.fetchall("SELECT key, site_id FROM replica_spenders WHERE tbl = ?", (table.value,))
    else:
        rows = db.select_in("SELECT key, site_id FROM replica_spenders WHERE tbl = ? AND key IN ({in})",
                            [str(k) for k in keys], (table.value,)) if keys else []
    out: dict[str, list[str]] = defaultdict(list)
    for key, site in rows:
        out[key].append(site)
    return out


def row_watermarks(db: Database, table: Table, keys: Sequence | None,
                   marks: dict[str, int]) -> dict[str, tuple[Watermark, ...]]:
    """The watermarks of the rows of ``table`` (all, or those of ``keys``) by key as text:
    one per site whose spend the row holds, in site order (``marks``: :func:`site_watermarks`)."""
    return {key: tuple(Watermark(s, marks.get(s, 0)) for s in sorted(sites))
            for key, sites in _spenders(db, table, keys).items()}


def contract_allowances(db: Database, exposures: Iterable[tuple[int, int | None, int, int]], policy: AllowancePolicy,
                        active_sites: Sequence[str]) -> dict[int, tuple[Allowance, ...]]:
    """The allowances of each contract of ``exposures`` ((contract_id, its own exposure or
    None, balance, credit line) tuples), by contract id; none for a contract without an
    exposure."""
    rows = list(exposures)
    spenders = _spenders(db, Table.CONTRACTS, [cid for cid, *_ in rows])
    active = set(active_sites)
    out: dict[int, tuple[Allowance, ...]] = {}
    for cid, own, _balance, _credit in rows:
        exposure = policy.default_exposure_kop if own is None else own
        if exposure is None:
            continue
        priority = sorted(s for s in spenders.get(str(cid), ()) if s in active)
        others = len(active) - len(priority)
        weight = policy.priority_weight * len(priority) + others + 1  # one share kept for a site not yet known
        unit = exposure // weight
        out[cid] = tuple(Allowance(s, unit * policy.priority_weight) for s in priority) + (Allowance("*", unit),)
    return out


def set_offline_exposure(ledger: Ledger, contract_id: int, exposure_kop: int | None) -> None:
    """Set how much a contract may lose to its sites' offline spend (None: the host's
    default); its allowances are published again at once (a contracts delta)."""
    if exposure_kop is not None and (type(exposure_kop) is not int or not 0 <= exposure_kop <= MAX_AMOUNT_KOP):
        raise InvalidInput(f"offline exposure must be a whole number of kopecks in 0..{MAX_AMOUNT_KOP}, "
                           f"got {exposure_kop!r}")

    def step(db: Database) -> None:
        if db.execute("UPDATE contracts SET offline_exposure_kop = ? WHERE contract_id = ?",
                      (exposure_kop, contract_id)).rowcount != 1:
            raise NotFound(f"no contract {contract_id}")
        record_change(db, Table.CONTRACTS, [contract_id], now_utc_s=ledger.now())
    ledger.db.run(step)
