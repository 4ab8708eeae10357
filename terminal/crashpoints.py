"""Named crash points, a test hook: with ``EDGEPOS_CRASH_AT=<point>`` in its environment the
daemon kills itself with SIGKILL when it reaches that point (for example
``till.sale_committed``: right after that record is on disk, before the answer goes out).
The crash tests use it to stop the daemon at every step of a flow deterministically; without
the variable (production) a point costs one string comparison.
"""

from __future__ import annotations

import os
import signal

_CRASH_AT = os.environ.get("EDGEPOS_CRASH_AT") or None


def reached(point: str) -> None:
    """The daemon is at ``point``; die here if the environment asks for it."""
    if _CRASH_AT is not None and point == _CRASH_AT:
        os.kill(os.getpid(), signal.SIGKILL)
