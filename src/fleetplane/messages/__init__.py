"""Messages: every report a device sent, stored once per (device, device time)."""
