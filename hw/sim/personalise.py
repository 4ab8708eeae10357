"""Issue virtual fuel cards: card records + the issuer master key -> virtual card state files.

Personalisation is what the issuer's card bureau does to a blank card: write the identity
and limit records, compute the static data MAC, load the card's diversified key and PIN,
zero the counters. ``python -m hw.sim.personalise --help`` for the command line; the card
records file is JSON::

    [{"card_no": "7005830000000017", "contract_id": 42, "expires_on": "2027-12-31",
      "groups": ["FUEL", "CAR_WASH"], "pin": "1234",
      "limits": [{"limit_id": 1, "unit": "MILLILITRES", "period": "DAY", "amount": 200000,
                  "scope": "ALL"},
                 {"limit_id": 2, "unit": "PURCHASES", "period": "DAY", "amount": 3,
                  "on_breach": "ALERT"}],
      "products": ["DT"], "windows": [{"days": [0, 1, 2, 3, 4], "start_min": 360, "end_min": 1320}],
      "station_scope": "LISTED", "station_ids": [1, 2], "on_breach": "DECLINE"}]

The fleet controls (the second limit and everything after ``limits``) are optional; a card
with none of them is written in card format 01, as before.

Each card becomes ``OUT_DIR/<card_no>.json``, the file :class:`hw.sim.card.VirtualCard`
loads. Nothing printed shows a PIN, a key or a full card number.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path

from authz.fuel_model import (
    CardKind,
    CardStatus,
    FuelCard,
    Limit,
    LimitCounter,
    LimitUnit,
    OnBreach,
    Period,
    ProductGroup,
    Scope,
    StationScope,
    TimeWindow,
    mask_card_no,
)
from hw.card.application import pin_block
from hw.card.keys import (
    SoftwareKeyStore,
    generate_master_key,
    load_master_key,
    save_master_key,
)
from hw.card.records import encode_records
from hw.errors import CardError
from hw.sim.card import CardState

__all__ = ["personalise", "card_from_json", "issue", "main"]


def personalise(card: FuelCard, pin: str, keys: SoftwareKeyStore,
                counters: Iterable[tuple[int, LimitCounter]] | None = None) -> CardState:
    """The state of a freshly issued card: records, data MAC, diversified key, PIN.

    The records are in card format 01 unless the card has a rule only format 02 holds
    (``hw.card.records.needs_v2``); ``counters`` are the spent counters (a count for a
    purchases limit) it starts with, zero for every limit not given."""
    pin_block(pin)  # validates the PIN's shape
    records = encode_records(card)
    known = dict(counters or ())
    return CardState(
        card_key=keys.card_key(card.card_no),
        key_version=keys.key_version,
        identity=records.identity,
        limits=list(records.limits),
        controls=records.controls,
        data_mac=keys.mac(card.card_no, records.mac_input()),
        pin=pin,
        counters=[[lim.limit_id, known.get(lim.limit_id, LimitCounter(0, 0)).spent,
                   known.get(lim.limit_id, LimitCounter(0, 0)).period_start] for lim in card.limits],
    )


def _enum(cls, value, what: str):
    if isinstance(value, int):
        return cls(value)
    try:
        return cls[str(value).upper()]
    except KeyError:
        raise ValueError(f"{what}: unknown {cls.__name__} {value!r}") from None


def card_from_json(d: dict) -> tuple[FuelCard, str]:
    """A card and its PIN from one entry of the records file; raise ValueError.

    Beside the fields of the first cards an entry may give the fleet controls: per limit
    ``on_breach`` (``DECLINE`` or ``ALERT``; units include ``PURCHASES``, periods ``QUARTER``
    and ``YEAR``), and per card ``products`` (a list of product codes), ``windows``
    (``{"days": [0..6], "start_min": .., "end_min": ..}``), ``station_scope`` (``NETWORK``,
    ``HOME_REGION``, ``LISTED``), ``station_ids`` and ``on_breach``."""
    limits = tuple(
        Limit(int(x["limit_id"]), _enum(LimitUnit, x["unit"], "unit"),
              _enum(Period, x["period"], "period"), int(x["amount"]),
              _enum(Scope, x.get("scope", "ALL"), "scope"),
              None if x.get("group") is None else _enum(ProductGroup, x["group"], "group"),
              x.get("product"), _enum(OnBreach, x.get("on_breach", "DECLINE"), "on_breach"))
        for x in d.get("limits", ()))
    products = d.get("products")
    card = FuelCard(str(d["card_no"]), int(d["contract_id"]), date.fromisoformat(d["expires_on"]),
                    frozenset(_enum(ProductGroup, g, "group") for g in d.get("groups", ["FUEL"])),
                    limits, _enum(CardKind, d.get("kind", "PLASTIC"), "kind"),
                    _enum(CardStatus, d.get("status", "ACTIVE"), "status"),
                    None if products is None else frozenset(str(p) for p in products),
                    tuple(TimeWindow(frozenset(int(x) for x in w["days"]), int(w["start_min"]), int(w["end_min"]))
                          for w in d.get("windows", ())),
                    _enum(StationScope, d.get("station_scope", "NETWORK"), "station_scope"),
                    frozenset(int(x) for x in d.get("station_ids", ())),
                    _enum(OnBreach, d.get("on_breach", "DECLINE"), "on_breach"))
    return card, str(d["pin"])


def issue(records: Sequence[dict], keys: SoftwareKeyStore, out_dir: Path, *,
          overwrite: bool = False) -> list[Path]:
    """Write one state file per card record; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, rec in enumerate(records):
        try:
            card, pin = card_from_json(rec)
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"card record #{i + 1}: {type(exc).__name__}: {exc}") from None
        path = out_dir / f"{card.card_no}.json"
        if path.exists() and not overwrite:
            raise ValueError(f"card record #{i + 1}: {mask_card_no(card.card_no)} already issued "
                             "(use --overwrite to reissue with zero counters)")
        personalise(card, pin, keys).save(path)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m hw.sim.personalise",
        description="Issue virtual fuel cards from card records and the issuer master key.")
    p.add_argument("records", nargs="?", type=Path,
                   help="JSON file: a list of card records (card_no, contract_id, expires_on, "
                        "groups, pin, limits)")
    p.add_argument("--key", type=Path, required=True,
                   help="issuer master key file (hex, 16/24/32 bytes)")
    p.add_argument("--key-version", type=int, default=1, help="issuer key version (default 1)")
    p.add_argument("--out", type=Path, default=Path("cards"),
                   help="directory for the card state files (default ./cards)")
    p.add_argument("--generate-key", action="store_true",
                   help="create the master key file first (fails if it exists)")
    p.add_argument("--overwrite", action="store_true", help="reissue cards already in --out")
    args = p.parse_args(argv)
    try:
        if args.generate_key:
            save_master_key(args.key, generate_master_key())
            print(f"generated issuer master key in {args.key}")
        if args.records is None:
            if not args.generate_key:
                p.error("give a card records file (or --generate-key alone)")
            return 0
        keys = SoftwareKeyStore(load_master_key(args.key), args.key_version)
        records = json.loads(args.records.read_text(encoding="utf-8"))
        if not isinstance(records, list):
            raise ValueError("the records file must hold a JSON list")
        for path in issue(records, keys, args.out, overwrite=args.overwrite):
            print(f"issued {mask_card_no(path.stem)} -> {path.parent}/")
    except (OSError, ValueError, CardError) as exc:
        print(f"personalise: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
