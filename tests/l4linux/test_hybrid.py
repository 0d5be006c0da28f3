"""L⁴Linux: hybrid processes (paper §4.1; docs/L4LINUX.md "Hybrid processes").

A static C program (hybrid.c, built with musl-gcc against servers/l4linux/include/l4py.h)
makes L4 calls through the personality's reserved system-call numbers: it calls the hello
server with a capability the personality's policy grants it, and serves a gate that a
native L4 task (root, here) calls. While it is inside an L4 call it is in state D in /proc
and in busybox `ps`, and other Linux processes keep running. A program without the grant
gets -EPERM and goes on; a hybrid process killed inside an L4 call leaves its partner a
PEER_DIED.
"""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from kernel.abi import Rights
from kernel.user.errors import PeerDied
from kernel.user.testing import PROJECT_ROOT, System, wait_for
from servers.l4linux.protocol import LINUX
from tests.l4linux.rootfs import compile_c, write

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/busybox") or not shutil.which("musl-gcc"),
                                reason="needs busybox-static and musl-gcc")
INCLUDE = os.path.join(PROJECT_ROOT, "servers", "l4linux", "include")
SINK_LABEL, SVC_LABEL, HOLD_LABEL = 5, 9, 11
GRANT = "/bin/hybrid=hello,sink,svc,hold"
DOC = os.path.join(PROJECT_ROOT, "docs", "L4LINUX.md")


def doc_example() -> str:
    """The example program of docs/L4LINUX.md "Hybrid processes" (its C block)."""
    with open(DOC) as f:
        text = f.read()
    section = text[text.index("## Hybrid processes"):]
    section = section[section.index("### Example"):]
    start = section.index("```c\n") + 5
    return section[start:section.index("```", start)]


class Hybrid:
    """A kernel, the hello server, and a personality whose policy grants /bin/hybrid the
    capabilities hello (the hello server's gate), sink (a gate root receives on, never
    answering in time) and svc (a gate the program serves); /bin/nohybrid is the same
    binary with no grant."""

    def __init__(self, s: System, rootfs: str) -> None:
        self.system, root = s, s.root
        hello = s.spawn("servers.hello.server:serve", "hello")
        self.hello_gate = root.create_gate(1, thread=hello.thread)
        self.sink = s.gate(SINK_LABEL)
        self.svc = s.gate(SVC_LABEL)
        self.hold = s.gate(HOLD_LABEL)
        mapped = int(Rights.INVOKE | Rights.GRANT)
        self.task = s.spawn("servers.l4linux.server:main", "l4linux",
                            args=("--rootfs", rootfs, "--hybrid", GRANT,
                                  "--hybrid", "/bin/greet=hello"), quota=4096,
                            caps={"hello": (self.hello_gate, mapped), "sink": (self.sink, mapped),
                                  "svc": (self.svc, int(Rights.ALL)),
                                  "hold": (self.hold, int(Rights.ALL))})
        self.gate = root.create_gate(1, thread=self.task.thread)
        self.client = LINUX.client(root, self.gate, timeout=30_000)

    def run(self, *argv: str) -> tuple[int, bytes]:
        r = self.client.run(list(argv), [], "/")
        return r.status, bytes(r.output)

    def sh(self, script: str) -> tuple[int, bytes]:
        return self.run("sh", "-c", script)

    def pid_of(self, arg: str) -> int:
        """The pid of the (one) running `hybrid ... ARG ...`, once there is one."""
        found: list[int] = []

        def look() -> bool:
            found[:] = [p["pid"] for p in self.client.ps()
                        if p["comm"] == "hybrid" and arg in p["argv"]]
            return bool(found)
        wait_for(look, 20, f"hybrid {arg} to run")
        return found[0]

    def state(self, pid: int) -> str:
        """The state letter in /proc/PID/stat, read by a Linux process (cat)."""
        status, out = self.run("cat", f"/proc/{pid}/stat")
        assert status == 0, out
        return out.split(b") ", 1)[1].split()[0].decode()


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hybrid]:
    tmp = str(tmp_path_factory.mktemp("hybrid"))
    flags = ("-Wall", "-I", INCLUDE)
    exe = compile_c(tmp, "hybrid", extra=flags)
    greet_c = os.path.join(tmp, "greet.c")
    with open(greet_c, "w") as f:
        f.write(doc_example())
    greet = compile_c(tmp, "greet", greet_c, extra=flags)
    path = write(os.path.join(tmp, "rootfs.cpio"), {"hybrid": exe, "nohybrid": exe, "greet": greet})
    with System() as s:
        yield Hybrid(s, path)


