"""Task functions the kernel tests spawn as real processes (`System.spawn("tests.kernel.tasks:NAME")`).

Each runs as `FUNC(l4, *args)` inside its own OS process, connected to the kernel under test:

- `agent`: a remote-controlled task. The test calls its control gate (label `CTRL_LABEL`) with
  `[op, args, kwargs]`; the agent runs `l4.<op>(*args, **kwargs)` — a real system call made by
  a real task — and replies `{"ok": value}` or `{"err": code, "reason": text}`. Messages that
  arrive on its other gates while it sits in its control loop are kept in an inbox (op "inbox");
  capabilities they carry land in a receive window at INBOX_WINDOW (moving on by
  INBOX_WINDOW_SIZE slots after each message that brought some).
  Extra ops: "inbox", "sleep", "exit" (os._exit), "caps".
  An argument `{"zeros": n}` becomes `bytes(n)` inside the agent (for payloads bigger than the
  control message may carry).
- `echo_server`: the standard server loop (`reply_and_wait`); answers each call with what the
  kernel told it about the message (label, rights, proto, data, its own task name). Data
  b"noreply" makes it keep the caller waiting; b"exit" ends it.
- `pool_echo`: one OS thread serving all threads of its task at once (`MultiWait`): answers
  each call with the id of the thread that took it; b"hold" keeps that caller waiting (its
  thread stays busy) until some thread gets b"release", which answers the held callers too.
- `hold_then_die`: calls its "svc" gate with b"hold" (the test kills it while held).
- `sleeper`: holds its process open and never waits (a receiver that is never ready).
- `exit_with`: returns a status at once (a task that ends normally).
- `alien_worker`: makes two FACTORY_INFO calls (the test's handler allows one, denies the
  other) and exits with a status saying what it saw. `alien_orphan`: one call, which must be
  denied because no handler answers. Both make no system call before the file named by
  L4_TEST_GO exists, so the test can mark the thread alien first.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

from kernel.abi import pack, unpack
from kernel.user.client import L4, Message
from kernel.user.errors import Denied, L4Error

CTRL_LABEL = 0xC7_0001       # label of an agent's control gate (chosen by the test's root)
INBOX_WINDOW = 200           # capabilities arriving in the control loop land at 200, 204, …
INBOX_WINDOW_SIZE = 4

_AGENT_OPS = frozenset({
    "send", "call", "wait", "reply", "reply_and_wait", "cap_delete", "cap_revoke",
    "cap_inspect", "cap_derive", "destroy", "create_gate", "create_irq", "create_thread",
    "create_task", "factory_info", "bind_gate", "irq_attach", "irq_trigger", "irq_mask",
    "thread_control", "task_map", "task_watch", "kernel_info",
})


def msg_dict(msg: Message) -> dict[str, Any]:
    return {"label": msg.label, "rights": msg.rights, "reply": msg.reply, "proto": msg.proto,
            "items": msg.items, "data": msg.data}


def _plain(value: Any) -> Any:
    if isinstance(value, Message):
        return msg_dict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _arg(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"zeros"}:
        return bytes(int(value["zeros"]))
    return value


def _run_op(l4: L4, inbox: list[dict[str, Any]], op: str, args: list[Any],
            kw: dict[str, Any]) -> dict[str, Any]:
    args = [_arg(a) for a in args]
    kw = {k: _arg(v) for k, v in kw.items()}
    if "window" in kw and kw["window"] is not None:
        kw["window"] = tuple(kw["window"])
    if op == "inbox":
        out, inbox[:] = list(inbox), []
        return {"ok": out}
    if op == "sleep":
        time.sleep(float(args[0]))
        return {"ok": None}
    if op == "caps":
        return {"ok": dict(l4.caps)}
    if op == "exit":
        sys.stderr.flush()
        os._exit(int(args[0]) if args else 0)
    if op not in _AGENT_OPS:
        return {"err": -1, "reason": f"agent: unknown op {op!r}"}
    try:
        return {"ok": _plain(getattr(l4, op)(*args, **kw))}
    except L4Error as e:
        return {"err": int(e.err), "reason": e.reason}


def agent(l4: L4) -> int:
    inbox: list[dict[str, Any]] = []
    reply, answer = 0, b""
    window = INBOX_WINDOW
    while True:
        # reply_and_wait: once the test has the answer, the agent is already receiving again
        try:
            msg = l4.reply_and_wait(reply, answer, window=(window, INBOX_WINDOW_SIZE))
        except L4Error:
            reply = 0           # the reply could not be given; keep serving
            continue
        if msg.items:           # those slots are taken now: the next window starts after them
            window += INBOX_WINDOW_SIZE
        if msg.label != CTRL_LABEL or not msg.reply:
            inbox.append(msg_dict(msg))
            reply = 0
            continue
        op, args, kw = unpack(msg.data)
        reply, answer = msg.reply, pack(_run_op(l4, inbox, op, args, kw))


def echo_server(l4: L4) -> int:
    reply, out = 0, b""
    while True:
        msg = l4.reply_and_wait(reply, out)
        if msg.data == b"exit":
            if msg.reply:
                l4.reply(msg.reply, b"bye")
            return 0
        if msg.data == b"noreply":
            reply, out = 0, b""
            continue
        reply = msg.reply
        out = pack({"label": msg.label, "rights": msg.rights, "proto": msg.proto,
                    "data": msg.data, "server": l4.task_name})


def pool_echo(l4: L4) -> int:
    from kernel.user.client import MultiWait
    pool = MultiWait([l4, *l4.threads_from_env()])
    held: list[tuple[L4, int]] = []
    while True:
        got = pool.next()
        if got is None:
            continue
        t, msg = got
        if msg.data == b"hold":
            held.append((t, msg.reply))
            continue
        answer = [(t, msg.reply)]
        if msg.data == b"release":
            answer, held = held + answer, []
        for ht, reply in answer:
            pool.reply_and_wait(ht, reply, pack({"thread": ht.thread_id, "data": msg.data}))


def hold_then_die(l4: L4) -> int:
    l4.call(l4.caps["svc"], b"hold")      # killed by the test while held
    return 0


def sleeper(l4: L4) -> int:
    while True:
        time.sleep(3600)


def exit_with(l4: L4, status: str = "0") -> int:
    return int(status)


def _await_go() -> None:
    """Make no system call until the test has set us up (e.g. marked our thread alien)."""
    go = os.environ.get("L4_TEST_GO", "")
    while go and not os.path.exists(go):
        time.sleep(0.005)


def alien_worker(l4: L4) -> int:
    """Status 0: the first call was allowed and answered, the second was denied."""
    _await_go()
    try:
        info = l4.factory_info()
    except L4Error as e:
        print(f"alien_worker: first call failed: {e}", file=sys.stderr, flush=True)
        return 10
    if not isinstance(info, dict) or "limit" not in info:
        return 11
    try:
        l4.factory_info()
    except Denied:
        return 0
    except L4Error as e:
        print(f"alien_worker: second call failed wrongly: {e}", file=sys.stderr, flush=True)
        return 12
    return 13


def alien_orphan(l4: L4) -> int:
    """An alien thread whose handler gate leads nowhere. Status 0: its call was denied."""
    _await_go()
    try:
        l4.factory_info()
    except Denied:
        return 0
    except L4Error as e:
        print(f"alien_orphan: wrong error: {e}", file=sys.stderr, flush=True)
        return 1
    return 2
