"""Drivers: who they are, their key codes, and which device each drove when."""
