"""The ledger's protocol, declared once: a counter store with exactly-once adds.

    add(key, delta, rid, sum) -> (key, delta, rid, value, sum)   errors CORRUPT
        adds `delta` to counter `key` once per request id `rid`: a request whose `rid` the
        ledger has run before is not run again, it answers the remembered `value` (the
        counter just after that add). The add is in the ledger's log before it is answered,
        so it survives a kill or crash of the ledger.
    read(key, rid, sum) -> (key, rid, value, sum)                errors CORRUPT
        the counter's value now (0 for a key never added to). `rid` is echoed.

Checksums: every request carries `sum = digest(op, key, [delta,] rid)` and every answer
`sum = digest(op, key, [delta,] rid, value)` (`digest` below). The ledger refuses a request
whose sum does not match (CORRUPT: nothing was run), so a message changed on the way is not
run as some other request; a client accepts an answer only if its sum matches and it echoes
the request it sent (key, delta, rid), so a changed or misdirected answer is detected rather
than taken. A checksum, not a signature: it catches accidents (corrupt, duplicate, reorder
faults), not a forger.

Durability contract: across restarts of the ledger task (kill, crash, exit); the log is an
append-only file in the task's scratch directory, which the launcher keeps across restarts
of the task (one per task name for the system's life) and removes at shutdown. Not across
a host crash (no fsync): the file's pages are the host kernel's once written.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from kernel.user.rpc import Protocol, op

LEDGER = Protocol("ledger", [
    op("add", 1, ["key:str", "delta:int", "rid:str", "sum:str"],
       ("key", "delta", "rid", "value", "sum"), errors=["CORRUPT"],
       doc="add delta to key, once per rid; answers the value just after it"),
    op("read", 2, ["key:str", "rid:str", "sum:str"], ("key", "rid", "value", "sum"),
       errors=["CORRUPT"], doc="the value of key now"),
], tag=0x4C47)

LOG_NAME = "ledger.log"          # the ledger's log, in its scratch directory
HISTORY_NAME = "history.jsonl"   # a workload client's history, in its scratch directory


def digest(*fields: Any) -> str:
    """The checksum of a request or an answer: 16 hex digits of BLAKE2b over the fields."""
    return hashlib.blake2b(json.dumps(fields, separators=(",", ":")).encode(),
                           digest_size=8).hexdigest()
