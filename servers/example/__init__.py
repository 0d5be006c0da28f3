"""The example server: a key-value store, the model of how to write a server (protocol.py
declares it, server.py implements it; tests/servers/test_example.py runs it)."""
