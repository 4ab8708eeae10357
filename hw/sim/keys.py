"""The simulated site's issuer key: PUBLIC and for tests and simulations only.

A site with pumps and no ``keys.issuer_key_file`` may use it only when ``api.simulation`` is
true (the daemon refuses otherwise); the simulation personalises its virtual cards with it.
"""

from __future__ import annotations

from hw.card.keys import SoftwareKeyStore

__all__ = ["SIM_ISSUER_KEY", "sim_key_store"]

#: TEST-ONLY issuer master key of the simulated site, used when the configuration names no
#: ``keys.issuer_key_file``. It is public (it is in this file): a real site must configure
#: its own key.
SIM_ISSUER_KEY = bytes.fromhex("5e0f7c3a9d1b4e6f8a2c7d0e9b3f1a64")


def sim_key_store() -> SoftwareKeyStore:
    """The key store of the simulated site (:data:`SIM_ISSUER_KEY`): for tests only."""
    return SoftwareKeyStore(SIM_ISSUER_KEY)
