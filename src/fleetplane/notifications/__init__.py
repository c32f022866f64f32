"""Notifications: what the automations fired, and the durable outbox that delivers their actions."""