def test_a_hybrid_program_calls_the_hello_server(hybrid: Hybrid) -> None:
    status, out = hybrid.run("/bin/hybrid", "call", "hello", "linux")
    assert status == 0, out
    assert re.fullmatch(rb"answer: hello, linux \(#\d+, label 1\)\n", out), out
    # from a fork child of a shell too: the grant goes with the program, the capability
    # is mapped into the child's own task
    status, out = hybrid.sh("/bin/hybrid call hello again; echo status $?")
    assert re.fullmatch(rb"answer: hello, again \(#\d+, label 1\)\nstatus 0\n", out), out
    assert hybrid.client.stats()["bugs"] == 0


def test_the_documented_example_calls_hello(hybrid: Hybrid) -> None:
    status, out = hybrid.run("/bin/greet", "docs")
    assert status == 0, out
    assert re.fullmatch(rb"hello, docs \(#\d+, label 1\)\n", out), out


def test_a_hybrid_program_serves_a_gate_a_native_task_calls(hybrid: Hybrid) -> None:
    root = hybrid.system.root
    assert hybrid.sh("/bin/hybrid serve svc 3 >/dev/null 2>&1 & sleep 1") == (0, b"")
    pid = hybrid.pid_of("serve")
    wait_for(lambda: hybrid.state(pid) == "D", 20, "the server to wait in its L4 call")
    for i in range(3):
        msg = root.call(hybrid.svc, f"request {i}".encode(), proto=7, rcv_timeout=20_000)
        assert msg.data == f"served request {i} (label {SVC_LABEL}, proto 7)".encode()
    wait_for(lambda: all(p["pid"] != pid for p in hybrid.client.ps()), 20, "the server to end")


def test_inside_an_l4_call_the_process_is_uninterruptible_and_others_run(hybrid: Hybrid) -> None:
    root = hybrid.system.root
    assert hybrid.sh("/bin/hybrid call sink waiting >/tmp/sink.out 2>&1 & sleep 1") == (0, b"")
    pid = hybrid.pid_of("sink")
    msg = root.wait(timeout=20_000)                     # root is the partner: it holds the call
    assert msg.label == SINK_LABEL and msg.reply
    assert hybrid.state(pid) == "D"
    status, out = hybrid.run("cat", f"/proc/{pid}/status")
    assert b"State:\tD" in out, out
    status, out = hybrid.run("ps", "-o", "pid,stat,comm")
    assert re.search(rf"^ *{pid} D\w* +hybrid$", out.decode(), re.M), out   # STAT DW
    # another Linux process runs meanwhile: a loop, a pipeline, a fork
    assert hybrid.sh("i=0; while [ $i -lt 200 ]; do i=$((i+1)); done; echo $i | cat") == (
        0, b"200\n")
    assert [p["state"] for p in hybrid.client.ps() if p["pid"] == pid] == ["uninterruptible"]
    # the call completes: the process is runnable again, and prints what it got
    root.reply(msg.reply, b"\x92\x00\xa4done", proto=0x484C)
    wait_for(lambda: all(p["pid"] != pid for p in hybrid.client.ps()), 20, "it to end")
    assert hybrid.run("cat", "/tmp/sink.out") == (0, b"answer: done\n")


def test_without_the_capability_an_error_and_the_process_goes_on(hybrid: Hybrid) -> None:
    status, out = hybrid.run("/bin/hybrid", "nocap", "nothing")
    assert status == 0, out
    lines = out.decode().splitlines()
    assert lines[0] == "l4_cap nothing: -1 Operation not permitted"
    assert lines[1].startswith("l4_call 64: ")   # handle 64 is "hello": granted to /bin/hybrid
    # the same binary at another path has no grant at all
    status, out = hybrid.run("/bin/nohybrid", "nocap", "hello")
    assert status == 0, out
    assert out.decode().splitlines()[:3] == ["l4_cap hello: -1 Operation not permitted",
                                             "l4_call 64: -1 Operation not permitted",
                                             "l4_reply: -1 Operation not permitted"]
    assert b"still running" in out
    status, out = hybrid.run("/bin/nohybrid", "call", "hello", "x")
    assert (status, out) == (1, b"l4_cap hello: Operation not permitted\n")
    assert hybrid.client.stats()["bugs"] == 0


def test_a_timeout_ends_the_call_and_the_process_runs_again(hybrid: Hybrid) -> None:
    # root does not receive on sink now: the call's send times out (musl: "Operation")
    assert hybrid.sh("/bin/hybrid call sink nobody 300; echo status $?") == (
        0, b"l4_call: Operation timed out (L4 error 3)\nstatus 2\n")


