"""`l4run mkrootfs` and `l4run linux run|ps`: the L⁴Linux personality from the command line.

    l4run mkrootfs [-o FILE] [--busybox PATH] [--skeleton DIR] [--ext2 SIZE]
        the newc initramfs the personality boots from: its skeleton (servers/l4linux/
        initramfs.py DIRS and FILES, plus the files of DIR if given) and busybox with a
        /bin link for every applet (`busybox --list`). Default FILE: build/linux/rootfs.cpio
        in the project (where a sandboxed personality may read it).
        With --ext2 SIZE (bytes, or with K/M/G), the same tree as an ext2 disk image of that
        size instead, made by host `mke2fs -t ext2 -d` (e2fsprogs) from the archive's
        entries unpacked into a temporary directory; default FILE build/linux/rootfs.ext2.
    l4run linux run [--task NAME] [--timeout S] -- CMD ARGS...
        run one command in the running personality, print its output, exit with its status.
    l4run linux ps [--task NAME] [--json]
        the personality's Linux processes.
    l4run console [TASK] [--new] [--run-dir DIR]
        attach this terminal to the personality's console (servers/l4linux/tty.py): an
        interactive `sh` on it, started at the first attach (or with --new), found again at
        the next. The host terminal is raw while attached (the personality's line discipline
        does echo, ^C, ^D); its window size follows. Ctrl-] detaches: the shell goes on.

`linux` talks to the personality's door, RUN_DIR/scratch/TASK/linux.sock (servers/l4linux/
control.py), which only root and the personality's uid can reach.
"""
from __future__ import annotations

import json
import os
import stat
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import click

from kernel.user.spawn import PROJECT_ROOT

DEFAULT_ROOTFS = os.path.join(PROJECT_ROOT, "build", "linux", "rootfs.cpio")
DEFAULT_EXT2 = os.path.join(PROJECT_ROOT, "build", "linux", "rootfs.ext2")
DEFAULT_TASK = "linux"


def build_rootfs(busybox: str = "/bin/busybox", skeleton: str | None = None) -> bytes:
    """The archive `mkrootfs` writes."""
    from servers.l4linux import initramfs
    with open(busybox, "rb") as f:
        image = f.read()
    archive = initramfs.build(image, initramfs.applets(busybox))
    if skeleton is None:
        return archive
    extra = []
    for top, dirs, names in os.walk(skeleton):
        for name in sorted(dirs) + sorted(names):
            path = os.path.join(top, name)
            rel = os.path.relpath(path, skeleton)
            st = os.lstat(path)
            data = (os.readlink(path).encode() if stat.S_ISLNK(st.st_mode) else
                    open(path, "rb").read() if stat.S_ISREG(st.st_mode) else b"")
            extra.append(initramfs.Entry(rel, st.st_mode, data))
    entries = [e for e in initramfs.read(archive)] + extra
    return initramfs.write([e._replace(ino=0) for e in entries])


