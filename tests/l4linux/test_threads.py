"""L⁴Linux: threads (CLONE_THREAD) of one Linux process. Each thread's trapped calls reach
the personality with its own tid; a call one thread waits in (a read of an empty pipe,
nanosleep) is held for that thread only while the others go on; futexes stay native
(mutexes, condition variables, join); exit ends a thread, exit_group the process; a
signal to one thread interrupts that thread's call (docs/L4LINUX.md "Threads"). threads.c, built with musl-gcc and with glibc (gcc -static),
is run under the personality and natively: same output, same status.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from kernel.user.testing import System

from .rootfs import HERE, compile_c, write
from .test_personality import Linux
from tests.l4linux.native import run as native_run

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/busybox") or not shutil.which("musl-gcc"),
                                reason="needs busybox-static and musl-gcc")
COMPILERS = {"musl": ["musl-gcc", "-static", "-O2"],
             "glibc": ["gcc", "-static", "-O2", "-pthread"]}


def _built(tmp: str) -> dict[str, str]:
    out = {}
    for libc, cc in COMPILERS.items():
        if not shutil.which(cc[0]) or (libc == "glibc" and not os.path.exists(
                "/usr/lib/x86_64-linux-gnu/libc.a")):
            continue
        out[libc] = compile_c(tmp, f"threads-{libc}", os.path.join(HERE, "threads.c"), cc)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Linux, dict[str, str]]]:
    tmp = str(tmp_path_factory.mktemp("threads"))
    exes = _built(tmp)
    path = write(os.path.join(tmp, "rootfs.cpio"),
                 {os.path.basename(exe): exe for exe in exes.values()})
    with System() as s:
        yield Linux(s, path), exes


@pytest.mark.parametrize("libc", list(COMPILERS))
@pytest.mark.parametrize("mode", ["", "group-exit", "leader-exits", "thread-signal",
                                  "process-signal"])
def test_threads_as_natively(built: tuple[Linux, dict[str, str]], libc: str,
                             mode: str) -> None:
    linux, exes = built
    if libc not in exes:
        pytest.skip(f"no {libc} to build with")
    args = [mode] if mode else []
    native = native_run([exes[libc], *args], capture_output=True, timeout=60)
    if not mode:
        assert native.stdout.endswith(b"joined 406 tids distinct 1 main tid is pid 1\n")
    if mode == "thread-signal":
        assert native.stdout == (b"reader: read -1 EINTR, handler ran in the reader\n"
                                 b"main: nanosleep 0, handler ran not in main\n"), native
    if mode == "process-signal":
        assert native.stdout == (b"reader: read -1 EINTR, handler ran in the reader\n"
                                 b"main: kill(getpid()) taken by the reader\n"), native
    got = linux.run(f"/bin/threads-{libc}", *args)
    assert got == (native.returncode, native.stdout)
    assert linux.client.stats()["bugs"] == 0
    assert not any(p["comm"].startswith("threads") for p in linux.client.ps())