def test_killed_inside_an_l4_call_its_partner_gets_peer_died(hybrid: Hybrid) -> None:
    root = hybrid.system.root
    assert hybrid.sh("/bin/hybrid call sink doomed >/dev/null 2>&1 & sleep 1") == (0, b"")
    pid = hybrid.pid_of("sink")
    msg = root.wait(timeout=20_000)
    assert msg.label == SINK_LABEL and msg.reply
    assert hybrid.state(pid) == "D"
    assert hybrid.sh(f"kill -9 {pid}") == (0, b"")
    wait_for(lambda: all(p["pid"] != pid for p in hybrid.client.ps()), 20, "it to die")
    with pytest.raises(PeerDied):
        root.reply(msg.reply, b"\x92\x00\xa4late", proto=0x484C)
    # and the personality still serves hybrid calls
    status, out = hybrid.run("/bin/hybrid", "call", "hello", "after")
    assert status == 0 and out.startswith(b"answer: hello, after"), out


def test_a_native_caller_of_a_killed_hybrid_server_gets_peer_died(hybrid: Hybrid) -> None:
    root = hybrid.system.root
    assert hybrid.sh("/bin/hybrid serve svc 5 >/dev/null 2>&1 & sleep 1") == (0, b"")
    pid = hybrid.pid_of("serve")
    wait_for(lambda: hybrid.state(pid) == "D", 20, "the server to wait in its L4 call")
    assert hybrid.sh(f"kill -9 {pid}") == (0, b"")
    wait_for(lambda: all(p["pid"] != pid for p in hybrid.client.ps()), 20, "it to die")
    with pytest.raises(PeerDied):
        root.call(hybrid.svc, b"anyone?", proto=7, rcv_timeout=20_000)


def _errors(root: Any, task: str) -> int:
    return next(t["stats"]["errors"] for t in root.kernel_info()["tasks"] if t["name"] == task)


def test_killed_holding_a_native_callers_call_both_partners_get_peer_died(
        hybrid: Hybrid) -> None:
    """The hybrid server receives a native task's call and, before answering it, makes an
    L4 call of its own (to root): killed there, the native caller's call and root's reply
    both end with PEER_DIED."""
    root, s = hybrid.system.root, hybrid.system
    assert hybrid.sh("/bin/hybrid hold hold sink >/dev/null 2>&1 & sleep 1") == (0, b"")
    pid = hybrid.pid_of("hold")
    wait_for(lambda: hybrid.state(pid) == "D", 20, "it to wait on its gate")
    caller = s.spawn("servers.hello.client:run", "caller", args=("native", "50"),
                     caps={"hello": (hybrid.hold, int(Rights.INVOKE))})
    msg = root.wait(timeout=20_000)                     # its own call, holding the caller's
    assert msg.label == SINK_LABEL and msg.data == b"held"
    assert hybrid.state(pid) == "D"
    assert _errors(root, "caller") == 0             # its call waits in the hybrid server
    assert hybrid.sh(f"kill -9 {pid}") == (0, b"")
    wait_for(lambda: _errors(root, "caller") > 0, 20, "the caller's call to end in an error")
    assert root.kernel_info()["errors"].get("PEER_DIED", 0) > 0
    with pytest.raises(PeerDied):
        root.reply(msg.reply, b"too late")
    caller.kill()
    caller.wait()


def test_an_image_grants_capabilities_to_programs() -> None:
    """`[linux]` `l4caps` are the personality's capabilities (as a task's caps), `hybrid`
    the programs' grants (`--hybrid`); a name that is not one of l4caps is a mistake."""
    import tomllib

    from launcher.image import ImageError, parse_image
    src = """
[system]
name = "t"
[[task]]
name = "hello"
run = "servers.hello.server:serve"
provides = ["hello"]
[linux]
l4caps = { hello = "hello" }
hybrid = { "/bin/greet" = ["hello"] }
"""
    image = parse_image(tomllib.loads(src), "t.toml")
    task = next(t for t in image.tasks if t.name == "linux")
    assert task.args[:2] == ["--hybrid", "/bin/greet=hello"]
    assert [(c.local, c.service) for c in task.caps] == [("hello", "hello")]
    with pytest.raises(ImageError, match=r"linux\.hybrid\./bin/greet: every name must be one "
                                         r"of linux\.l4caps"):
        parse_image(tomllib.loads(src.replace('"/bin/greet" = ["hello"]',
                                              '"/bin/greet" = ["nope"]')), "t.toml")
