"""Geofences: circles, polygons and corridors of a customer, their groups, and which hold a position."""
