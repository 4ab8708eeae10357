"""Card issuing at the host, with the card's data written from the ledger's record.

``edgepos host issue-card NO ... --personalise CARD.json --pin-file F --issuer-key-file K``
issues the fuel card in the host's ledger (:func:`host.master.issue_fuel_card`) and writes
the virtual card's state file (:func:`hw.sim.personalise.personalise`: records, data MAC,
the key diversified from the issuer master key, the PIN) from the record the ledger holds,
so the card the simulator inserts is the card the host issued. ``edgepos host
personalise-card NO ...`` writes it again from the ledger (a lost file, changed limits).

This module is glue above both packages: ``host`` knows no card hardware and ``hw`` no
ledger; only the ``edgepos`` command (:mod:`terminal.cli`) brings them together, by giving
:class:`VirtualCardWriter` to :func:`host.admin.main`.

The PIN comes from a file (its first line) or is asked for at the terminal, never from the
command line; nothing printed shows the PIN, a key or the full card number. The state file
holds the card's key and PIN, so it is written readable by its owner only (0600).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path

from authz.fuel_model import FuelCard, mask_card_no
from hw.card.application import pin_block
from hw.card.keys import SoftwareKeyStore
from hw.errors import CardError
from hw.sim.personalise import personalise

__all__ = ["IssuingError", "VirtualCardWriter", "read_pin", "write_private"]


class IssuingError(ValueError):
    """An input for writing a card is missing or bad (the PIN, the issuer key, the output
    file). A ValueError, so ``edgepos host`` refuses with exit 1 and one line."""


def read_pin(pin_file: str | None, *, prompt: Callable[[str], str] = getpass.getpass,
             interactive: bool | None = None) -> str:
    """The PIN: the first line of ``pin_file``, or asked twice at the terminal (``prompt``,
    no echo) when no file is given. Checked to be 4 to 12 ASCII digits; the message of a
    bad one never shows it."""
    if pin_file is not None:
        try:
            lines = Path(pin_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise IssuingError(f"cannot read the PIN file {pin_file}: {type(exc).__name__}") from None
        pin = lines[0].strip() if lines else ""
    else:
        if not (sys.stdin.isatty() if interactive is None else interactive):
            raise IssuingError("no PIN: give --pin-file (there is no terminal to ask for it)")
        pin = prompt("card PIN: ")
        if prompt("card PIN again: ") != pin:
            raise IssuingError("the two PINs differ")
    try:
        pin_block(pin)
    except CardError:
        raise IssuingError("a PIN is 4 to 12 digits 0-9") from None
    if not pin.isascii():
        raise IssuingError("a PIN is 4 to 12 digits 0-9")
    return pin


def write_private(path: Path, text: str, *, overwrite: bool) -> None:
    """Write ``text`` to ``path`` readable by its owner only, atomically (a temporary file
    renamed over it); an existing file is kept unless ``overwrite``."""
    if path.exists() and not overwrite:
        raise IssuingError(f"{path} exists: a card is never overwritten by accident (--overwrite to reissue "
                           "it with zero counters)")
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class VirtualCardWriter:
    """A :class:`host.admin.CardWriter` that writes virtual card state files (the files
    :class:`hw.sim.card.VirtualCard` loads)."""

    def add_arguments(self, parser: argparse.ArgumentParser, *, required: bool) -> None:
        """``--personalise CARD.json --pin-file F --issuer-key-file K [--key-version N] [--overwrite]``."""
        parser.add_argument("--personalise", metavar="CARD.json", required=required,
                            help="write the virtual card's state file (the card the simulator inserts) "
                                 "from the ledger's record")
        parser.add_argument("--pin-file", metavar="F", help="a file whose first line is the card's PIN "
                            "(4-12 digits); without it the PIN is asked for at the terminal")
        parser.add_argument("--issuer-key-file", metavar="K", help="the issuer master key file (hex), the "
                            "key the card's key is diversified from (with --personalise)")
        parser.add_argument("--key-version", type=int, default=1, help="the issuer key's version (default 1)")
        parser.add_argument("--overwrite", action="store_true", help="replace an existing card file")

    def prepare(self, card: FuelCard, args: argparse.Namespace) -> Callable[[FuelCard], str] | None:
        """Check the PIN, the key, the output file and the card data before the ledger changes."""
        if args.personalise is None:
            if args.pin_file is not None or args.issuer_key_file is not None:
                raise IssuingError("--pin-file and --issuer-key-file go with --personalise CARD.json")
            return None
        if args.issuer_key_file is None:
            raise IssuingError("--personalise needs --issuer-key-file (the issuer master key)")
        out = Path(args.personalise)
        if not out.parent.is_dir():
            raise IssuingError(f"no directory {out.parent} for the card file")
        if out.exists() and not args.overwrite:
            raise IssuingError(f"{out} exists: a card is never overwritten by accident (--overwrite to reissue it "
                               "with zero counters)")
        try:
            keys = SoftwareKeyStore.from_file(args.issuer_key_file, args.key_version)
        except CardError as exc:
            raise IssuingError(str(exc)) from None
        pin = read_pin(args.pin_file)
        try:
            personalise(card, pin, keys)  # the card data fits the card application
        except CardError as exc:
            raise IssuingError(f"card {mask_card_no(card.card_no)} cannot be personalised: {exc}") from None

        def write(issued: FuelCard) -> str:
            try:
                state = personalise(issued, pin, keys)
            except CardError as exc:
                raise IssuingError(f"card {mask_card_no(issued.card_no)} cannot be personalised: {exc}") from None
            write_private(out, state.to_json(), overwrite=args.overwrite)
            shown = str(out).replace(issued.card_no, mask_card_no(issued.card_no))  # a file named by the number
            return (f"card {mask_card_no(issued.card_no)}: card data written to {shown} (issuer key version "
                    f"{keys.key_version})")
        return write
