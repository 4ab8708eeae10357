"""A simulated dispenser with a real dispenser's memory, kept in a file.

:class:`RecordedSimPump` is :class:`hw.sim.pump.SimulatedPump` plus what a real dispenser
keeps across its controller's restart (sale numbers, the last sale's totals), so that a
daemon killed mid-delivery finds on restart what was dispensed, as on a real forecourt
(the fuel lane's crash tests, ``dispenser = "sim"``). A simulation part only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from authz.money import amount_for_volume
from hw.pump import Delivery, DeliveryReason, Preset, PumpError
from hw.sim.pump import SimulatedPump

__all__ = ["RecordedSimPump"]
class RecordedSimPump(SimulatedPump):
    """:class:`hw.sim.pump.SimulatedPump` that keeps what a real dispenser keeps across a
    restart of its controller: its sale number, the last sale's totals, whether that sale is
    still unconfirmed, and the nozzles' totalizers, in a JSON file
    replaced atomically at every change (before the change is reported). A daemon killed with
    a sale open finds, when it comes back, that sale ended where the meter stood (reason
    ``fault``): the dispenser failed safe when its controller went away.

    Crash-safe for a process crash (the OS keeps the page cache), not for power loss: it
    stands in for the dispenser's own NVRAM and is no part of a real site.
    """

    def __init__(self, pump_id: int, *, state_path: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(pump_id, **kwargs)
        self.state_path = Path(state_path)
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        self._load()

    def _load(self) -> None:
        try:
            d = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise PumpError(f"simulated pump {self.pump_id}: its memory {self.state_path} does not load: {exc}") from None
        self._sale_no = int(d["sale_no"])
        last = d.get("open") or d.get("last")
        if d.get("open") is not None:
            last = dict(last, reason=DeliveryReason.FAULT.value,
                        amount_kop=amount_for_volume(last["volume_ml"], last["price_kop_per_l"]))
        if last is not None:
            self._last = Delivery(last["sale_no"], last["product"], last["price_kop_per_l"],
                                  Preset(last.get("preset_volume_ml"), last.get("preset_amount_kop")),
                                  last["volume_ml"], last["amount_kop"], DeliveryReason(last["reason"]))
        for product, (v, a) in (d.get("totals") or {}).items():
            self._totals[product] = [int(v), int(a)]
        self._confirmed_id = d.get("confirmed_id")
        if d.get("open") is not None and self._last is not None:
            # the sale ended where the meter stood: the totalizers counted it, unconfirmed
            t = self._totals.setdefault(self._last.product, [0, 0])
            t[0] += self._last.volume_ml
            t[1] += self._last.amount_kop
            self._unconfirmed = self._last
        elif d.get("unconfirmed") and self._last is not None:
            self._unconfirmed = self._last
        self._save()

    def _save(self) -> None:
        last, sale = self._last, self._sale
        d = {"format": 1, "sale_no": self._sale_no, "totals": self._totals,
             "unconfirmed": self._unconfirmed is not None, "confirmed_id": self._confirmed_id,
             "last": None if last is None else {
                 "sale_no": last.sale_no, "product": last.product, "price_kop_per_l": last.price_kop_per_l,
                 "preset_volume_ml": last.preset.volume_ml, "preset_amount_kop": last.preset.amount_kop,
                 "volume_ml": last.volume_ml, "amount_kop": last.amount_kop, "reason": str(last.reason)},
             "open": None if sale is None else {
                 "sale_no": sale.sale_no, "product": sale.product, "price_kop_per_l": sale.price_kop_per_l,
                 "preset_volume_ml": sale.preset.volume_ml, "preset_amount_kop": sale.preset.amount_kop,
                 "volume_ml": sale.volume_ml}}
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(d), encoding="utf-8")
        os.replace(tmp, self.state_path)

    # SimulatedPump reports every change through _emit and records a finished sale in
    # _record: saving there keeps the file ahead of what the lane hears.
    def _emit(self, event: Any) -> None:
        self._save()
        super()._emit(event)

    def _record(self, sale: Any, reason: DeliveryReason) -> Delivery:
        out = super()._record(sale, reason)
        self._save()
        return out

    async def confirm_sale(self, sale_id: str) -> None:
        """Confirm as :class:`SimulatedPump` does, and remember it."""
        await super().confirm_sale(sale_id)
        self._save()

    def meter_untracked(self, product: str, volume_ml: int, price_kop_per_l: int) -> None:
        """Meter fuel outside any sale, as :class:`SimulatedPump` does, and remember it."""
        super().meter_untracked(product, volume_ml, price_kop_per_l)
        self._save()
