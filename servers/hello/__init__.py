"""The hello service: the smallest servers and client, for the minimal and default images.

- `protocol`: HELLO and COUNTER, declared once (kernel.user.rpc).
- `server.serve(l4, greeting="hello", crash_every="0")`: answers each hello(name) "GREETING,
  NAME (#N, label L)"; with crash_every=N > 0 it crashes on purpose every N calls (to show
  supervision).
- `counter.serve(l4)`: keeps a total per caller label; answers the running totals.
- `client.run(l4, name="world", period_ms="500", count="0", cap="hello")`: calls the service
  forever (or `count` times), prints each answer, survives the server's restarts.
"""
