"""Automations: rules that watch the devices and act (webhook, notification, command, e-mail)."""