def parse_size(text: str) -> int:
    """'64M' -> 67108864: a byte count with an optional K, M or G (binary) suffix."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    try:
        n = int(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise ValueError(f"size {text!r}: want a number of bytes, optionally with K, M or G")
    if n < 1 << 20:
        raise ValueError(f"size {text!r}: an ext2 root file system needs at least 1M")
    return n


class BuildError(Exception):
    """A disk image could not be made (no mke2fs, or it failed): the host's side, said in
    one line. Not a click exception: the root task parses images and loads no CLI code."""


def build_ext2(output: str, size: int, archive: bytes) -> None:
    """Write the newc `archive`'s tree as an ext2 image of `size` bytes at `output`.

    The entries are unpacked into a temporary directory and host `mke2fs -t ext2 -d` makes
    the image from it (the format is e2fsprogs' own, nothing hand-made). An unprivileged
    caller cannot give its files to root, so the owners the archive names (uid/gid, 0 in
    ours) are then set in the image through the ext2 engine (servers/ext2)."""
    import shutil
    import subprocess
    import tempfile
    from servers.ext2 import Ext2, ImageDevice
    from servers.l4linux import initramfs
    mke2fs = shutil.which("mke2fs") or shutil.which("mke2fs", path="/sbin:/usr/sbin")
    if mke2fs is None:
        raise BuildError("mke2fs not found: install e2fsprogs")
    entries = list(initramfs.read(archive))
    with tempfile.TemporaryDirectory(prefix="l4py-rootfs-") as top:
        for e in entries:
            path = os.path.join(top, e.name)
            if stat.S_ISDIR(e.mode):
                os.makedirs(path, exist_ok=True)
            elif stat.S_ISLNK(e.mode):
                os.symlink(e.data.decode(), path)
            elif stat.S_ISREG(e.mode):
                with open(path, "wb") as f:
                    f.write(e.data)
            else:
                continue                      # devices and fifos: /dev is the personality's
            if not stat.S_ISLNK(e.mode):
                os.chmod(path, stat.S_IMODE(e.mode))
        tmp = output + ".tmp"
        with open(tmp, "wb") as f:
            f.truncate(size)
        # 4 KiB blocks even for a small disk (mke2fs would pick 1 KiB): a quarter of the
        # block-map work and of the buffer cache's entries for the same bytes.
        r = subprocess.run([mke2fs, "-q", "-F", "-t", "ext2", "-b", "4096", "-L", "l4py-root",
                            "-E", "root_owner=0:0", "-d", top, tmp],
                           capture_output=True, text=True, timeout=300)
        if r.returncode:
            os.unlink(tmp)
            raise BuildError(f"mke2fs -t ext2 -d failed (is {size} bytes enough "
                             f"for the tree?): {r.stderr.strip() or r.stdout}")
    fs = Ext2(ImageDevice(tmp))
    for e in entries:
        ino = fs.resolve("/" + e.name, follow=False)
        if (fs.stat(ino).uid, fs.stat(ino).gid) != (e.uid, e.gid):
            fs.setattr(ino, uid=e.uid, gid=e.gid)
    fs.unmount()
    os.chmod(tmp, 0o644)
    os.replace(tmp, output)


LINUX_KEYS = ("name", "rootfs", "init", "door", "quota", "priority", "restart", "restart_budget",
              "l4caps", "hybrid", "rootdisk", "provides", "net")
ROOTDISK_KEYS = ("service", "label", "at", "image", "size")
LINUX_RUN = "servers.l4linux.server:main"


def section_tasks(c: Any, data: dict[str, Any], image_path: str) -> list[dict[str, Any]]:
    """The image's `[linux]` table (or `[[linux]]` tables, one personality each) as the task
    tables they stand for; a mistake is reported through `c` naming `linux.KEY`:

        [linux]
        name = "linux"                 # the personality's task (default "linux")
        rootfs = "build/linux/rootfs.cpio"   # a newc archive, relative to the image
                                       # (default: that file if `l4run mkrootfs` made it,
                                       # else one built from /bin/busybox at boot)
        init = "echo up; cat /etc/motd"   # started at boot and after every restart: a
                                       # line for sh -c, or argv as a list
        door = true                    # `l4run linux run` and `l4run console` reach it
        quota = 8192                   # kernel objects (each Linux process is a task)
        restart = "on-failure"         # and restart_budget = "5/60s", priority: as [[task]]
        l4caps = { hello = "hello" }   # capabilities of the personality for hybrid
                                       # processes: as a [[task]]'s caps
        hybrid = { "/bin/greet" = ["hello"] }   # which program may use which of them
                                       # (docs/L4LINUX.md "Hybrid processes")
        provides = ["linux"]           # a service: its gate serves protocol LINUX (run,
                                       # ps, console_*) to the tasks the image routes to it
                                       # (a terminal window: servers/nitpicker/terminal.py)
        rootdisk = { service = "block", label = 5, at = "/" }
                                       # the disk: a session of the block server (its
                                       # policy's label), ext2 mounted at `at` ("/": the
                                       # root file system, the default; "none": only for
                                       # mount(2)); docs/L4LINUX.md "The disk". With
                                       # image = "FILE" (relative to the image; the disk's
                                       # [[device]] image) and size = "64M": FILE is built
                                       # as `l4run mkrootfs --ext2 SIZE -o FILE` when missing
        net = { switch = "ore", ip = "10.0.2.20/24", gw = "10.0.2.2" }
                                       # eth0: an ORe session as a [[task]]'s net table
                                       # (launcher/net.py: mac, broadcast, label, dhcp …)
                                       # and the gateway `gw`; the personality's sockets
                                       # use it (docs/L4LINUX.md "Sockets and the network")
    """
    raw = data.get("linux")
    if raw is None:
        return []
    tables = raw if isinstance(raw, list) else [raw]
    out = []
    for i, d in enumerate(tables):
        where = f"linux[{i}]" if isinstance(raw, list) else "linux"
        if not isinstance(d, dict):
            c.bad(where, "[linux] must be a table (or [[linux]] tables, one per personality)")
            continue
        for k in sorted(set(d) - set(LINUX_KEYS)):
            c.bad(f"{where}.{k}", f"unknown key (known: {', '.join(LINUX_KEYS)})")
        task: dict[str, Any] = {"name": d.get("name", DEFAULT_TASK), "run": LINUX_RUN,
                                "args": _section_args(c, d, where, image_path),
                                "quota": d.get("quota", 8192),
                                "restart": d.get("restart", "on-failure"),
                                "restart_budget": d.get("restart_budget", "5/60s")}
        if "priority" in d:
            task["priority"] = d["priority"]
        if "l4caps" in d:
            task["caps"] = d["l4caps"]        # checked as any task's caps (linux.l4caps)
        if "provides" in d:
            task["provides"] = d["provides"]  # checked as any task's (linux.provides)
        task["args"] = _hybrid_args(c, d, where) + task["args"]
        if "rootdisk" in d:
            task["args"] = _rootdisk(c, d, where, task, image_path) + task["args"]
        if "net" in d:
            task["args"] = _net(c, d["net"], where, task) + task["args"]
        out.append(task)
    return out


def _net(c: Any, raw: Any, where: str, task: dict[str, Any]) -> list[str]:
    """The `net` table as the task's (its ORe session; checked there) and the personality's
    `--net` argument: the address, the gateway (`gw`, ours alone), dhcp."""
    if not isinstance(raw, dict):
        c.bad(f"{where}.net", 'expected a table: net = { switch = "ore", ip = "10.0.2.20/24" }')
        return []
    net = dict(raw)
    gw = net.pop("gw", None)
    dhcp = net.pop("dhcp", False)       # ours: wire_switches would append it to the args
    if gw is not None and not isinstance(gw, str):
        c.bad(f"{where}.net.gw", f"expected an address like \"10.0.2.2\", got {gw!r}")
        gw = None
    task["net"] = net
    words = [f"ip={net['ip']}"] if isinstance(net.get("ip"), str) else []
    words += [f"gw={gw}"] if gw else []
    words += ["dhcp"] if dhcp is True else []
    if isinstance(net.get("cap"), str):
        words.append(f"cap={net['cap']}")
    return ["--net", ",".join(words) or "ip="]


def _build_missing(c: Any, key: str, raw: dict[str, Any], image_path: str) -> None:
    """`rootdisk.image` made by `l4run mkrootfs --ext2 rootdisk.size` if it is missing
    (before the [[device]] tables are checked: the disk's image then exists)."""
    img, size = raw["image"], raw.get("size", "64M")
    if not isinstance(img, str) or not img:
        c.bad(f"{key}.image", f"expected a file name, got {img!r}")
        return
    full = os.path.normpath(img if os.path.isabs(img) else os.path.join(
        os.path.dirname(os.path.abspath(image_path)), img))
    if os.path.exists(full):
        return
    try:
        n = parse_size(str(size))
    except ValueError as e:
        c.bad(f"{key}.size", str(e))
        return
    if not os.path.isdir(os.path.dirname(full)):
        os.makedirs(os.path.dirname(full), exist_ok=True)
    print(f"[l4run] {key}.image: {full} is missing; building it (mkrootfs --ext2 {size})",
          file=sys.stderr, flush=True)
    try:
        build_ext2(full, n, build_rootfs())
    except (BuildError, OSError) as e:
        c.bad(f"{key}.image", f"{full}: could not build it: {e}")


def _rootdisk(c: Any, d: dict[str, Any], where: str, task: dict[str, Any],
              image_path: str) -> list[str]:
    """`rootdisk = { service, label, at }`: the capability "block" (a route to the block
    server with that label), a moe session for the block buffer, and `--disk AT`."""
    raw, key = d["rootdisk"], f"{where}.rootdisk"
    if not isinstance(raw, dict):
        c.bad(key, 'expected a table: { service = "block", label = N, at = "/" }')
        return []
    for k in sorted(set(raw) - set(ROOTDISK_KEYS)):
        c.bad(f"{key}.{k}", f"unknown key (known: {', '.join(ROOTDISK_KEYS)})")
    service, label, at = raw.get("service", "block"), raw.get("label"), raw.get("at", "/")
    if not isinstance(service, str) or not service:
        c.bad(f"{key}.service", f"expected the block server's service name, got {service!r}")
    if type(label) is not int or label <= 0:
        c.bad(f"{key}.label", f"expected the positive label of the block server's policy "
                              f"entry for this disk, got {label!r}")
    if not isinstance(at, str) or not (at == "none" or at.startswith("/")):
        c.bad(f"{key}.at", f'expected "/", an absolute directory or "none", got {at!r}')
    if isinstance(d.get("l4caps"), dict) and "block" in d["l4caps"]:
        c.bad(f"{where}.l4caps.block", "the name 'block' is the rootdisk's capability")
    if "image" in raw:
        _build_missing(c, key, raw, image_path)
    caps = dict(task.get("caps") or {})
    caps["block"] = {"service": service, "label": label}
    task["caps"] = caps
    task["memory"] = "2M"                  # the block buffer (rootdisk.BUFFER) and headroom
    return [] if at == "none" else ["--disk", str(at)]


def _hybrid_args(c: Any, d: dict[str, Any], where: str) -> list[str]:
    """`hybrid = { PROGRAM = [NAME, ...] }` as the personality's `--hybrid` arguments; every
    NAME must be one of `l4caps`."""
    raw = d.get("hybrid", {})
    caps = d.get("l4caps", {})
    if not isinstance(raw, dict):
        c.bad(f"{where}.hybrid", "expected a table: { \"/bin/PROGRAM\" = [\"CAP\", ...] }")
        return []
    args: list[str] = []
    for program, names in raw.items():
        key = f"{where}.hybrid.{program}"
        if not program.startswith("/") or "=" in program:
            c.bad(key, "expected an absolute path (without '=') of a program in the personality")
        elif not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            c.bad(key, f"expected a list of capability names, got {names!r}")
        elif not isinstance(caps, dict) or any(n not in caps for n in names):
            c.bad(key, f"every name must be one of {where}.l4caps "
                       f"({', '.join(sorted(caps)) if isinstance(caps, dict) else 'none'})")
        else:
            args += ["--hybrid", f"{program}={','.join(names)}"]
    return args


def _section_args(c: Any, d: dict[str, Any], where: str, image_path: str) -> list[str]:
    args: list[str] = []
    if "rootfs" in d:
        rootfs = d["rootfs"]
        if not isinstance(rootfs, str) or not rootfs:
            c.bad(f"{where}.rootfs", f"expected a file name, got {rootfs!r}")
        else:
            full = rootfs if os.path.isabs(rootfs) else os.path.join(
                os.path.dirname(os.path.abspath(image_path)), rootfs)
            if not os.path.isfile(full):
                c.bad(f"{where}.rootfs", f"{full}: no such file (l4run mkrootfs -o FILE "
                                         f"makes one)")
            args += ["--rootfs", full]
    door_on = d.get("door", True)
    if not isinstance(door_on, bool):
        c.bad(f"{where}.door", f"expected true or false, got {door_on!r}")
    elif door_on:
        args.append("--door")
    init = d.get("init")
    if isinstance(init, str):
        args += ["--init", "sh", "-c", init]
    elif isinstance(init, list) and init and all(isinstance(a, str) for a in init):
        args += ["--init", *init]
    elif init is not None:
        c.bad(f"{where}.init", f"expected a command line or a list of strings, got {init!r}")
    return args


def door(run_dir: str, task: str) -> str:
    from servers.l4linux.control import SOCK_NAME
    return os.path.join(run_dir, "scratch", task, SOCK_NAME)


def ask_door(run_dir: str, task: str, req: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    import click
    from servers.l4linux.control import request
    path = door(run_dir, task)
    if not os.path.exists(path):
        raise click.ClickException(f"no personality door at {path} (is task '{task}' running "
                                   f"with --door? configs/linux.toml)")
    try:
        answer = request(path, req, timeout)
    except OSError as e:
        raise click.ClickException(f"personality door {path}: {e}") from None
    if "error" in answer:
        raise click.ClickException(str(answer["error"]))
    return answer


DETACH_KEY = b"\x1d"               # Ctrl-]


def _winsize(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
        return size.lines or 24, size.columns or 80
    except OSError:
        return 24, 80


def attach_console(path: str, new: bool) -> int:
    """The console session on this terminal: its program's exit status, or 0 on detach."""
    import click
    import select
    import signal
    import socket
    import termios
    import tty
    from servers.l4linux.control import _send
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    rows, cols = _winsize(fd_in)
    _send(s, {"op": "console", "argv": ["sh"] if new else [], "rows": rows, "cols": cols,
              "env": [f"TERM={os.environ.get('TERM', 'vt100')}", "HOME=/root",
                      "PATH=/bin:/sbin:/usr/bin", "PS1=\\w # "] if new else []})
    first_line = b""
    while not first_line.endswith(b"\n"):
        part = s.recv(1)                     # the answer line only: the stream follows
        if not part:
            break
        first_line += part
    first = json.loads(first_line or b"{}")
    if "error" in first or "id" not in first:
        raise click.ClickException(str(first.get("error", "no answer from the console")))
    saved = termios.tcgetattr(fd_in) if os.isatty(fd_in) else None
    resized = [False]
    signal.signal(signal.SIGWINCH, lambda *_: resized.__setitem__(0, True))
    if saved is not None:
        tty.setraw(fd_in, termios.TCSANOW)        # keep what was typed ahead
    os.write(fd_out, f"[L4Linux console: sh pid {first['pid']}; Ctrl-] detaches]\r\n".encode())
    status, pending, done = 0, bytearray(), False
    try:
        while not done:
            ready, _, _ = select.select([fd_in, s], [], [], 0.5)
            if resized[0]:
                resized[0] = False
                _send(s, {"size": list(_winsize(fd_in))})
            if s in ready:
                # our own buffer, not a file's: select sees the socket, not what a
                # buffered reader already took from it
                part = s.recv(65536)
                if not part:
                    break
                pending += part
                while b"\n" in pending and not done:
                    line, _, rest = bytes(pending).partition(b"\n")
                    pending = bytearray(rest)
                    msg = json.loads(line)
                    os.write(fd_out, str(msg.get("out", "")).encode("latin-1"))
                    if msg.get("status", -1) != -1:
                        status, done = int(msg["status"]), True
                if done:
                    break
            if fd_in in ready:
                data = os.read(fd_in, 4096)
                if not data or DETACH_KEY in data:
                    data = data.split(DETACH_KEY)[0]
                    if data:
                        _send(s, {"in": data.decode("latin-1")})
                    os.write(fd_out, b"\r\n[detached: l4run console attaches again]\r\n")
                    break
                _send(s, {"in": data.decode("latin-1")})
    finally:
        if saved is not None:
            termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)
        s.close()
    return status


def register(cli: click.Group, find_run_dir: Any, run_dir_option: Any) -> None:
    import click
    @cli.command()
    @click.argument("task", default=DEFAULT_TASK)
    @click.option("--new", is_flag=True, help="start a new shell, not the running one")
    @run_dir_option
    def console(task: str, new: bool, run_dir: str | None) -> None:
        """Attach this terminal to the L⁴Linux console (Ctrl-] detaches)."""
        path = door(find_run_dir(run_dir), task)
        if not os.path.exists(path):
            raise click.ClickException(f"no personality door at {path} (is task '{task}' "
                                       f"running with --door? configs/linux.toml)")
        sys.exit(attach_console(path, new))

    @cli.command()
    @click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
                  help=f"default {DEFAULT_ROOTFS} (with --ext2: {DEFAULT_EXT2})")
    @click.option("--busybox", default="/bin/busybox", show_default=True,
                  type=click.Path(exists=True, dir_okay=False))
    @click.option("--skeleton", type=click.Path(exists=True, file_okay=False),
                  help="a directory whose files are added to the archive")
    @click.option("--ext2", "ext2_size", metavar="SIZE",
                  help="make an ext2 disk image of SIZE (e.g. 64M) instead (mke2fs -d)")
    def mkrootfs(output: str | None, busybox: str, skeleton: str | None,
                 ext2_size: str | None) -> None:
        """Build the L⁴Linux initramfs (a newc cpio archive), or with --ext2 a disk image."""
        data = build_rootfs(busybox, skeleton)
        output = output or (DEFAULT_EXT2 if ext2_size else DEFAULT_ROOTFS)
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        if ext2_size:
            try:
                size = parse_size(ext2_size)
            except ValueError as e:
                raise click.BadParameter(str(e), param_hint="--ext2")
            try:
                build_ext2(output, size, data)
            except BuildError as e:
                raise click.ClickException(str(e)) from None
            click.echo(f"{output}: ext2, {size} bytes")
            return
        with open(output + ".tmp", "wb") as f:
            f.write(data)
        os.chmod(output + ".tmp", 0o644)
        os.replace(output + ".tmp", output)
        click.echo(f"{output}: {len(data)} bytes")

    @cli.group()
    def linux() -> None:
        """The L⁴Linux personality: run Linux programs as L4 tasks."""

    @linux.command(context_settings={"ignore_unknown_options": True})
    @click.option("--task", default=DEFAULT_TASK, show_default=True, help="the personality task")
    @click.option("--timeout", default=60.0, show_default=True, help="seconds")
    @click.option("--cwd", default="/", show_default=True)
    @click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
    @run_dir_option
    def run(task: str, timeout: float, cwd: str, cmd: tuple[str, ...],
            run_dir: str | None) -> None:
        """Run CMD in the personality; its output, then its exit status as ours."""
        rd = find_run_dir(run_dir)
        answer = ask_door(rd, task, {"op": "run", "argv": list(cmd), "cwd": cwd}, timeout)
        sys.stdout.buffer.write(answer["output"].encode("latin-1"))
        sys.stdout.flush()
        sys.exit(int(answer["status"]))

    @linux.command(name="ps")
    @click.option("--task", default=DEFAULT_TASK, show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @run_dir_option
    def ps_(task: str, as_json: bool, run_dir: str | None) -> None:
        """The Linux processes of the personality (each an L4 task linux:PID...)."""
        rd = find_run_dir(run_dir)
        procs = ask_door(rd, task, {"op": "ps"}, 10.0)["procs"]
        if as_json:
            click.echo(json.dumps(procs, indent=2))
            return
        click.echo(f"{'PID':>8} {'PPID':>8} {'TASK':>6} {'STATE':8} COMMAND")
        for p in procs:
            click.echo(f"{p['pid']:>8} {p['ppid']:>8} {p['task_id']:>6} {p['state']:8} "
                       f"{' '.join(p['argv']) or p['comm']}")
