"""Tests of the ``hw`` package: device drivers against real ptys and their simulators."""
