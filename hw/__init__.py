"""Device drivers (fuel-card reader over PC/SC, serial barcode scanner, fuel pump) and,
in ``hw.sim``, their simulators."""
