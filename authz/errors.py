"""The errors of the evaluator layer.

One type, :class:`RequestError`, is raised for every malformed request (unknown card or
product, negative or overflowing amounts, a sale line without a category...). A request
that is well formed but not allowed is *not* an error: it gets a decision with a reason
code (see :mod:`authz.reasons`). :class:`ModelError` is raised when a model (the replica
of cards, contracts, tariffs...) is itself inconsistent, at load time.
"""


class AuthzError(Exception):
    """Base of every error the evaluator raises."""


class RequestError(AuthzError, ValueError):
    """A malformed request: it names what was wrong and with which value. Nothing changed."""


class ModelError(AuthzError, ValueError):
    """An inconsistent model (duplicate ids, a card of an unknown contract, ...)."""
