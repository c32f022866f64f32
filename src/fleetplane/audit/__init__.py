"""Audit log: who (which key, or the command line) changed what, and when."""
