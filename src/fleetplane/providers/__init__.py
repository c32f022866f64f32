"""Providers: the service providers (tenants) that run their customers' fleets."""
