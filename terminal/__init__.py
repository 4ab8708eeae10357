"""The edge daemon and the ``edgepos`` command line."""
