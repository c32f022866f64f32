"""Devices: the provider's tracker inventory, each optionally assigned to a customer."""
