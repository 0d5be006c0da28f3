"""Nitpicker, the secure GUI multiplexer (paper §4.3): server.py, protocol.py, client.py."""
