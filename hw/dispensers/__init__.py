"""Drivers for real dispensers behind the ``hw.pump.Pump`` interface.

- ``hw.dispensers.polled``: the part every polled device shares (status polling, events,
  the sale bookkeeping of the ``Pump`` contract); a driver adds only its device commands.
- ``hw.dispensers.pts2``: a Technotrade PTS-2 forecourt controller over jsonPTS (HTTP).
- ``hw.dispensers.azt2``: an АЗТ 2.0 ("protocol 2.0") dispenser on an RS-485 line, with
  ``hw.dispensers.azt2_codec`` its framing without I/O.
- ``hw.dispensers.factory``: one function from a site's ``PumpConfig`` to a ``Pump``.

Their simulators are ``hw.sim.pts2`` and ``hw.sim.azt2``; docs/dispensers.md says which
public source each message follows and what is unverified against real hardware.
"""
