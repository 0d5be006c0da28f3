"""The io server: the device manager (paper §4.1). See servers/io/server.py."""
