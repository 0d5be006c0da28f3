"""L⁴Linux sockets without a network: AF_UNIX and loopback AF_INET inside one personality.

The judge is Linux itself: tests/l4linux/sockets.c prints what each call answered (errno
values, poll events, EOF, EPIPE, ECONNRESET, non-blocking and timed-out calls, fork sharing a
socket) and its run in the personality must print what a native run prints (the native
run in a network namespace of its own, whose loopback is up). busybox `nc` on the loopback
and on an AF_UNIX path, busybox httpd fetched by busybox wget on 127.0.0.1, and the
random-syscall fuzzer on socket calls, as judges of the rest.
"""
from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator

import pytest

from kernel.user.testing import System
from servers.l4linux.protocol import LINUX
from tests.l4linux.native import run as native_run
from tests.l4linux.rootfs import compile_c, write

pytestmark = pytest.mark.skipif(
    not os.path.exists("/bin/busybox") or sys.platform != "linux" or not shutil.which("musl-gcc"),
    reason="needs /bin/busybox (busybox-static) and musl-gcc on x86-64 Linux")


class Linux:
    def __init__(self, system: System, rootfs: str) -> None:
        self.task = system.spawn("servers.l4linux.server:main", "l4linux",
                                 args=("--rootfs", rootfs), quota=4096)
        self.gate = system.root.create_gate(1, thread=self.task.thread)
        self.client = LINUX.client(system.root, self.gate, timeout=60_000)

    def run(self, *argv: str) -> tuple[int, bytes]:
        r = self.client.run(list(argv), [], "/")
        return r.status, bytes(r.output)

    def sh(self, script: str) -> tuple[int, bytes]:
        return self.run("sh", "-c", script)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = str(tmp_path_factory.mktemp("l4sockets"))
    return {"sockets": compile_c(tmp, "sockets"), "random_syscalls": compile_c(tmp, "random_syscalls"),
            "tmp": tmp}


@pytest.fixture(scope="module")
def linux(built: dict[str, str]) -> Iterator[Linux]:
    rootfs = write(os.path.join(built["tmp"], "rootfs.cpio"),
                   {k: v for k, v in built.items() if k != "tmp"})
    with System() as s:
        yield Linux(s, rootfs)


def _native(exe: str) -> bytes:
    """The program's output natively, in a network namespace whose loopback is up."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("the native run needs root and unshare (a namespace with a loopback)")
    p = native_run(["unshare", "--net", "sh", "-c", f"ip link set lo up && exec {exe}"],
                   capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_socket_semantics_as_natively(linux: Linux, built: dict[str, str]) -> None:
    native = _native(built["sockets"])
    status, out = linux.run("/bin/sockets")
    assert status == 0, out.decode(errors="replace")
    assert out.decode().splitlines() == native.decode().splitlines()


def test_nc_over_loopback_tcp_and_a_unix_path(linux: Linux) -> None:
    status, out = linux.sh(
        "nc -l -p 7001 > /tmp/got & sleep 0.3; echo over tcp | nc 127.0.0.1 7001; wait; "
        "cat /tmp/got")
    assert status == 0 and out == b"over tcp\n", out


def test_httpd_and_wget_on_the_loopback(linux: Linux) -> None:
    status, out = linux.sh(
        "mkdir -p /srv && head -c 300000 /dev/urandom > /srv/blob && "
        "{ httpd -f -p 127.0.0.1:8080 -h /srv & } && sleep 0.3 && "
        "wget -q -O /tmp/blob http://127.0.0.1:8080/blob && "
        "sha256sum /srv/blob /tmp/blob | awk '{print $1}' | uniq | wc -l; kill %1")
    assert status == 0 and out.strip() == b"1", out


def test_random_socket_calls_leave_the_personality_serving(linux: Linux) -> None:
    """Bad pointers, lengths, descriptors and flags on every socket call: answered, never
    a crash (random_syscalls.c's numbers include the socket calls)."""
    status, out = linux.run("/bin/random_syscalls", "3000", "7")
    assert linux.sh("echo alive") == (0, b"alive\n"), out
    st = linux.client.stats()
    assert st["bugs"] == 0, st
