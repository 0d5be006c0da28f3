"""Test tasks of tests/rt: they ask the CPU reservation manager and print what it answered."""
from __future__ import annotations

import json
import threading
import time
from typing import Any

from kernel.user.client import L4
from kernel.user.rpc import RemoteFailure
from servers.rt.client import RtClient


def _ask(rt: RtClient, *args: Any, **kw: Any) -> dict[str, Any]:
    try:
        return {"ok": dict(rt.reserve(*args, **kw)._asdict())}
    except RemoteFailure as e:
        return {"error": e.error, "reason": e.reason}


def asker(l4: L4, hold_s: str = "30") -> int:
    """Two big reservations for two sleeping threads of ours (admitted), a third that does
    not fit (refused with the sums), bad fields, another process's thread; then holds the
    reservations without releasing them, so the test can kill us and see them reaped."""
    rt = RtClient(l4)
    out: dict[str, Any] = {}
    stop = threading.Event()
    tids: list[int] = []

    def sleeper() -> None:
        tids.append(threading.get_native_id())
        stop.wait()
    ths = [threading.Thread(target=sleeper, daemon=True) for _ in range(3)]
    for t in ths:
        t.start()
    while len(tids) < 3:
        time.sleep(0.01)
    out["first"] = _ask(rt, 100_000, 90_000, tid=tids[0])
    out["second"] = _ask(rt, 100_000, 85_000, tid=tids[1])
    out["third"] = _ask(rt, 100_000, 10_000, tid=tids[2])
    out["twice"] = _ask(rt, 100_000, 1_000, tid=tids[0])
    out["budget"] = _ask(rt, 10_000, 20_000, tid=tids[2])
    out["period"] = _ask(rt, 10, 5, tid=tids[2])
    out["foreign"] = _ask(rt, 10_000, 1_000, tid=1)
    out["mine"] = rt.mine()
    print(f"RT-ASK {json.dumps(out)}", flush=True)
    time.sleep(float(hold_s))
    return 0
