"""The HTTP side of hookd: health, metrics and the management API."""
