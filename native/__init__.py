"""The native (Cython) evaluator and the one place that picks an evaluator implementation.

The daemon uses the native evaluator. It is compiled at install time; if it is missing the
installation is broken, and importing this package says so (no silent slow fallback).
``EDGEPOS_EVALUATOR=reference`` picks the reference evaluator explicitly, for debugging.
"""

from __future__ import annotations

import os

from authz.club_model import ClubModel
from authz.fuel_model import FuelModel
from authz.reference import ReferenceClubEvaluator, ReferenceFuelEvaluator

from .compact import ClubColumns, CompactClubModel, CompactFuelModel, FuelColumns

try:
    from ._evaluator import NativeClubEvaluator, NativeFuelEvaluator
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "edgepos: the native evaluator (native._evaluator) is not built. Install edgepos with "
        "`pip install .` (or `bash scripts/bootstrap.sh`) on a machine with a C compiler; "
        f"to debug without it, set EDGEPOS_EVALUATOR=reference. ({exc})"
    ) from exc

#: Implementations by name, for EDGEPOS_EVALUATOR and the test fixtures.
IMPLEMENTATIONS = {
    "native": (NativeFuelEvaluator, NativeClubEvaluator),
    "reference": (ReferenceFuelEvaluator, ReferenceClubEvaluator),
}


def _pick(impl: str | None) -> tuple[type, type]:
    name = impl or os.environ.get("EDGEPOS_EVALUATOR", "native")
    try:
        return IMPLEMENTATIONS[name]
    except KeyError:
        raise ValueError(f"unknown evaluator {name!r}: choose one of {sorted(IMPLEMENTATIONS)}") from None


def fuel_evaluator(model: FuelModel | FuelColumns, impl: str | None = None):
    """A fuel evaluator over ``model``: native unless ``impl`` or EDGEPOS_EVALUATOR says otherwise.

    ``model`` may be FuelColumns (the compact replica, :mod:`native.compact`): the native
    evaluator packs them without a Python object per card; the reference evaluator gets
    their FuelModel (``columns.to_model()``, an object per card: for debugging)."""
    cls = _pick(impl)[0]
    if isinstance(model, FuelColumns) and cls is not NativeFuelEvaluator:
        model = model.to_model()
    return cls(model)


def club_evaluator(model: ClubModel | ClubColumns, impl: str | None = None):
    """A club evaluator over ``model``: native unless ``impl`` or EDGEPOS_EVALUATOR says otherwise.

    ``model`` may be ClubColumns (the compact club replica, :mod:`native.compact`): the
    native evaluator packs them without a Python object per account, card or lot; the
    reference evaluator gets their ClubModel (``columns.to_model()``, for debugging)."""
    cls = _pick(impl)[1]
    if isinstance(model, ClubColumns) and cls is not NativeClubEvaluator:
        model = model.to_model()
    return cls(model)


__all__ = ["NativeFuelEvaluator", "NativeClubEvaluator", "IMPLEMENTATIONS", "fuel_evaluator",
           "club_evaluator", "FuelColumns", "CompactFuelModel", "ClubColumns", "CompactClubModel"]
