"""Simulators of the devices in ``hw``: virtual fuel cards, barcode scanners, dispensers."""
