"""Channels: a listener for one device protocol on one port."""
