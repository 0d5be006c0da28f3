"""Test tasks for the memory tests: an agent that does what root tells it.

`agent(l4)` serves its gate: each message is msgpack {"op", ...}; it answers {"ok": value}
or {"err": Err name, "reason"}. Memory items that arrive land in WINDOW. (This is the test's
remote control of a task, not a server of the system, and it is hand-written because it
must misbehave on purpose — a pager that holds a fault unanswered, a task that never
acknowledges — which the server framework never does. The servers it calls, sigma0 and moe,
speak their kernel.user.rpc protocols; their declared errors come back here by name.)
"""
from __future__ import annotations

import signal
import time
from typing import Any, Callable

from kernel.abi import AlienVerdict, Err, Proto, pack, unpack
from kernel.user.errors import L4Error
from kernel.user.rpc import RemoteError, Status, error_answer
from kernel.user.vm import VM, PageFault, grant_mem, map_mem, window

WBASE, WORDER = 0x4000_0000, 30
WINDOW = window(WBASE, WORDER)


def agent(l4: Any, mode: str = "") -> int:
    if mode == "nobody":      # an unprivileged process from here on (uid/gid 65534)
        import os
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
    vm = VM(l4)
    worder = 13 if mode == "smallwin" else WORDER
    next_cap = [200]                   # capabilities sent to us land here, one by one
    backing: list[list[int]] = []      # pager mode: the block we page from
    if mode == "deaf":        # never acknowledges a shootdown by itself
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    faults: list[dict] = []
    held: list[int] = []
    reply, data, items, proto = 0, b"", [], 0
    while True:
        msg = l4.reply_and_wait(reply, data, items=items, proto=proto,
                                window=window(WBASE, worder, next_cap[0], 1))
        if any(it[0] in (1, 2) for it in msg.items):
            next_cap[0] += 1
        reply, items, proto = msg.reply, [], 0
        try:
            if msg.proto == Proto.PAGE_FAULT:
                body = msg.body()
                faults.append(body)
                if mode == "hold":           # a pager that never answers
                    held.append(msg.reply)
                    reply, data = 0, b""
                    continue
                if mode == "pager" and backing:
                    _, base, order, _ = backing[0]
                    npages = 1 << (order - 12)
                    page = base + ((body["addr"] >> 12) % npages) * 4096
                    data, items = b"", [map_mem(page, 12, 6)]
                    continue
                # a pager's refusal in the one error shape (the kernel reads only the items)
                data = error_answer(Status.FAILED, "INVALID", "no mapping")
                proto = int(AlienVerdict.DENY)
                continue
            body = msg.body()
            value, items = run(l4, vm, body, msg, faults)
            if body["op"] == "alloc":
                backing[:] = value
            data = pack({"ok": value})
        except PageFault as e:
            data = pack({"err": "PAGE_FAULT", "reason": e.reason, "code": e.err.name})
        except L4Error as e:
            data = pack({"err": e.err.name, "reason": e.reason})
        except RemoteError as e:         # a server's declared error (QUOTA, NO_CAP, ...)
            data = pack({"err": e.error, "reason": e.reason})
        if body.get("op") == "exit":
            l4.reply(reply, data)
            return 0


# More ops, installed by an agent with a purpose (tests/security/memory_hostile.py).
EXTRA: dict[str, Callable[[Any, VM, dict], Any]] = {}


def run(l4: Any, vm: VM, b: dict, msg: Any, faults: list) -> tuple[Any, list]:
    op = b["op"]
    if op in EXTRA:
        return EXTRA[op](l4, vm, b), []
    if op == "take":                     # a peer sent us memory items
        return msg.items, []
    if op == "read":
        return vm.read(b["addr"], b["n"]), []
    if op == "write":
        vm.write(b["addr"], b["data"])
        return None, []
    if op == "give":                     # send items to a peer agent
        mk = grant_mem if b.get("grant") else map_mem
        its = [mk(b["vaddr"], b["order"], b.get("rights", 6))] + b.get("extra", [])
        ans = unpack(l4.call(l4.caps[b["to"]], pack({"op": "take"}), items=its).data)
        if b.get("grant"):
            vm.flush()
        return ans["ok"], []
    if op == "alloc":                    # from sigma0
        from servers.sigma0 import SIGMA0
        s0: Any = SIGMA0.client(l4, l4.caps["sigma0"])
        s0.alloc(b["order"], _window=WINDOW)
        return s0.last_items, []
    if op == "unmap":
        return l4.mem_unmap(b["vaddr"], b["order"], b.get("own", False)), []
    if op == "query":
        return l4.mem_query(b["vaddr"], b["order"]), []
    if op.startswith("moe_"):
        from servers.moe import MoeSession
        moe = MoeSession(l4, l4.caps["moe"])
        if op == "moe_alloc":
            return list(moe.alloc(b["size"])), []
        if op == "moe_attach":
            return moe.attach(b["slot"], b.get("rights", 6), b.get("addr")), []
        if op == "moe_copy":
            return list(moe.copy(b["slot"])), []
        if op == "moe_release":
            return moe.release(b["slot"]), []
        if op == "moe_info":
            return moe.info(), []
    if op == "send_cap":
        from kernel.user.client import map_cap
        ans = unpack(l4.call(l4.caps[b["to"]], pack({"op": "take"}),
                             items=[map_cap(b["slot"], 0x5)]).data)
        return ans["ok"], []
    if op == "faults":
        return faults, []
    if op == "exit":
        return None, []
    if op == "hammer":                   # two OS threads read through the one VM at once
        return _hammer(l4, vm, b["addr"], b["others"], b["s"]), []
    if op == "spin":                     # compute without touching memory or the kernel
        end = time.monotonic() + b["s"]
        while time.monotonic() < end:
            pass
        return None, []
    raise L4Error(f"unknown op {op}", Err.INVALID)


def _hammer(l4: Any, vm: VM, addr: int, others: list[int], seconds: float) -> dict[str, int]:
    """For `seconds`: this thread reads `addr` over and over, a second OS thread (its faults
    over an L4 thread of its own, `VM.fault_via`) reads each of `others` in turn, which may
    be unmapped meanwhile (PageFault: counted as gone)."""
    import threading
    l4b = l4.spawn_thread()
    counts = {"main": 0, "other": 0, "gone": 0, "bad": 0}
    stop = time.monotonic() + seconds
    first = vm.read(addr, 6)

    def other() -> None:
        vm.fault_via(l4b)
        while time.monotonic() < stop:
            for va in others:
                try:
                    vm.read(va, 64)
                    counts["other"] += 1
                except PageFault:
                    counts["gone"] += 1
    t = threading.Thread(target=other)
    t.start()
    while time.monotonic() < stop:
        counts["main" if vm.read(addr, 6) == first else "bad"] += 1
    t.join()
    l4b.close()
    return counts
