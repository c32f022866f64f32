"""Fleetplane: a self-hostable, multi-tenant fleet telematics platform."""

__version__ = "0.1.0"
