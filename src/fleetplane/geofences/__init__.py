"""Geofences: a customer's circles, polygons and corridors, and which of them hold a position."""
