"""Tests of the ``terminal`` package: the edge daemon's parts against real files and sockets."""
