"""`l4run`: the command line of the launcher (click + rich).

    l4run boot IMAGE [--detach] [--run-dir DIR]   validate, boot, show a live status table
    l4run ps [--json]                             tasks, pids, state, restarts, CPU, memory, IPC
    l4run top [--once] [--json] [--sort COL]      live: IPC, page faults, CPU% per task per second
    l4run trace [--duration S] [-o F] [--svg F]   the kernel's IPC trace for Perfetto (and a picture)
    l4run call TASK.OP [ARG ...] | TASK --list    any declared op of a running server
    l4run graph [--format text|dot|svg|json]      the capability graph (l4run caps: the same)
    l4run tcb TASK [--json]                       TASK's trusted computing base, in lines of code
    l4run logs TASK [-f]                          a task's stdout/stderr (RUN_DIR/logs/TASK.log)
    l4run attach SNIPPET.toml                     start extra tasks / routes in the running system
    l4run stop|start|restart|kill TASK            control one task
    l4run down                                    shut the system down, leave nothing behind
    l4run screenshot [-o FILE.png] [--device FB]  the framebuffer as a PNG (images with devices)
    l4run input key NAME|click X Y [BUTTON]|move X Y   inject keyboard and mouse events
    l4run view [--port N] [--host H]              the screen live in a browser (its URL has a token)
    l4run faults DEVICE KNOB=VALUE...             set a HAL device's fault knobs by hand
    l4run chaos PLAN [--image IMAGE]              inject faults by plan, check invariants, report
    l4run bench boot|restart|ipc|memory|hal|chaos|fuzz|dde|net|linux|gui|rt [--json]   measurements
    l4run net [--json]                            ORe's ports: frames, bytes, drops, MAC table
    l4run rt [--json]                             DROPS: CPU/disk/net reservations, misses, refusals
    l4run selftest mutants [--json]               planted kernel bugs the suite must catch
    l4run mkrootfs [-o FILE]                      the L⁴Linux initramfs (busybox + applet links)
    l4run linux run -- CMD ARGS | linux ps        a command in the running L⁴Linux personality
    l4run console [TASK]                          this terminal on the L⁴Linux console (^] detaches)

Every command takes --run-dir (default: $L4PY_RUN_DIR, else ./run/<image name> for boot and
the only system running under ./run for the others). Errors are one line and exit status 1.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from typing import Any

import click
from rich.console import Console, Group, JustifyMethod
from rich.table import Table
from rich.text import Text

from . import control
from .image import ImageError, load_image, load_snippet_data

ENV_RUN_DIR = "L4PY_RUN_DIR"
STATE_STYLE = {"running": "green", "starting": "yellow", "waiting": "yellow", "backoff": "magenta",
               "awaiting": "cyan",
               "stopped": "dim", "exited": "dim", "failed": "bold red"}


class Fail(click.ClickException):
    """One clear line on stderr, exit status 1, no traceback."""

    def show(self, file: Any = None) -> None:
        click.echo(f"l4run: {self.message}", err=True)


def find_run_dir(given: str | None) -> str:
    if given:
        return given
    if os.environ.get(ENV_RUN_DIR):
        return os.environ[ENV_RUN_DIR]
    base = os.path.join(os.getcwd(), "run")
    found = sorted(os.path.join(base, d) for d in (os.listdir(base) if os.path.isdir(base) else [])
                   if os.path.exists(os.path.join(base, d, control.CONTROL_SOCK)))
    if len(found) == 1:
        return found[0]
    if not found:
        raise Fail(f"no system is running under {base} (boot one, or give --run-dir)")
    raise Fail(f"several systems run under {base}: {', '.join(os.path.basename(f) for f in found)}"
               f" (choose one with --run-dir)")


def ask(run_dir: str, cmd: str, **args: Any) -> dict[str, Any]:
    try:
        answer = control.request(run_dir, cmd, **args)
    except control.NotRunning as e:
        raise Fail(str(e)) from None
    if not answer.get("ok"):
        for p in answer.get("problems", []):
            click.echo(p, err=True)
        raise Fail(answer.get("error", "the launcher refused"))
    return answer


run_dir_option = click.option("--run-dir", "run_dir", default=None, metavar="DIR",
                              help=f"the system's run directory (default: ${ENV_RUN_DIR} or ./run/...)")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """l4run: boot and control L4Py system images."""


# -- boot ---------------------------------------------------------------------------

def render(status: dict[str, Any], rows: list[dict[str, Any]]) -> Group:
    path = status.get("fast_path")
    t = Table(title=f"L4Py system '{status.get('name', '?')}'  —  {status.get('run_dir', '')}"
                    + (f"  —  kernel IPC fast path: {path}" if path else ""),
              title_justify="left", expand=False)
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("task", "left"), ("pid", "right"), ("uid", "right"), ("net", "left"),
        ("state", "left"), ("policy", "left"),
        ("restarts", "right"), ("cpu s", "right"), ("mem MiB", "right"),
        ("ipc in/out", "right"), ("provides", "left"), ("uses", "left"))
    for col, just in columns:
        t.add_column(col, justify=just, no_wrap=True,
                     min_width=len(col) if col in ("task", "state", "policy", "restarts") else None)
    for r in rows:
        ipc = r.get("ipc") or {}
        t.add_row(r["name"], str(r["pid"] or "-"),
                  str(r["uid"]) if r.get("uid") is not None else "-",
                  "yes" if r.get("network") else "-",
                  Text(r["state"], style=STATE_STYLE.get(r["state"], "")), r["restart"],
                  str(r["restarts"]), f"{r['cpu_s']:.2f}" if r.get("cpu_s") is not None else "-",
                  f"{r['rss_kb'] / 1024:.1f}" if r.get("rss_kb") else "-",
                  f"{ipc.get('received', 0)}/{ipc.get('sent', 0)}" if ipc else "-",
                  ",".join(r["provides"]), ",".join(r["uses"]))
    events = Text("\n".join(status.get("events", [])[-6:]), style="dim")
    return Group(t, events, Text("Ctrl-C shuts the system down.", style="italic"),
                 protections_text(status.get("protections", {}), rows))


def protections_text(prot: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> Text:
    """The sandbox report (launcher/root.py `protection_lines`), warnings in yellow."""
    from .root import protection_lines
    out = Text()
    for line, warn in protection_lines(prot, rows):
        out.append(line + "\n", style="bold yellow" if warn and line.startswith("  OFF")
                   else "yellow" if warn else "")
    return out


def validate(image_path: str) -> Any:
    try:
        return load_image(image_path)
    except ImageError as e:
        for p in e.problems:
            click.echo(p, err=True)
        raise Fail(f"{image_path}: {len(e.problems)} problem(s); nothing was started") from None


@cli.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--detach", "-d", is_flag=True, help="run in the background; return once all tasks run")
@click.option("--plain", is_flag=True, help="no live table: print events as lines")
@click.option("--exec-spawn", is_flag=True, help="start tasks by fork+exec, not from the zygote")
@click.option("--timeout", default=30.0, show_default=True, help="seconds to wait for --detach")
@run_dir_option
def boot(image: str, detach: bool, plain: bool, exec_spawn: bool, timeout: float,
         run_dir: str | None) -> None:
    """Validate IMAGE and boot it.

    The root task is its own lean process (launcher/root.py): --detach starts it in the
    background; --plain (or no terminal) makes this process it (exec: same pid, signals,
    exit status and event lines as before); the live table runs beside it as a client of
    its control socket, Ctrl-C reaching both (the root shuts the system down)."""
    img = validate(image)
    run_dir = os.path.abspath(run_dir or os.environ.get(ENV_RUN_DIR)
                              or os.path.join("run", img.name))
    cmd = root_command(image, run_dir, exec_spawn)
    if detach:
        return boot_detached(image, run_dir, exec_spawn, timeout)
    console = Console(stderr=False)
    if plain or not console.is_terminal:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, cmd)
    boot_live(cmd, img.name, run_dir, console)


def root_command(image: str, run_dir: str, exec_spawn: bool) -> list[str]:
    """The argv of the root task's process (launcher/root.py)."""
    return [sys.executable, "-m", "launcher.root", os.path.abspath(image), "--run-dir",
            run_dir] + (["--exec-spawn"] if exec_spawn else [])


