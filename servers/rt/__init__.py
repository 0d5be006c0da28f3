"""DROPS' CPU reservation manager (paper §4.2): admission control and enforcement of
periodic CPU reservations by the host scheduler (protocol.py, server.py, client.py)."""
