"""SIGUSR1 to a task writes every thread's Python stack to its log and the task runs on
(kernel/user/task.py): how `l4run bench rt` shows where a player that gave no result waits."""
from __future__ import annotations

import os
import signal
import tempfile

from kernel.abi import unpack
from kernel.user.testing import System, wait_for


def test_sigusr1_dumps_the_stacks_and_the_task_serves_on() -> None:
    with tempfile.TemporaryDirectory(prefix="l4py-stacks-") as tmp, System() as s:
        log_path = os.path.join(tmp, "server.log")
        with open(log_path, "wb") as log:
            srv = s.spawn("tests.kernel.tasks:echo_server", "echo", stderr=log)
        gate = s.root.create_gate(0x21, thread=srv.thread)
        assert unpack(s.root.call(gate, b"before").data)["data"] == b"before"   # in its loop
        srv.kill(signal.SIGUSR1)

        def dumped() -> bool:
            with open(log_path, errors="replace") as f:
                return "echo_server" in f.read()
        wait_for(dumped, what="the stack dump in the task's log")
        with open(log_path, errors="replace") as f:
            text = f.read()
        assert "thread 0x" in text.lower() and "reply_and_wait" in text, text
        assert srv.proc.poll() is None                                      # still running
        assert unpack(s.root.call(gate, b"after").data)["data"] == b"after"   # and serving
        assert s.root.call(gate, b"exit").data == b"bye"
        srv.wait()
