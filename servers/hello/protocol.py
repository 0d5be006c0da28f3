"""The hello service's two tiny protocols, declared once (kernel.user.rpc).

HELLO (servers/hello/server.py):

    hello(name) -> greeting       "GREETING, NAME (#N, label L)": N counts the calls this
                                  incarnation answered, L is the caller's gate label (the
                                  kernel's word, never the caller's); at most MAX_NAME
                                  characters of NAME are echoed back

COUNTER (servers/hello/counter.py):

    add(n) -> totals              adds n to the caller's total (kept per gate label) and
                                  answers "label L: total T (all clients: A)"

Neither declares errors: a request that does not fit is refused by the framework
(BAD_REQUEST / UNKNOWN_OP), everything else is answered.
"""
from __future__ import annotations

from kernel.user.rpc import Protocol, op

MAX_NAME = 256        # characters of the caller's name echoed back (an answer must fit)

HELLO = Protocol("hello", [
    op("hello", 1, ["name:str"], "greeting", doc="a greeting naming the caller's label"),
], tag=0x484C)

COUNTER = Protocol("counter", [
    op("add", 1, ["n:int"], "totals", doc="add n to the caller's total"),
], tag=0x434E)
