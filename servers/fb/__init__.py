"""The `fb` device server: the framebuffer driver (servers/dde_linux/drivers/l4fb.py) in its
own task, multiplexed among clients by sessions (protocol.py, server.py, client.py)."""
