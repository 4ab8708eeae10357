"""The domain model and the reference evaluator: the readable specification of every rule.

Fuel: :mod:`authz.fuel_model` (types), :mod:`authz.fuel` (rules). Club:
:mod:`authz.club_model`, :mod:`authz.club`. Both behind the evaluator interface in
:mod:`authz.reference` (the native twin lives in ``native``). Errors: :mod:`authz.errors`;
reason codes: :mod:`authz.reasons`. Standard library only.
"""

from .errors import AuthzError, ModelError, RequestError
from .reasons import Reason

__all__ = ["AuthzError", "ModelError", "RequestError", "Reason"]
