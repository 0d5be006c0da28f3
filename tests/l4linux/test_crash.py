"""A Linux process that crashes gets Linux semantics: its parent's wait (here the shell's
`$?`) says the signal that killed it, as natively (docs/L4LINUX.md "Crash statuses").

crash.c is compiled with musl-gcc and run under the personality and natively on the host,
each time by `sh -c './crash HOW; echo $?'`, and the two outputs compared.
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


@pytest.fixture(scope="module")
def crash(tmp_path_factory: pytest.TempPathFactory) -> str:
    return compile_c(str(tmp_path_factory.mktemp("crash")), "crash")


@pytest.fixture(scope="module")
def client(crash: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    rootfs = write(str(tmp_path_factory.mktemp("crashfs") / "rootfs.cpio"), {"crash": crash})
    with System() as s:
        task = s.spawn("servers.l4linux.server:main", "l4linux", args=("--rootfs", rootfs),
                       quota=4096)
        gate = s.root.create_gate(1, thread=task.thread)
        yield LINUX.client(s.root, gate, timeout=30_000)


@pytest.mark.parametrize("how, shell_status", [("segv", 139), ("abort", 134), ("fpe", 136)])
def test_crash_status_as_natively(client: object, crash: str, how: str,
                                  shell_status: int) -> None:
    script = f"{os.path.basename(crash)} {how} 2>/dev/null; echo $?"
    native = native_run(["/bin/busybox", "sh", "-c", "./" + script], capture_output=True,
                            timeout=30, cwd=os.path.dirname(crash))
    assert native.stdout == f"{shell_status}\n".encode(), native
    r = client.run(["sh", "-c", "/bin/" + script], [], "/")      # type: ignore[attr-defined]
    assert (r.status, bytes(r.output)) == (0, native.stdout)


@pytest.mark.parametrize("how", ["segv", "abort", "fpe", "usage"])
def test_a_fork_child_that_crashes_without_execve_as_natively(client: object, crash: str,
                                                              how: str) -> None:
    """The child's host parent is the Linux parent, not the personality: the kernel reads
    the status from the zombie the host keeps and puts it in the death notice."""
    native = native_run([crash, "fork", how], capture_output=True, timeout=30)
    assert b"child " in native.stdout, native
    r = client.run(["/bin/crash", "fork", how], [], "/")      # type: ignore[attr-defined]
    assert (r.status, bytes(r.output)) == (0, native.stdout)


def test_the_crashed_program_run_alone_says_its_signal(client: object) -> None:
    """Run by the personality itself (no shell): `linux run`'s status is 128 + the signal."""
    r = client.run(["/bin/crash", "segv"], [], "/")      # type: ignore[attr-defined]
    assert r.status == 128 + 11
    r = client.run(["/bin/crash", "usage"], [], "/")     # type: ignore[attr-defined]
    assert (r.status, bytes(r.output)) == (2, b"usage: crash segv|abort|fpe\n")