def boot_live(cmd: list[str], name: str, run_dir: str, console: Console) -> None:
    """The root task as a child (its events in RUN_DIR/launcher.log), the live table here
    until it exits; Ctrl-C goes to the whole foreground group, so the root shuts down and
    this waits for it; its exit status is ours."""
    import signal
    from rich.live import Live
    os.makedirs(run_dir, exist_ok=True)
    log_path = os.path.join(run_dir, "launcher.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    def on_signal(signum: int, frame: Any) -> None:
        if signum != signal.SIGINT:          # SIGINT reached the root from the terminal
            proc.send_signal(signum)
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with Live(render({"name": name, "run_dir": run_dir}, []), console=console,
                  refresh_per_second=4) as live:
            while proc.poll() is None:
                try:
                    live.update(render(control.request(run_dir, "status", timeout_ms=1000),
                                       control.request(run_dir, "ps", timeout_ms=1000)["tasks"]))
                except (control.NotRunning, KeyError):
                    pass
                time.sleep(0.25)
    finally:
        proc.wait()
        for s, h in old.items():
            signal.signal(s, h)
    if proc.returncode:
        with open(log_path, errors="replace") as f:
            tail = [ln.rstrip() for ln in f.readlines()[-5:] if ln.strip()]
        last = tail[-1].removeprefix("l4run: ") if tail else "no output"
        raise Fail(f"the root task exited with status {proc.returncode}: {last} "
                   f"(see {log_path})")
    console.print(f"system '{name}' is down.")


def boot_detached(image: str, run_dir: str, exec_spawn: bool, timeout: float) -> None:
    try:
        control.request(run_dir, "status", timeout_ms=1000)
        raise Fail(f"a system is already running in {run_dir}")
    except control.NotRunning:
        pass
    os.makedirs(run_dir, exist_ok=True)
    log_path = os.path.join(run_dir, "launcher.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(root_command(image, run_dir, exec_spawn),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            with open(log_path, errors="replace") as f:
                tail = [ln.rstrip() for ln in f.readlines()[-5:] if ln.strip()]
            raise Fail(f"the launcher exited with status {proc.returncode}: "
                       + (tail[-1] if tail else "no output"))
        try:
            st = control.request(run_dir, "status", timeout_ms=1000)
            if st.get("ready") and st.get("pid") == proc.pid:
                break
        except control.NotRunning:
            pass
        if time.monotonic() > deadline:
            raise Fail(f"the system did not come up within {timeout}s (see {log_path})")
        time.sleep(0.02)
    wait_ms = max(5000, int((deadline - time.monotonic()) * 1000))
    try:
        rows = control.request(run_dir, "ps", timeout_ms=wait_ms)["tasks"]
    except control.NotRunning:
        raise Fail(f"the system came up (launcher pid {proc.pid}) but did not answer `ps` "
                   f"within {wait_ms / 1000:.1f}s (see {log_path})") from None
    running = sum(r["state"] == "running" for r in rows)
    click.echo(f"booted '{st['name']}' in {run_dir}: {running}/{len(rows)} tasks running "
               f"(launcher pid {st['pid']})")
    click.echo(protections_text(st.get("protections", {}), rows).plain.rstrip())


# -- inspection -------------------------------------------------------------------------

@cli.command()
@click.option("--json", "as_json", is_flag=True, help="a JSON list of task objects")
@run_dir_option
def ps(as_json: bool, run_dir: str | None) -> None:
    """List the tasks of the running system."""
    rd = find_run_dir(run_dir)
    rows = ask(rd, "ps")["tasks"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    status = ask(rd, "status")
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(render(status, rows).renderables[0])
    console.print(protections_text(status.get("protections", {}), rows))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="one JSON object")
@run_dir_option
def memory(as_json: bool, run_dir: str | None) -> None:
    """Memory accounting: sigma0's frames, moe's dataspaces and each task's session."""
    info = {k: v for k, v in ask(find_run_dir(run_dir), "memory").items() if k != "ok"}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    t = Table(title="memory")
    t.add_column("server")
    t.add_column("accounting")
    for server in ("sigma0", "moe"):
        if server in info:
            t.add_row(server, ", ".join(f"{k} {v}" for k, v in info[server].items()
                                         if not isinstance(v, (dict, list))))
    if info.get("sessions"):
        t.add_row("sessions", ", ".join(f"{task} #{n}" for task, n in info["sessions"].items()))
    Console().print(t)


@cli.command()
@click.argument("task")
@click.option("-f", "--follow", is_flag=True, help="keep printing what the task writes")
@click.option("-n", "--lines", default=0, help="only the last N lines")
@run_dir_option
def logs(task: str, follow: bool, lines: int, run_dir: str | None) -> None:
    """Print a task's log (its stdout and stderr)."""
    rd = find_run_dir(run_dir)
    path = os.path.join(rd, "logs", f"{task}.log")
    if not os.path.exists(path):
        known = sorted(f[:-4] for f in os.listdir(os.path.join(rd, "logs")) if f.endswith(".log")) \
            if os.path.isdir(os.path.join(rd, "logs")) else []
        raise Fail(f"no log for task {task!r} in {rd} (logs: {', '.join(known) or 'none'})")
    with open(path, errors="replace") as f:
        text = f.readlines()
        sys.stdout.write("".join(text[-lines:] if lines else text))
        sys.stdout.flush()
        while follow:
            chunk = f.read()
            if chunk:
                sys.stdout.write(chunk)
                sys.stdout.flush()
            else:
                if not os.path.exists(os.path.join(rd, control.CONTROL_SOCK)):
                    return
                time.sleep(0.2)


# -- control ------------------------------------------------------------------------------

@cli.command()
@click.argument("snippet", type=click.Path(dir_okay=False))
@click.option("--wait/--no-wait", default=True, help="wait until the new tasks run")
@run_dir_option
def attach(snippet: str, wait: bool, run_dir: str | None) -> None:
    """Start the tasks (and routes) of SNIPPET.toml in the running system."""
    rd = find_run_dir(run_dir)
    try:
        data = load_snippet_data(snippet)
    except ImageError as e:
        raise Fail(e.problems[0]) from None
    a = ask(rd, "attach", data=data, path=os.path.abspath(snippet))
    names = a.get("tasks", [])
    if wait and names:
        wait_state(rd, names, ("running",), ("failed", "exited"), 30.0)
    click.echo(f"attached: {', '.join(names) or '-'}"
               + (f"; routes: {', '.join(a['routes'])}" if a.get("routes") else ""))


def wait_state(rd: str, names: list[str], good: tuple[str, ...], bad: tuple[str, ...],
               timeout: float, since: dict[str, int] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        rows = {r["name"]: r for r in ask(rd, "ps")["tasks"]}
        done = True
        for n in names:
            r = rows[n]
            if r["state"] in bad and (since is None or r["restarts"] != since.get(n)):
                raise Fail(f"task {n!r} is {r['state']}: {r['last_exit']}")
            if r["state"] not in good or (since is not None and r["restarts"] == since.get(n)):
                done = False
        if done:
            return
        if time.monotonic() > deadline:
            raise Fail(f"timed out waiting for {', '.join(names)}")
        time.sleep(0.02)


def _control(cmd: str, task: str, run_dir: str | None, wait: bool, **args: Any) -> None:
    rd = find_run_dir(run_dir)
    before = {r["name"]: r["restarts"] for r in ask(rd, "ps")["tasks"]}
    ask(rd, cmd, task=task, **args)
    if wait:
        if cmd == "stop":
            wait_state(rd, [task], ("stopped", "exited", "failed"), (), 10.0)
        elif cmd == "start":
            # the launcher makes it "waiting" before it answers: an "exited" seen after
            # that is this run's own clean end (a task that does its work and returns)
            wait_state(rd, [task], ("running", "exited"), ("failed",), 30.0)
        elif cmd == "restart":
            wait_state(rd, [task], ("running",), ("failed",), 30.0, since=before)
    click.echo(f"{cmd}: {task}")


wait_option = click.option("--wait/--no-wait", default=True, help="wait for the new state")


@cli.command()
@click.argument("task")
@wait_option
@run_dir_option
def stop(task: str, wait: bool, run_dir: str | None) -> None:
    """Stop TASK (SIGTERM, then SIGKILL); it is not restarted."""
    _control("stop", task, run_dir, wait)


@cli.command()
@click.argument("task")
@wait_option
@run_dir_option
def start(task: str, wait: bool, run_dir: str | None) -> None:
    """Start a stopped or failed TASK again (its restart budget is reset)."""
    _control("start", task, run_dir, wait)


@cli.command()
@click.argument("task")
@wait_option
@run_dir_option
def restart(task: str, wait: bool, run_dir: str | None) -> None:
    """Restart TASK now, whatever its policy."""
    _control("restart", task, run_dir, wait)


@cli.command()
@click.argument("task")
@click.option("--signal", "-s", "sig", default="SIGKILL", show_default=True)
@run_dir_option
def kill(task: str, sig: str, run_dir: str | None) -> None:
    """Send TASK a signal (default SIGKILL); its restart policy decides what follows."""
    _control("kill", task, run_dir, False, signal_name=sig.upper())


@cli.command()
@click.argument("task")
@click.option("--json", "as_json", is_flag=True, help="print {env, argv} as JSON")
@run_dir_option
def remote(task: str, as_json: bool, run_dir: str | None) -> None:
    """The command that runs remote TASK on another machine (one use: its secret is spent
    when it connects; after a restart ask again)."""
    import shlex
    r = ask(find_run_dir(run_dir), "remote", task=task)
    if as_json:
        click.echo(json.dumps(r))
        return
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in r["env"].items())
    click.echo(f"{env} {shlex.join(r['argv'])}")


@cli.command()
@click.option("--timeout", default=15.0, show_default=True)
@run_dir_option
def down(timeout: float, run_dir: str | None) -> None:
    """Shut the system down: every task, the kernel, the sockets. Works in every state: a
    launcher that no longer answers (killed, or its kernel died) is cleaned up after."""
    rd = find_run_dir(run_dir)
    st = control.read_state(rd) or {}
    try:
        answered = control.request(rd, "down")
    except control.NotOperator as e:
        raise Fail(str(e)) from None
    except control.NotRunning:
        answered = None
    if answered is not None and not answered.get("ok"):
        raise Fail(answered.get("error", "the launcher refused"))
    pid = st.get("pid") if answered is not None else None
    deadline = time.monotonic() + timeout
    import psutil
    while pid and psutil.pid_exists(pid) and time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.Error:
            break
        time.sleep(0.02)
    while answered is not None and os.path.exists(os.path.join(rd, control.CONTROL_SOCK)) \
            and time.monotonic() < deadline:
        time.sleep(0.02)
    left = control.clean_up(rd)
    click.echo(f"system '{st.get('name', '?')}' in {rd} is down"
               + (f" (cleaned up after it: {', '.join(left)})" if left else ""))


# -- devices (the HAL's control socket, hal/tools.py) -----------------------------------------

def hal_call(fn: Any, run_dir: str | None, *args: Any, **kw: Any) -> Any:
    """Run a hal.tools function against the system's HAL; its refusal is one line."""
    from hal.tools import HalControlError
    rd = find_run_dir(run_dir)
    try:
        return fn(rd, *args, **kw)
    except HalControlError as e:
        raise Fail(f"{e}" + ("" if os.path.exists(os.path.join(rd, "hal.ctl"))
                             else " - this system's image lists no [[device]]")) from None
    except (ValueError, OSError) as e:
        raise Fail(str(e)) from None


@cli.command()
@click.option("-o", "--output", "out", default="screenshot.png", show_default=True,
              type=click.Path(dir_okay=False), help="the PNG file to write")
@click.option("--device", default=None, help="framebuffer name (default: the first)")
@run_dir_option
def screenshot(out: str, device: str | None, run_dir: str | None) -> None:
    """Write what is on the framebuffer now as a PNG."""
    from hal.tools import screenshot as shoot
    path = hal_call(shoot, run_dir, out, device)
    click.echo(f"screenshot: {path}")


@cli.command(name="input")
@click.argument("kind", type=click.Choice(["key", "type", "click", "move"]))
@click.argument("args", nargs=-1, required=True)
@click.option("--device", default=None, help="input device name (default: the first)")
@run_dir_option
def input_(kind: str, args: tuple[str, ...], device: str | None, run_dir: str | None) -> None:
    """Inject input: key NAME | type TEXT (\\n: enter) | click X Y [left|right|middle] |
    move X Y."""
    from hal.tools import inject_input
    if kind == "type":
        args = (" ".join(args).replace("\\n", "\n"),)
    n = hal_call(inject_input, run_dir, kind, *args, device=device)
    click.echo(f"input: {kind} {' '.join(args)} ({n} event(s) queued)")


def knob_value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    raise Fail(f"knob value {text!r} is not a number or true/false")


@cli.command()
@click.argument("device")
@click.argument("knobs", nargs=-1, required=True, metavar="KNOB=VALUE...")
@run_dir_option
def faults(device: str, knobs: tuple[str, ...], run_dir: str | None) -> None:
    """Set fault knobs of a HAL device (e.g. disk0 error_rate=0.2 latency_ms=30)."""
    from hal.tools import set_faults
    values = {}
    for kv in knobs:
        k, eq, v = kv.partition("=")
        if not eq or not k:
            raise Fail(f"{kv!r}: expected KNOB=VALUE")
        values[k] = knob_value(v)
    now = hal_call(set_faults, run_dir, device, **values)
    click.echo(f"{device}: " + " ".join(f"{k}={v}" for k, v in sorted(now.items())))


# -- benchmarks ----------------------------------------------------------------------------

class BenchGroup(click.Group):
    """`l4run bench`: boot and restart live here; the others come from `launcher.bench_<name>`
    modules (each exports `register(group)`), imported only when asked for, so a broken or
    slow-to-import benchmark never slows down or breaks the rest of the CLI."""

    LAZY = ("ipc", "memory", "hal", "fuzz", "dde", "net", "linux", "gui", "rt")   # chaos registers itself (it adds `l4run chaos` too)

    def list_commands(self, ctx: click.Context) -> list[str]:
        extra = [n for n in self.LAZY if importlib.util.find_spec(f"launcher.bench_{n}") is not None]
        return sorted(set(super().list_commands(ctx)) | set(extra))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.LAZY or name in self.commands:
            return super().get_command(ctx, name)
        module = f"launcher.bench_{name}"
        if importlib.util.find_spec(module) is None:
            return None
        try:
            mod = importlib.import_module(module)
        except Exception as e:
            raise Fail(f"{module} cannot be imported: {type(e).__name__}: {e}") from None
        if not hasattr(mod, "register"):
            raise Fail(f"{module} has no register(group) function")
        mod.register(self)
        return self.commands.get(name)


@cli.group(cls=BenchGroup)
def bench() -> None:
    """Measurements (boot time, restart time, IPC)."""


from . import bench_launcher  # noqa: E402  (registers boot and restart on `bench`)

bench_launcher.register(bench)

from . import bench_chaos  # noqa: E402  (registers `chaos` and `bench chaos`; imports launcher.chaos lazily)

bench_chaos.register(cli, bench)

from . import selftest  # noqa: E402  (registers `selftest mutants`: planted bugs the tests must catch)

from . import linux as linux_cli  # noqa: E402  (registers `mkrootfs` and `linux run|ps`: L⁴Linux)

linux_cli.register(cli, find_run_dir, run_dir_option)

from . import net as net_cli  # noqa: E402  (registers `net`: ORe's ports and counters)

net_cli.register(cli, ask, find_run_dir, run_dir_option)

from . import rt as rt_cli  # noqa: E402  (registers `rt`: DROPS' reservations and refusals)

rt_cli.register(cli, ask, find_run_dir, run_dir_option)

from . import trace as trace_cli  # noqa: E402  (registers `trace`: the kernel's IPC trace for Perfetto)
trace_cli.register(cli, ask, find_run_dir, run_dir_option)

from . import call as call_cli  # noqa: E402  (registers `call`: any declared op of a running server)
call_cli.register(cli, ask, find_run_dir, run_dir_option)

from . import graph as graph_cli  # noqa: E402  (registers `graph` and `caps`: the capability graph)
graph_cli.register(cli, ask, find_run_dir, run_dir_option)

from . import tcb as tcb_cli  # noqa: E402  (registers `tcb`: a task's trusted computing base)
tcb_cli.register(cli, ask, find_run_dir, run_dir_option)

from . import top as top_cli  # noqa: E402  (registers `top`: a live table of the tasks' rates)
top_cli.register(cli, ask, find_run_dir, run_dir_option)

from . import view as view_cli  # noqa: E402  (registers `view`: the screen live in a browser)
view_cli.register(cli, find_run_dir, run_dir_option)

selftest.register(cli)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
