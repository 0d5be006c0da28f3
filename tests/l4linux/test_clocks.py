"""L⁴Linux: time does not bypass the personality. libc reads the clock through the vDSO,
without a system call; the kernel makes the vDSO's clock functions trap at the first
trapped call after exec (docs/L4LINUX.md "Time"), so a glibc-static (and a musl-static)
program's clock_gettime, gettimeofday, time and clock_getres reach the personality,
counted by number — also in a fork child, which inherits the patched vDSO.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from kernel.user.testing import System

from .rootfs import HERE, compile_c, write
from .test_personality import Linux

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/busybox") or not shutil.which("gcc")
                                or not os.path.exists("/usr/lib/x86_64-linux-gnu/libc.a"),
                                reason="needs busybox-static and gcc with a static glibc")
N = 50                          # reads of each clock, in the process and in its child


def _rootfs(tmp: str) -> str:
    compilers = [("clocks-glibc", "gcc")] + ([("clocks-musl", "musl-gcc")]
                                             if shutil.which("musl-gcc") else [])
    return write(os.path.join(tmp, "rootfs.cpio"),
                 {name: compile_c(tmp, name, os.path.join(HERE, "clocks.c"), (cc, "-static", "-O2"))
                  for name, cc in compilers})


@pytest.fixture(scope="module")
def linux(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Linux]:
    tmp = str(tmp_path_factory.mktemp("clocks"))
    with System() as s:
        yield Linux(s, _rootfs(tmp))


def _counts(linux: Linux) -> dict[int, int]:
    return {int(k): v for k, v in linux.client.stats()["by_nr"].items()}


def _delta(before: dict[int, int], after: dict[int, int], nr: int) -> int:
    return after.get(nr, 0) - before.get(nr, 0)


def test_glibc_static_clock_calls_reach_the_personality(linux: Linux) -> None:
    before = _counts(linux)
    status, out = linux.run("/bin/clocks-glibc", str(N))
    after = _counts(linux)
    assert status == 0, out
    words = out.split()
    assert words[0] == b"time" and abs(int(words[1]) - time.time()) < 60, out
    assert words[2:] == [b"bad", b"0", b"child", b"0"], out
    # glibc: each of the four its own call, in the process and in the fork child
    assert _delta(before, after, 228) >= 2 * 2 * N       # clock_gettime
    assert _delta(before, after, 96) >= 2 * N            # gettimeofday
    assert _delta(before, after, 201) >= 2 * N           # time
    assert _delta(before, after, 229) >= 2 * N           # clock_getres


def test_musl_static_clock_calls_reach_the_personality(linux: Linux) -> None:
    if not shutil.which("musl-gcc"):
        pytest.skip("musl-gcc not installed")
    before = _counts(linux)
    status, out = linux.run("/bin/clocks-musl", str(N))
    after = _counts(linux)
    assert status == 0 and out.split()[2:] == [b"bad", b"0", b"child", b"0"], out
    # musl makes gettimeofday and time of clock_gettime
    assert _delta(before, after, 228) >= 2 * 4 * N
    assert _delta(before, after, 229) >= 2 * N


def test_a_native_run_reads_no_clock_through_the_host(tmp_path: str) -> None:
    """The check behind the test: natively, glibc makes no clock system call at all."""
    if not shutil.which("strace"):
        pytest.skip("strace not installed")
    exe = compile_c(str(tmp_path), "clocks", cc=("gcc", "-static", "-O2"))
    r = subprocess.run(["strace", "-f", "-e", "trace=clock_gettime,gettimeofday,time",
                        exe, "5"], capture_output=True, timeout=60)
    assert r.returncode == 0 and b"clock_gettime(" not in r.stderr, r.stderr[-500:]
