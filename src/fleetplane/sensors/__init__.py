"""Sensors: how a device's raw message parameters become values people read (litres, volts,
ignition on/off)."""
