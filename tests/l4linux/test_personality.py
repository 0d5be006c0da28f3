"""L⁴Linux: unmodified static Linux binaries as L4 tasks, their system calls served by the
personality through exception IPC delivered by the kernel (docs/L4LINUX.md).

One personality (servers/l4linux) for the module, spawned by `kernel.user.testing.System`,
booted from an initramfs built here: busybox with its applet links, plus a static C probe
compiled with musl-gcc. The launcher's sandboxed path (configs/linux.toml, `l4run linux
run`) has its own test at the end.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kernel.abi import SLOT_TASK
from kernel.user.errors import InvalidArgument, NoCapability
from kernel.user.testing import PROJECT_ROOT, System, wait_for
from servers.l4linux.protocol import LINUX
from tests.l4linux.native import run as native_run
from tests.l4linux.rootfs import compile_c, write

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/busybox") or sys.platform != "linux",
                                reason="needs /bin/busybox (busybox-static) on x86-64 Linux")

PROBE_C = r"""
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
    long r = syscall(1000, 1, 2, 3);
    printf("r=%ld errno=%d pid=%d\n", r, errno, (int)getpid());
    return errno == ENOSYS ? 0 : 1;
}
"""


def _rootfs(tmp: str) -> str:
    programs = {}
    if shutil.which("musl-gcc"):
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(PROBE_C)
        programs["probe"] = compile_c(tmp, "probe", src)
        for name in ("random_syscalls", "waits", "signals", "mmaps", "stops"):
            programs[name] = compile_c(tmp, name)
    return write(os.path.join(tmp, "rootfs.cpio"), programs)


class Linux:
    def __init__(self, system: System, rootfs: str) -> None:
        self.system = system
        self.task = system.spawn("servers.l4linux.server:main", "l4linux",
                                 args=("--rootfs", rootfs), quota=4096)
        self.gate = system.root.create_gate(1, thread=self.task.thread)
        self.client = LINUX.client(system.root, self.gate, timeout=30_000)

    def run(self, *argv: str, cwd: str = "/") -> tuple[int, bytes]:
        r = self.client.run(list(argv), [], cwd)
        return r.status, bytes(r.output)

    def sh(self, script: str) -> tuple[int, bytes]:
        return self.run("sh", "-c", script)


@pytest.fixture(scope="module")
def linux(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Linux]:
    tmp = str(tmp_path_factory.mktemp("l4linux"))
    with System() as s:
        yield Linux(s, _rootfs(tmp))


def test_a_system_call_reaches_the_personality_as_exception_ipc(linux: Linux) -> None:
    before = linux.system.root.kernel_info()["stats"]
    assert linux.run("echo", "hi") == (0, b"hi\n")
    after = linux.system.root.kernel_info()["stats"]
    # execveat of the loader, write, exit_group at least; each one a counted kernel IPC
    assert after["linux_syscalls"] - before["linux_syscalls"] >= 3
    assert after["ipc"] - before["ipc"] >= after["linux_syscalls"] - before["linux_syscalls"]
    assert after["handled"]["LINUX_MEM_READ"] > before["handled"].get("LINUX_MEM_READ", 0)
    assert after["linux_answers"] <= after["linux_syscalls"]


def test_shell_pipeline_output_and_exit_status(linux: Linux) -> None:
    assert linux.sh("echo a | cat; exit 3") == (3, b"a\n")


def test_ls_bin_lists_the_initramfs(linux: Linux) -> None:
    status, out = linux.run("ls", "/bin")
    names = out.split()
    assert status == 0 and b"busybox" in names and b"sh" in names and b"ls" in names


def test_fork_and_wait_status(linux: Linux) -> None:
    assert linux.sh("(exit 7); echo $?; sh -c 'exit 5'; echo $?") == (0, b"7\n5\n")
    assert linux.sh("true & wait $!; echo waited $?") == (0, b"waited 0\n")


def test_a_background_job_outlives_its_shell(linux: Linux) -> None:
    """`sh -c 'job &'`: the shell exits at once; the job's first call comes after that and
    must still find its parent (the shell's exit waits for it, as every call after a fork
    does), so the job runs on as an orphan."""
    assert linux.sh("(sleep 0.3; echo late > /tmp/bg) &") == (0, b"")
    deadline = time.monotonic() + 20
    while linux.sh("cat /tmp/bg 2>/dev/null") != (0, b"late\n"):
        assert time.monotonic() < deadline, "the background job never ran"
        time.sleep(0.1)


def test_proc_and_ps(linux: Linux) -> None:
    # (the child is `sh` until it has exec'd sleep: wait for that, a loaded host may take a
    # while)
    status, out = linux.sh("sleep 5 & i=0; while read c < /proc/$!/comm && [ $c != sleep ] "
                           "&& [ $i -lt 5000 ]; do i=$((i+1)); done; ps -o pid,comm; "
                           "readlink /proc/self >/dev/null && head -1 /proc/meminfo; kill $!")
    assert status == 0, out
    lines = out.decode().splitlines()
    assert lines[0].split() == ["PID", "COMMAND"]
    assert any(line.split()[1:] == ["sleep"] for line in lines[1:-1]), lines
    assert lines[-1].startswith("MemTotal:")


def test_unknown_system_call_is_enosys(linux: Linux) -> None:
    if not shutil.which("musl-gcc"):
        pytest.skip("musl-gcc not installed")
    status, out = linux.run("/bin/probe")
    assert status == 0, out
    assert out.startswith(b"r=-1 errno=38 pid=")


def test_select_poll_waitid_statx_as_natively(linux: Linux, tmp_path: Any) -> None:
    if not shutil.which("musl-gcc"):
        pytest.skip("musl-gcc not installed")
    exe = compile_c(str(tmp_path), "waits")
    native = native_run([exe], capture_output=True, timeout=30)
    assert linux.run("/bin/waits") == (native.returncode, native.stdout)


def test_file_backed_mmap_as_natively(linux: Linux, tmp_path: Any) -> None:
    """mmaps.c: MAP_PRIVATE maps of a RAM-fs file (the host maps a memfd the kernel put at
    the program's descriptor number), copy-on-write, offsets, /dev/zero, Linux's errors."""
    if not shutil.which("musl-gcc"):
        pytest.skip("musl-gcc not installed")
    exe = compile_c(str(tmp_path), "mmaps")
    native = native_run([exe], capture_output=True, timeout=30, cwd=tmp_path)
    assert native.returncode == 0 and b"mapping X file a" in native.stdout, native
    assert linux.run("/bin/mmaps", cwd="/tmp") == (0, native.stdout)


def test_job_control_stops_as_natively(linux: Linux, tmp_path: Any) -> None:
    """stops.c: SIGSTOP, SIGTSTP and SIGCONT of a child, reported by wait4 and waitid."""
    if not shutil.which("musl-gcc"):
        pytest.skip("musl-gcc not installed")
    exe = compile_c(str(tmp_path), "stops")
    native = native_run([exe], capture_output=True, timeout=30)
    assert native.returncode == 0 and b"wait4: stopped by 19\n" in native.stdout, native
    assert linux.run("/bin/stops") == (0, native.stdout)


def test_signals_as_natively(linux: Linux, tmp_path: Any) -> None:
    """Handled signals (signals.c): calls Linux never fails with EINTR do not fail while
    SIGCHLD arrives all the time, even without SA_RESTART (a trapped call the signal
    reaches before the kernel took it is made again); a waiting read ends in EINTR
    without SA_RESTART and is made again with it; nanosleep ends in EINTR with the rest."""
    if not shutil.which("musl-gcc"):
        pytest.skip("musl-gcc not installed")
    exe = compile_c(str(tmp_path), "signals")
    native = native_run([exe], capture_output=True, timeout=30)
    assert native.stdout.startswith(b"sigchld: children left 0, calls failed 0\n"), native
    assert linux.run("/bin/signals") == (native.returncode, native.stdout)


def test_stat_top_and_proc_fd(linux: Linux) -> None:
    status, out = linux.sh("stat -c '%s %a %F %h' /bin/busybox /bin; top -n1 -b | head -1; "
                           "ls /proc/self/fd; readlink /proc/self/fd/3 3</etc/motd")
    assert status == 0, out
    lines = out.decode().splitlines()
    assert lines[0] == f"{os.path.getsize('/bin/busybox')} 755 regular file 1", lines
    assert lines[1].split()[1:3] == ["755", "directory"]
    assert lines[2].startswith("Mem:"), lines
    assert lines[3:6] == ["0", "1", "2"] and lines[-1] == "/etc/motd", lines


def test_random_system_calls_leave_the_personality_serving(linux: Linux) -> None:
    if not shutil.which("musl-gcc"):
        pytest.skip("musl-gcc not installed")
    for seed in ("1", "2"):
        status, out = linux.run("/bin/random_syscalls", seed)
        assert status == 0 and out.startswith(b"survived "), out[-200:]
    assert linux.run("echo", "still serving") == (0, b"still serving\n")
    assert linux.client.stats()["bugs"] == 0


def test_memory_is_refused_without_a_capability(linux: Linux) -> None:
    root = linux.system.root
    with pytest.raises(NoCapability):
        root.linux_mem_read(999, 0x400000, 8)              # no capability in that slot
    with pytest.raises(InvalidArgument):
        root.linux_mem_read(SLOT_TASK, 0x400000, 8)        # a task, but no Linux process
    with pytest.raises(InvalidArgument):
        root.linux_mem_read(SLOT_TASK, 1 << 47, 8)         # not a user address: EFAULT
    gate = linux.system.gate()
    try:
        with pytest.raises(InvalidArgument):
            root.linux_attach(SLOT_TASK, gate, os.getpid(), 4)   # not a child of ours
    finally:
        root.destroy(gate)


def test_a_waiting_process_does_not_block_others(linux: Linux) -> None:
    """`sleep` waits (its nanosleep, and its parent's pipe read, are answered later); the
    personality serves another command meanwhile."""
    other = linux.system.root.spawn_thread()
    slow: dict[str, Any] = {}

    def run_slow() -> None:
        r = LINUX.client(other, linux.gate, timeout=30_000).run(
            ["sh", "-c", "(sleep 2; echo late) | cat"], [], "/")
        slow["r"] = (r.status, bytes(r.output), time.monotonic())

    t = threading.Thread(target=run_slow)
    t.start()
    try:
        time.sleep(0.5)
        assert linux.run("echo", "quick") == (0, b"quick\n")
        quick_done = time.monotonic()
        t.join(20)
        assert slow["r"][:2] == (0, b"late\n") and slow["r"][2] > quick_done
    finally:
        t.join(20)
        other.close()


DIFFERENTIAL = [
    "echo hello world",
    "printf '%s\\n' c a b | sort",
    "for i in 1 2 3; do echo n$i; done | tail -n 2",
    "x=$(echo sub); echo \"[$x]\"",
    "echo abc | wc -c",
    "false || echo no; true && echo yes",
    "(exit 4); echo $?",
    "echo x | sed s/x/y/",
    "mkdir -p d/e && ls d && rmdir d/e d && echo gone",
    "echo foo > f; echo bar >> f; cat f; rm f",
    "ln -s target l; readlink l; rm l",
    "cat <<EOF\nhere $((1 + 2))\nEOF",
    "echo one two three | awk '{print $2}'",
    "test -d /bin && echo dir",
    "a=1; if [ $a -eq 1 ]; then echo eq; fi; exit 2",
    "seq 1 5 | head -n 3",
    "echo a:b:c | cut -d: -f2",
    "echo hello | tr a-z A-Z",
    "printf 'a\\na\\nb\\n' | uniq -c",
    "basename /a/b/c.txt .txt; dirname /a/b/c",
    "expr 3 + 4",
    "echo abc | md5sum",
    "echo abc | sha256sum",
    "mkdir -p x/y; touch x/y/z; find x | sort; rm -r x",
    "dd if=/dev/zero bs=512 count=4 2>/dev/null | wc -c",
    "echo data > f; tar cf a.tar f && rm f && tar xf a.tar && cat f; rm -f f a.tar",
    "echo data | gzip | gunzip",
    "echo 1 2 3 | xargs -n1 echo x",
    "env -i A=1 env",
    "trap 'echo trapped' EXIT; echo body",
    "sleep 0.1 & kill $! 2>/dev/null; wait $! 2>/dev/null; echo $?",
    "echo $((7*6))",
    "yes | head -n 2",
    "printf '%05d\\n' 42",
    "sort -n <<EOF\n10\n9\n100\nEOF",
    "f() { echo in f $1; }; f arg",
    "case abc in a*) echo A;; esac",
    "read x <<EOF\nval\nEOF\necho $x",
    "od -c <<EOF\nab\nEOF",
    "test -e /nonexistent || echo missing",
    "echo p > p; cp p q; cmp p q && echo same; rm p q",
    "touch a; mv a b; ls b; rm b",
    "echo xy > g; truncate -s 1 g; cat g; echo; rm g",
    "rev <<EOF\nabc\nEOF",
    "head -c 5 /dev/urandom | wc -c",
    "echo $(echo $(echo nested))",
    "i=0; while [ $i -lt 3 ]; do i=$((i+1)); done; echo $i",
]


@pytest.mark.parametrize("script", DIFFERENTIAL, ids=range(len(DIFFERENTIAL)))
def test_differential_against_native_busybox(linux: Linux, script: str, tmp_path: Any) -> None:
    native = native_run(["/bin/busybox", "sh", "-c", script], cwd=tmp_path,
                            capture_output=True, timeout=30)
    got = linux.run("sh", "-c", script, cwd="/tmp")
    assert got == (native.returncode, native.stdout), script


def test_personality_killed_ends_its_linux_processes(tmp_path: Any) -> None:
    with System() as s:
        lx = Linux(s, _rootfs(str(tmp_path)))
        other = s.root.spawn_thread()
        try:
            t = threading.Thread(target=lambda: _ignore(
                lambda: LINUX.client(other, lx.gate, timeout=10_000).run(
                    ["sleep", "30"], [], "/")), daemon=True)
            t.start()
            wait_for(lambda: any(p["comm"] == "sleep" for p in lx.client.ps()), 10,
                     "sleep to run")
            pid = next(p["pid"] for p in lx.client.ps() if p["comm"] == "sleep")
            assert os.path.exists(f"/proc/{pid}")
            lx.task.kill(signal.SIGKILL)
            wait_for(lambda: not _running(pid), 10, "the Linux process to end")
            t.join(15)
        finally:
            other.close()


def _ignore(fn: Any) -> None:
    try:
        fn()
    except Exception:
        pass


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


L4RUN = [sys.executable, "-m", "launcher"]


def _door(rd: str) -> str:
    return os.path.join(rd, "scratch", "linux", "linux.sock")


@contextlib.contextmanager
def _linux_image(tmp_path: Any, **env: str) -> Iterator[tuple[str, dict[str, str]]]:
    """configs/linux.toml booted by the launcher (detached), from the moment its
    personality's door is up (its run directory and the environment for `l4run`); down
    after (a loaded machine may take more than down's default 15 s)."""
    rd = str(tmp_path / "run")
    penv = {**os.environ, "PYTHONPATH": PROJECT_ROOT, **env}
    subprocess.run([*L4RUN, "boot", os.path.join(PROJECT_ROOT, "configs", "linux.toml"),
                    "--detach", "--run-dir", rd], check=True, env=penv, cwd=PROJECT_ROOT,
                   capture_output=True, timeout=60)
    try:
        wait_for(lambda: os.path.exists(_door(rd)), 30, "the personality's door")
        yield rd, penv
    finally:
        subprocess.run([*L4RUN, "down", "--timeout", "50", "--run-dir", rd], env=penv,
                       cwd=PROJECT_ROOT, capture_output=True, timeout=60)


def test_launcher_boots_the_personality_and_linux_run_works(tmp_path: Any) -> None:
    l4run = L4RUN
    with _linux_image(tmp_path) as (rd, env):
        door = _door(rd)
        r = subprocess.run([*l4run, "linux", "run", "--run-dir", rd, "--", "sh", "-c",
                            "echo sandboxed | cat; uname -s; exit 6"], env=env,
                           cwd=PROJECT_ROOT, capture_output=True, timeout=60)
        assert (r.returncode, r.stdout) == (6, b"sandboxed\nLinux\n"), r.stderr
        # Killed, the personality takes its Linux processes with it, is restarted by its
        # policy and boots its init again.
        bg = subprocess.Popen([*l4run, "linux", "run", "--run-dir", rd, "--", "sleep", "30"],
                              env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        try:
            def procs() -> list[dict[str, Any]]:
                out = subprocess.run([*l4run, "linux", "ps", "--json", "--run-dir", rd],
                                     env=env, cwd=PROJECT_ROOT, capture_output=True, timeout=30)
                return json.loads(out.stdout) if out.returncode == 0 else []
            wait_for(lambda: any(p["comm"] == "sleep" for p in procs()), 20, "sleep to run")
            sleeper = next(p["pid"] for p in procs() if p["comm"] == "sleep")
            ps = json.loads(subprocess.run([*l4run, "ps", "--json", "--run-dir", rd], env=env,
                                           cwd=PROJECT_ROOT, capture_output=True,
                                           timeout=30).stdout)
            # `l4run ps` lists the Linux process under its personality
            assert any(t["name"].startswith(f"linux:{sleeper}") and t["under"] == "linux"
                       for t in ps), ps
            # The sandboxed personality (no `network`) is in a network namespace of its own:
            # the host UDP and netlink sockets its filter lets through reach nothing
            pers = next(t["pid"] for t in ps if t["name"] == "linux")
            assert os.readlink(f"/proc/{pers}/ns/net") != os.readlink("/proc/self/ns/net")
            assert os.readlink(f"/proc/{sleeper}/ns/net") == os.readlink(f"/proc/{pers}/ns/net")
            os.kill(pers, signal.SIGKILL)
            wait_for(lambda: not _running(sleeper), 10, "the Linux process to end with it")
            log = os.path.join(rd, "logs", "linux.log")
            wait_for(lambda: open(log).read().count("init (pid") >= 2, 30, "init booted again")
            wait_for(lambda: os.path.exists(door), 30, "the door again")
            again = subprocess.run([*l4run, "linux", "run", "--run-dir", rd, "--", "echo", "back"],
                                   env=env, cwd=PROJECT_ROOT, capture_output=True, timeout=60)
            assert (again.returncode, again.stdout) == (0, b"back\n"), again.stderr
        finally:
            bg.kill()
            bg.wait()


class _Pty:
    """`l4run console` on a pseudo-terminal: what it shows, what we type."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        import pty
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(PROJECT_ROOT)
            os.execvpe(argv[0], argv, env)
        self.seen = b""

    def expect(self, what: bytes, timeout: float = 20.0) -> bytes:
        import select
        deadline = time.monotonic() + timeout
        while what not in self.seen and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:
                    break
        assert what in self.seen, (what, self.seen[-500:])
        before, _, self.seen = self.seen.partition(what)
        return before

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


def test_console_through_a_pseudo_terminal(tmp_path: Any) -> None:
    l4run = L4RUN
    with _linux_image(tmp_path, TERM="vt100") as (rd, env):
        con = _Pty([*l4run, "console", "--run-dir", rd], env)
        con.expect(b"/ # ")
        con.type(b"echo hi\r")
        # (ash asks the terminal where its cursor is, ESC [6n, before it reads a line)
        assert con.expect(b"/ # ").endswith(b"echo hi\r\nhi\r\n")        # echo, output
        con.type(b"tty; stty size\r")
        assert b"/dev/console\r\n24 80\r\n" in con.expect(b"/ # ")
        con.type(b"cat\r")
        time.sleep(1.0)                                 # cat reads (type-ahead is raw)
        con.type(b"ab\x7fc\r\x04")                     # canonical: erase, then ^D ends cat
        assert b"ab\x08 \x08c\r\nac\r\n" in con.expect(b"/ # ")
        con.type(b"sleep 30\r")
        time.sleep(1.0)
        con.type(b"\x03")                               # ^C: SIGINT to the foreground group
        assert b"^C" in con.expect(b"/ # ", timeout=10)
        con.type(b"echo status=$?; echo $$ > /tmp/shell\r")
        assert b"status=130\r\n" in con.expect(b"/ # ")
        con.type(b"\x1d")                               # detach: the shell goes on
        con.expect(b"detached")
        assert con.wait() == 0
        r = subprocess.run([*l4run, "linux", "run", "--run-dir", rd, "--", "cat", "/tmp/shell"],
                           env=env, cwd=PROJECT_ROOT, capture_output=True, timeout=60)
        assert r.returncode == 0 and r.stdout.strip().isdigit(), r
        again = _Pty([*l4run, "console", "--run-dir", rd], env)   # the same shell again
        again.expect(b"Ctrl-] detaches]\r\n")
        again.type(b"echo $$; exit 7\r")
        again.expect(r.stdout.strip() + b"\r\n")
        assert again.wait() == 7


def test_console_job_control_stops(tmp_path: Any) -> None:
    """^Z stops the foreground job and ash reports it; `jobs`, `bg`, `fg` and ^C then act
    on it as on a Linux terminal (docs/L4LINUX.md "Stops")."""
    l4run = L4RUN
    with _linux_image(tmp_path, TERM="vt100") as (rd, env):
        con = _Pty([*l4run, "console", "--run-dir", rd], env)
        con.expect(b"/ # ")
        con.type(b"sleep 30\r")
        time.sleep(1.5)                                 # sleep runs in the foreground
        con.type(b"\x1a")                               # ^Z: SIGTSTP, a stop
        assert b"[1]+  Stopped                    sleep 30" in con.expect(b"/ # ", timeout=30)
        con.type(b"jobs\r")
        assert b"[1]+  Stopped                    sleep 30" in con.expect(b"/ # ")
        con.type(b"bg\r")
        assert b"[1] sleep 30" in con.expect(b"/ # ")
        con.type(b"jobs\r")
        assert b"[1]+  Running                    sleep 30" in con.expect(b"/ # ")
        con.type(b"fg\r")
        con.expect(b"sleep 30\r\n")
        time.sleep(1.0)
        con.type(b"\x03")                               # ^C the job brought back
        con.expect(b"/ # ", timeout=30)
        con.type(b"echo st=$?\r")
        assert b"st=130\r\n" in con.expect(b"/ # ")
        con.type(b"exit\r")
        assert con.wait() == 0
