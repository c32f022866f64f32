"""Customers: the fleets a provider serves, with their enabled modules and settings."""
