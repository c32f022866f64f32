"""Commands to devices: sent at once to a connected device, otherwise at its next login."""
