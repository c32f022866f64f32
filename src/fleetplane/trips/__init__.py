"""Trips: trips, stops and parkings detected from messages, their settings per device."""
