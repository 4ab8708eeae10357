"""Purchases on the web tests' contract, as a site's journal batches ingested by the host
(host.ingest, the path a real site's sync takes)."""

from __future__ import annotations

from authz.fuel_model import ProductGroup
from host import master
from host.ingest import ingest_batch
from host.ledger import Ledger

from ..host.edge import STATION, T0, Site
from .conftest import CARD, CONTRACT

#: when each purchase's pump sale began (UTC seconds): 15 November 2026, 14:06:40, 15:06:40 and 16:06:40 in Moscow
PURCHASE_STARTS = tuple(T0 - 3 * 86_400 + i * 3_600 for i in range(3))
#: litres of each (10, 20, 30) at 60.00 ₽/l
PURCHASE_ML = (10_000, 20_000, 30_000)
STATION_NAME, STATION_ADDRESS = "АЗС №17", "Омск, пр. Мира, 101"


def november_purchases(ledger: Ledger) -> None:
    """Three purchases of AI95 on CARD in November at a station with a name and address."""
    master.put_station(ledger, STATION, region=77, groups=[ProductGroup.FUEL])
    master.set_station_address(ledger, STATION, name=STATION_NAME, address=STATION_ADDRESS)
    s = Site("S1")
    for i, (at, ml) in enumerate(zip(PURCHASE_STARTS, PURCHASE_ML, strict=True)):
        s.fuel_sale(card_no=CARD, contract_id=CONTRACT, delivered_ml=ml, tc=10 + 4 * i, at=at)
    for b in s.batches(5):
        ingest_batch(ledger, b)
