"""The `input` device server: the input driver (servers/dde_linux/drivers/l4input.py) in its
own task, its events streamed to each permitted client (protocol.py, server.py, client.py)."""
