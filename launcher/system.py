"""The launcher: the root task that boots an image, wires it, supervises it and shuts it down.

Boot: start the kernel (`python -m kernel --die-with-parent`) and the spawner (zygote) side by
side, connect as root, then start tasks in dependency order (a task starts once every task it
depends on — explicitly or through a service it uses — has connected to the kernel).

Wiring, per task (through `kernel.user.spawn`, the path the tests' `System` takes too): a
fresh kernel task (task cap + main-thread cap); one IPC gate per service it provides (and one
more per distinct client label), owned by the launcher and bound to the provider's main
thread; every capability the image routes to it mapped into its slots (rights reduced as
asked) and named in L4_CAPS; a private `launcher` gate for name lookups (`launcher.names`);
the launcher's handler gate as its exception handler; the kernel told which pid runs it
(`task_watch`).

Supervision: the kernel sends a Proto.EXCEPTION "exit" notice to the handler gate when a task
dies. `policy.decide` says whether to restart; a restart creates a fresh task and *rebinds*
the service gates to its main thread, so clients keep their capabilities: calls during the
outage fail with PEER_DIED, the next one reaches the new incarnation.

Threads: the main thread owns all state, the root L4 thread, the control socket and the
spawner; it runs `step()`. The supervisor thread (its own L4 thread in the root task) only
waits on the handler and lookup gates: it queues death notices for the main thread and
answers lookups from `routes` (guarded by `routes_lock`). The kernel-watch thread only
waits on the kernel's pidfd (`_watch_kernel`).

Death of the kernel: however it dies (even SIGKILL), its pidfd becomes readable; the
kernel-watch thread reaps it at once (a zombie still answers kill(pid, 0), which is how
our L4 threads would decide it is gone, so a call in flight would wait forever), removes
kernel.sock (every task blocked on the kernel then sees it gone too) and tells the main
thread, which shuts the system down: every task ended, nothing left behind.
"""
from __future__ import annotations

import json
import socket
import os
import queue
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import zmq

from kernel.user import errors, rpc, spawn
from kernel.abi import Proto, Rights, pack
from kernel.user.client import L4, map_cap
from kernel.user.spawn import NamedCap
from kernel.abi import MEM_CHANNEL, RT_SOCK, TCP_INFO

from . import control, proc, sandbox
from .devices import HAL_TASK, IO_TASK, hal_ctl
from .image import (CapSpec, Image, RouteSpec, TaskSpec, check_snippet, module_dirs,
                    start_deps)
from .memory import MOE_TASK, SIGMA0_TASK, MemoryWiring
from .names import CAP_NAME, NAMES, Supervisor
from .policy import Backoff, Budget, decide
from .zygote import PROJECT_ROOT, SpawnError, Spawner

HANDLER_LABEL = 1
STOP_LABEL = 2               # the main thread tells the supervisor thread to end
LOOKUP_LABEL_BASE = 1000     # + task number: the per-task `launcher` gate
ACTIVE = ("waiting", "starting", "awaiting", "running", "backoff")
LIVE = ("starting", "awaiting", "running")       # an incarnation exists in the kernel


class BootError(Exception):
    pass


@dataclass
class TaskRun:
    """A task of the image and its current incarnation. Main thread only."""
    spec: TaskSpec
    number: int
    log: str
    state: str = "waiting"        # waiting starting awaiting running backoff stopped exited failed
    wanted: bool = True           # False after stop/down: never restarted
    forced: bool = False          # a requested restart: restart whatever the policy
    pid: int = 0
    slot: int = 0                 # root's capability to the kernel task
    thread: int = 0               # root's capability to its main thread
    task_id: int = 0
    restarts: int = 0
    started: float = 0.0
    last_exit: str = ""
    kill_at: float = 0.0          # escalate SIGTERM to SIGKILL at this time
    budget: Budget = field(default_factory=lambda: Budget(5, 10.0))
    backoff: Backoff | None = None
    restart_at: float = 0.0       # state "backoff": restart at this time (time.time())
    remote_env: dict[str, str] = field(default_factory=dict)   # what the remote side needs


@dataclass
class Service:
    name: str
    provider: str
    gates: dict[int, int] = field(default_factory=dict)     # label -> root's gate slot


class Launcher:
    def __init__(self, image: Image, run_dir: str, *, exec_mode: bool = False,
                 verbose: bool = False, on_event: Callable[[str], None] | None = None) -> None:
        self.image = image
        self.run_dir = os.path.abspath(run_dir)
        self.exec_mode = exec_mode
        self.verbose = verbose
        self.on_event = on_event or (lambda s: print(f"[l4run] {s}", file=sys.stderr, flush=True))
        self.tasks: dict[str, TaskRun] = {}
        self.by_id: dict[int, TaskRun] = {}
        self.services: dict[str, Service] = {}
        self.routes: dict[int, dict[str, tuple[int, int]]] = {}   # lookup label -> name -> (gate, rights)
        self.routes_lock = threading.Lock()
        self.lookup_gates: dict[str, int] = {}
        self.label_users: dict[tuple[str, int], set[str]] = {}   # (service, label) -> tasks routed
        self.exit_status: dict[int, int] = {}
        self.events: list[tuple[float, str]] = []
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.stopping = False
        self.started = time.time()
        self.kernel: subprocess.Popen[bytes] | None = None
        self.kernel_pidfd = -1            # the kernel's pidfd (owned by the kernel-watch thread)
        self.operator = os.getuid()       # who booted us: control.sock takes only its (or root's) requests
        self.spawner: Spawner | None = None
        self.root: L4 | None = None
        self.ctl: zmq.Socket | None = None
        self.sup_thread: threading.Thread | None = None
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        self.logs = os.path.join(self.run_dir, "logs")
        self.kernel_sock = os.path.join(self.run_dir, "kernel.sock")
        self.pythonpath = os.pathsep.join(p for p in (PROJECT_ROOT, *module_dirs(image.path),
                                                      os.environ.get("PYTHONPATH", "")) if p)
        self.cwd = os.getcwd()
        self.memory = MemoryWiring(self)      # sigma0/moe set-up, moe sessions, client_gone
        self.tcp_info: dict[str, str] | None = None   # RUN_DIR/kernel.tcp with [system] tcp
        # The sandbox (launcher/sandbox.py): which protections this host gives, decided once
        # at boot; the tasks' uids; what every sandboxed task may read.
        self.protections = sandbox.probe(image.uids)
        self.uids = sandbox.UidPool(*image.uids)
        self.scratch = os.path.join(self.run_dir, "scratch")

    # -- events ---------------------------------------------------------------
    def event(self, text: str) -> None:
        self.events.append((time.time(), text))
        del self.events[:-200]
        self.on_event(text)

    # -- boot -----------------------------------------------------------------
    def _claim_run_dir(self) -> None:
        os.makedirs(self.logs, exist_ok=True)
        if os.path.exists(control.sock_path(self.run_dir)):
            try:
                control.request(self.run_dir, "status", timeout_ms=500)
                raise BootError(f"a system is already running in {self.run_dir}")
            except control.NotRunning:
                pass
        for stale in (control.CONTROL_SOCK, "kernel.sock", RT_SOCK, control.STATE_FILE, "hal.ctl"):
            try:
                os.unlink(os.path.join(self.run_dir, stale))
            except FileNotFoundError:
                pass

    def start_system(self) -> None:
        """Kernel, spawner, root connection, supervisor thread, control socket."""
        self._claim_run_dir()
        secret = secrets.token_bytes(16)
        env = {**os.environ, "PYTHONPATH": self.pythonpath}
        klog = open(os.path.join(self.logs, "kernel.log"), "ab")
        self.kernel = subprocess.Popen(
            [sys.executable, "-m", "kernel", "--run-dir", self.run_dir, "--die-with-parent"]
            + (["--ram-bytes", str(self.image.ram)] if self.image.ram else [])
            + (["--tcp", self.image.tcp] if self.image.tcp else [])
            + (["--cpu", self.image.kernel_cpu] if self.image.kernel_cpu else [])
            + (["--rt-port"] if self.image.kernel_rt_port else []),
            env={**env, "L4_ROOT_SECRET": secret.hex()}, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL,
            stdout=klog, stderr=klog, process_group=0)
        klog.close()
        self.kernel_pidfd = os.pidfd_open(self.kernel.pid)
        threading.Thread(target=self._watch_kernel, args=(self.kernel, self.kernel_pidfd),
                         name="l4run-kernel-watch", daemon=True).start()
        zlog = open(os.path.join(self.logs, "zygote.log"), "ab")
        cleanup = [self.kernel_sock, os.path.join(self.run_dir, RT_SOCK),
                   control.sock_path(self.run_dir),
                   os.path.join(self.run_dir, control.STATE_FILE),
                   os.path.join(self.run_dir, TCP_INFO)]
        if self.image.devices:
            cleanup.append(hal_ctl(self.run_dir))     # the HAL's control socket
        # Tasks inherit the zygote's initial environment block (fork mode): only what Python
        # needs, unless the attack suite switched that protection off.
        zenv = env if not self.protections["environment"]["on"] else \
            {"PATH": os.environ.get("PATH", os.defpath), "PYTHONPATH": self.pythonpath}
        self.spawner = Spawner(zenv, self.exec_mode,
                               sorted({t.module for t in self.image.tasks if not t.remote}),
                               cleanup, stderr=zlog, cleanup_trees=[self.scratch])
        zlog.close()
        while not os.path.exists(self.kernel_sock):
            if self.kernel.poll() is not None:
                raise BootError(f"the kernel exited with status {self.kernel.returncode} "
                                f"(see {self.logs}/kernel.log)")
            time.sleep(0.002)
        if self.image.tcp:
            tcp_path = os.path.join(self.run_dir, TCP_INFO)
            while not os.path.exists(tcp_path):
                if self.kernel.poll() is not None:
                    raise BootError(f"the kernel exited with status {self.kernel.returncode} "
                                    f"(see {self.logs}/kernel.log)")
                time.sleep(0.002)
            with open(tcp_path) as f:
                self.tcp_info = json.load(f)
        self.root = L4(self.kernel_sock, secret)
        self.handler_gate = self.root.create_gate(HANDLER_LABEL)
        sup = self.root.create_thread()
        self.sup_thread_slot = sup.slot
        self.root.bind_gate(self.handler_gate, sup.slot)
        self.sup_l4 = L4(self.kernel_sock, sup.secret, ctx=self.root.ctx)
        self.sup_thread = threading.Thread(target=self._supervise, name="l4run-supervisor",
                                           daemon=True)
        self.sup_thread.start()
        self.ctl = control.bind(self.root.ctx, self.run_dir)
        self.spawner.wait_ready()
        self._write_state()

    def _watch_kernel(self, kernel: subprocess.Popen[bytes], pidfd: int) -> None:
        """The kernel-watch thread: wait for the kernel's pidfd (readable once it exited,
        zombie or not), reap it, remove its sockets and tell the main thread."""
        try:
            select.select([pidfd], [], [])
            status = kernel.wait()
        finally:
            os.close(pidfd)
        for name in ("kernel.sock", MEM_CHANNEL, TCP_INFO):    # what it could not remove
            try:
                os.unlink(os.path.join(self.run_dir, name))
            except FileNotFoundError:
                pass
        try:
            self._post(("kernel", status))
        except OSError:
            pass                  # shut down meanwhile (our wake-up pipe is closed)

    def _write_state(self) -> None:
        state = {"pid": os.getpid(), "kernel_pid": self.kernel.pid if self.kernel else 0,
                 "zygote_pid": self.spawner.pid if self.spawner else 0,
                 "image": self.image.path, "name": self.image.name, "started": self.started,
                 "protections": self.protections}
        path = os.path.join(self.run_dir, control.STATE_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(path + ".tmp", path)

    def add_tasks(self, specs: list[TaskSpec]) -> None:
        root = self.root
        assert root is not None, "add_tasks before the kernel is up"
        for spec in specs:
            n = len(self.tasks) + 1
            t = TaskRun(spec, n, os.path.join(self.logs, f"{spec.name}.log"))
            t.budget = Budget(*spec.budget)
            t.backoff = Backoff(*spec.backoff) if spec.backoff else None
            self.tasks[spec.name] = t
            for svc in spec.provides:
                self.services[svc] = Service(svc, spec.name)
            gate = root.create_gate(LOOKUP_LABEL_BASE + n, thread=self.sup_thread_slot)
            self.lookup_gates[spec.name] = gate
        for spec in specs:
            for cap in spec.caps:
                self._route(spec.name, cap)

    def _route(self, task: str, cap: CapSpec) -> int:
        gate = self.service_gate(cap.service, cap.label)
        self.label_users.setdefault((cap.service, cap.label), set()).add(task)
        with self.routes_lock:
            self.routes.setdefault(LOOKUP_LABEL_BASE + self.tasks[task].number, {})[cap.local] = \
                (gate, cap.rights)
        return gate

    def service_gate(self, service: str, label: int) -> int:
        """Root's gate to `service` with `label` (made on first use, bound to the provider's
        current incarnation, rebound on every restart: clients keep their capabilities)."""
        svc = self.services[service]
        if label not in svc.gates:
            provider = self.tasks[svc.provider]
            thread = provider.thread if provider.state in LIVE else None
            assert self.root is not None, "gates are made only while the kernel is up"
            svc.gates[label] = self.root.create_gate(label, thread=thread)
        return svc.gates[label]

    def boot(self, timeout: float = 30.0) -> None:
        """Start the system and every task; return when none is waiting or starting."""
        self.start_system()
        self.add_tasks(self.image.tasks)
        self.event(f"booting '{self.image.name}' in {self.run_dir}")
        self.run_until(self.settled, timeout)

    def settled(self) -> bool:
        """Every task that can start has: none is starting, none waits for a running
        provider. (Remote tasks awaiting their process, and tasks waiting for them, do not
        hold a boot up.)"""
        return not any(t.wanted and (t.state == "starting" or
                                     (t.state == "waiting" and self._deps_running(t)))
                       for t in self.tasks.values())

    def run_until(self, pred: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if self.stopping:
                raise BootError("the system was stopped")
            if time.monotonic() > deadline:
                raise BootError("timed out: " + ", ".join(
                    f"{t.spec.name} {t.state}" for t in self.tasks.values() if t.state != "running"))
            self.step()

    # -- starting a task ---------------------------------------------------------
    def _deps_running(self, t: TaskRun) -> bool:
        providers = {s.name: s.provider for s in self.services.values()}
        return all(self.tasks[d].state == "running" for d in start_deps(t.spec, providers)
                   if d in self.tasks)

    def _start(self, t: TaskRun) -> None:
        """A new incarnation of `t`: wired in the kernel, then its process spawned here or
        awaited from another machine."""
        w = self._wire(t)
        if w is None:
            return
        if t.spec.remote:
            self._await_remote(t, w)
        else:
            self._spawn_local(t, w)

    def _wire(self, t: TaskRun) -> spawn.Wiring | None:
        """A fresh kernel task for `t` (kernel.user.spawn): the capabilities routed to it,
        then its private `launcher` lookup gate (invoke only); our handler gate as its
        exception handler; its service gates rebound to it; its memory. None if it failed."""
        root = self.root
        assert root is not None
        spec = t.spec
        caps = [NamedCap(c.local, self.service_gate(c.service, c.label), c.rights)
                for c in spec.caps]
        caps.append(NamedCap(CAP_NAME, self.lookup_gates[spec.name], Rights.INVOKE))
        w = spawn.create(root, spec.name, spec.quota, caps, handler=self.handler_gate,
                         priority=spec.priority)
        t.slot, t.thread, t.task_id = w.task.slot, w.task.thread, w.task.task_id
        for svc in spec.provides:
            for gate in self.services[svc].gates.values():
                root.bind_gate(gate, w.task.thread)
        try:       # sigma0's RAM; a moe session: l4.caps["moe"] and its pager (launcher/memory.py)
            self.memory.wire(t, w.caps, w.next_slot)
        except SpawnError as e:
            self.event(f"{spec.name}: cannot start: {e}")
            self._drop_caps(t)
            t.state, t.last_exit = "failed", str(e)
            return None
        return w

    def _spawn_local(self, t: TaskRun, w: spawn.Wiring) -> None:
        """Fork `t`'s process through the zygote and tell the kernel its pid."""
        assert self.root is not None and self.spawner is not None
        spec = t.spec
        on = {k: v["on"] for k, v in self.protections.items()}
        pythonpath = os.pathsep.join([*spec.module_path, self.pythonpath])
        extra = {**spec.env, "L4_TASK_NAME": spec.name, "L4_RUN_DIR": self.run_dir}
        self.by_id[w.task.task_id] = t
        try:
            plan, cwd = self._sandbox_plan(spec, pythonpath), self.cwd
            if plan is not None:       # its own scratch directory is its cwd and TMPDIR
                cwd = extra["TMPDIR"] = plan["scratch"]
            # The environment: the image's env and the L4 variables over PATH alone.
            env = spawn.environment(
                w, self.kernel_sock, extra=extra, pythonpath=pythonpath,
                base=os.environ if not on["environment"] else
                {"PATH": os.environ.get("PATH", os.defpath)}, secret_by_fd=on["secret_fd"])
            t.pid = self.spawner.spawn(spec.run, spec.args, env, t.log, cwd,
                                       spawn.secret_payload(w) if on["secret_fd"] else None,
                                       plan)
        except (SpawnError, OSError) as e:
            self.event(f"{spec.name}: cannot spawn: {e}")
            self.by_id.pop(w.task.task_id, None)
            self._drop_caps(t)
            t.state, t.last_exit = "failed", f"spawn failed: {e}"
            return
        try:
            spawn.watch(self.root, w, t.pid)
        except errors.PeerDied as e:
            # The task ended before the kernel was told its process: the process connected
            # and died at once (its only connection closed). Its exit comes from the zygote
            # like any other and the restart policy decides; make sure it is gone.
            self.event(f"{spec.name}: gone before it was watched ({e})")
            try:
                os.kill(t.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        t.state, t.started, t.kill_at = "starting", time.time(), 0.0

    def _sandbox_plan(self, spec: TaskSpec, pythonpath: str) -> dict[str, Any] | None:
        """The sandbox of `spec`'s process (launcher/sandbox.py), or None: a privileged task
        (the HAL) or one that still attaches RAM as root (sandbox.RAM_NEEDS_ROOT)."""
        if sandbox.privilege(spec) is not None:
            return None
        uid = self.uids.uid(spec.name) if self.protections["uid"]["on"] else None
        reads = sandbox.read_roots(pythonpath.split(os.pathsep))
        return sandbox.plan(spec, uid, self.run_dir, reads, self.protections)

    def _sandbox_text(self, spec: TaskSpec) -> str:
        """What `ps` says of a task's sandbox."""
        if spec.remote:
            return "remote: sandboxed (or not) by its own machine"
        why = sandbox.privilege(spec)
        if why is not None:
            return why
        off = [k for k in ("uid", "landlock_fs", "seccomp") if not self.protections[k]["on"]]
        return "isolated" + (f" (off: {', '.join(off)})" if off else "")

    def _drop_caps(self, t: TaskRun) -> None:
        for slot in (t.slot, t.thread):
            if slot:
                assert self.root is not None, "task caps exist only while the kernel is up"
                try:
                    self.root.cap_delete(slot)
                except errors.L4Error:
                    pass
        t.slot = t.thread = 0

    def _await_remote(self, t: TaskRun, w: spawn.Wiring) -> None:
        """A remote task's incarnation exists in the kernel; its process is started on the
        other machine by whoever has `l4run remote TASK` (the one-time secret in it). Its
        environment is the task's variables and its image `env` only: nothing of this
        machine's, and no parent to die with."""
        info = self.tcp_info
        assert info is not None, "validation lets a remote task in only with [system] tcp"
        endpoint = info["endpoint"]
        host = endpoint.rpartition(":")[0][len("tcp://"):]
        if host in ("0.0.0.0", "*", "::", "[::]"):
            endpoint = f"tcp://{socket.getfqdn()}:{endpoint.rpartition(':')[2]}"
        t.remote_env = spawn.environment(w, endpoint, key=info["public_key"],
                                         extra={"L4_TASK_NAME": t.spec.name, **t.spec.env},
                                         die_with_parent=False)
        self.by_id[w.task.task_id] = t
        t.pid = 0
        t.state, t.started, t.kill_at = "awaiting", time.time(), 0.0
        self.event(f"{t.spec.name}: awaiting its remote process (l4run remote {t.spec.name})")

    def cmd_remote(self, task: str) -> dict[str, Any]:
        t = self._task(task)
        if not t.spec.remote:
            raise ValueError(f"task {task!r} is not remote (it runs here)")
        if t.state not in ("awaiting", "running"):
            raise ValueError(f"task {task!r} is {t.state}: no incarnation to connect to")
        if t.state == "running":
            raise ValueError(f"task {task!r} is already connected (its secret is spent)")
        return {"env": t.remote_env,
                "argv": spawn.argv(t.spec.run, t.spec.args, python="python3")}

    def _check_starting(self) -> None:
        for t in self.tasks.values():
            if t.state in ("starting", "awaiting"):
                assert self.root is not None, "a task is starting only while the kernel is up"
                try:
                    if self.root.cap_inspect(t.thread).get("connected"):
                        t.state = "running"
                except errors.L4Error:
                    pass       # it died meanwhile; its exit notice is on the way
            elif t.state == "waiting" and t.wanted and self._deps_running(t):
                self._start(t)

    # -- deaths and restarts ---------------------------------------------------------
    def _on_exit(self, body: dict[str, Any]) -> None:
        t = self.by_id.pop(body.get("task_id", -1), None)
        if t is None:
            return
        status = body.get("status")
        if status is None:
            status = self.exit_status.get(body.get("pid") or 0)
        if t.pid and self.spawner is not None and proc.pid_exists(t.pid):
            self._signal(t, signal.SIGKILL)
        self._drop_caps(t)
        forced, t.forced = t.forced, False
        d = decide(t.spec.restart, status, t.budget, wanted=t.wanted and not self.stopping,
                   forced=forced)
        t.last_exit = d.reason
        if self.stopping:
            t.state = "stopped"
            return
        why = body.get("reason")
        # The kernel's word on a death without a status (it ended the task, or saw its
        # process or connection go): what the operator needs to tell a crash from a kill.
        self.event(f"{t.spec.name} (pid {t.pid}) {d.reason}"
                   + (f" (kernel: {why})" if status is None and why else ""))
        self.memory.on_exit(t)        # moe frees its memory, before any restart (launcher/memory.py)
        if not d.restart:
            t.state = d.state
            return
        t.restarts += 1
        if t.spec.restart_dependents:
            self._restart_dependents(t)
        delay = t.backoff.delay(time.time() - t.started) if t.backoff and not forced else 0.0
        if delay > 0:
            t.state, t.restart_at = "backoff", time.time() + delay
            self.event(f"{t.spec.name}: crash loop ({t.backoff.quick if t.backoff else 0} quick "
                       f"deaths in a row); restarting in {delay:g}s")
            return
        self._start(t)

    def _restart_dependents(self, t: TaskRun) -> None:
        mine = set(t.spec.provides)
        for other in self.tasks.values():
            if other.state in LIVE and other.spec.services_used() & mine:
                other.forced = True
                self._end(other, signal.SIGKILL)

    def _end(self, t: TaskRun, sig: int) -> None:
        """End the task's current incarnation; its exit notice follows as for any death.
        A local process gets `sig` (a SIGTERM escalates to SIGKILL after 2 s); a remote task
        has no process here, so its incarnation is destroyed in the kernel."""
        if not t.spec.remote:
            self._signal(t, sig)
            if sig == signal.SIGTERM:
                t.kill_at = time.time() + 2.0
        elif t.slot:
            assert self.root is not None, "a remote task is awaited only while the kernel is up"
            try:
                self.root.destroy(t.slot)
            except errors.L4Error:
                pass          # it ended meanwhile; its exit notice is on the way

    def _signal(self, t: TaskRun, sig: int) -> None:
        if t.pid and self.spawner is not None:
            try:
                self.spawner.signal(t.pid, sig)
            except SpawnError:
                pass

    # -- the supervisor thread ---------------------------------------------------------
    def _supervise(self) -> None:
        """The supervisor thread: NAMES lookups on the tasks' `launcher` gates and the
        kernel's death notices, both through `launcher.names.Supervisor` and the one server
        loop (kernel.user.rpc.serve); ends on the main thread's stop message, or at a quiet
        second once stopping."""
        sup = Supervisor(self._find_route, lambda body: self._post(("exit", body)),
                         self._end_client, self._client_pid, self._task_pid)
        stop = [False]

        def route(m: Any) -> Any:
            if m.label == STOP_LABEL or (m.label == HANDLER_LABEL and m.proto == 0):
                stop[0] = True             # the main thread's one-way "end now"
                return None
            return (NAMES, sup) if m.label >= LOOKUP_LABEL_BASE else None
        while not stop[0]:
            try:
                rpc.serve(self.sup_l4, route, kernel=sup, name="l4run-supervisor",
                          timeout=1000, until=lambda: stop[0])
            except errors.L4Error as e:
                if not self.stopping:
                    self._post(("gone", str(e)))
                return
            if self.stopping:
                return

    def _find_route(self, label: int, name: str) -> tuple[int, int] | None:
        with self.routes_lock:
            return self.routes.get(label, {}).get(name)

    def _end_client(self, label: int, service: str, client: int) -> tuple[str, str] | None:
        """NAMES end_client on the supervisor thread: check that the caller (its `launcher`
        gate's label) provides `service`, then have the main thread kill the task(s) routed
        to it under `client` (launcher/names.py)."""
        caller = next((name for name, t in list(self.tasks.items())      # numbers never change
                       if LOOKUP_LABEL_BASE + t.number == label), None)
        svc = self.services.get(service)
        if caller is None or svc is None or svc.provider != caller:
            return ("DENIED", f"task {caller!r} does not provide service {service!r}")
        victims = sorted(self.label_users.get((service, client), set()))
        if not victims:
            return ("NOT_ROUTED", f"no task is routed to {service!r} with label {client}")
        self._post(("end_client", (caller, victims)))
        return None

    def _caller(self, label: int) -> str | None:
        return next((name for name, t in list(self.tasks.items())      # numbers never change
                     if LOOKUP_LABEL_BASE + t.number == label), None)

    def _client_pid(self, label: int, service: str,
                    client: int) -> tuple[str, int, int] | tuple[str, str]:
        """NAMES client_pid on the supervisor thread (launcher/names.py): the caller must
        provide `service`; answers (task, pid, kernel pid) or (error, reason)."""
        caller = self._caller(label)
        svc = self.services.get(service)
        if caller is None or svc is None or svc.provider != caller:
            return ("DENIED", f"task {caller!r} does not provide service {service!r}")
        users = sorted(self.label_users.get((service, client), set()))
        live = [(n, self.tasks[n].pid) for n in users
                if n in self.tasks and self.tasks[n].state == "running" and self.tasks[n].pid]
        if len(live) != 1:
            return ("NOT_ROUTED", f"{len(live)} running tasks are routed to {service!r} with "
                                  f"label {client} (routed: {users})")
        return (live[0][0], live[0][1], self.kernel.pid if self.kernel else 0)

    def _task_pid(self, label: int, task: str) -> int | None:
        """NAMES task_pid: None (DENIED) unless the caller is a privileged task."""
        caller = self._caller(label)
        if caller is None or sandbox.privilege(self.tasks[caller].spec) is None:
            return None
        t = self.tasks.get(task)
        return t.pid if t is not None and t.state == "running" else 0

    def _post(self, item: tuple[str, Any]) -> None:
        self.inbox.put(item)
        try:
            os.write(self.wake_w, b"x")
        except BlockingIOError:
            pass

    # -- the main loop -----------------------------------------------------------------
    def step(self, timeout_ms: int | None = None) -> None:
        assert self.spawner is not None and self.ctl is not None
        busy = any(t.state in ("starting",) or (t.state == "waiting" and t.wanted)
                   for t in self.tasks.values())
        if timeout_ms is None:
            timeout_ms = 2 if busy else 200
            due = [t.restart_at for t in self.tasks.values() if t.state == "backoff"]
            if due:       # wake for the earliest delayed restart
                timeout_ms = max(1, min(timeout_ms, int((min(due) - time.time()) * 1000) + 1))
        poller = zmq.Poller()
        poller.register(self.ctl, zmq.POLLIN)
        poller.register(self.wake_r, zmq.POLLIN)
        poller.register(self.spawner.fileno(), zmq.POLLIN)
        ready = dict(poller.poll(timeout_ms))
        if self.wake_r in ready:
            try:
                while os.read(self.wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        if self.spawner.fileno() in ready:
            try:
                self.spawner.pump()
            except SpawnError as e:
                self.event(f"fatal: {e}; shutting down")
                self.stopping = True
                return
        for ev in self.spawner.take_events():
            self.exit_status[ev["pid"]] = ev["status"]
        while True:
            try:
                kind, body = self.inbox.get_nowait()
            except queue.Empty:
                break
            if kind == "exit":
                self._on_exit(body)
            elif kind == "end_client":
                for name in body[1]:
                    try:
                        self.cmd_kill(name)
                        self.event(f"{name}: ended at the request of {body[0]} (its server)")
                    except ValueError as e:
                        self.event(f"{name}: {body[0]} asked to end it: {e}")
            elif kind == "gone":
                self.event(f"fatal: lost the kernel ({body}); shutting down")
                self.stopping = True
                return
            elif kind == "kernel" and not self.stopping:
                how = f"killed by {signal.Signals(-body).name}" if body < 0 else f"status {body}"
                self.event(f"fatal: the kernel (pid {self.kernel.pid if self.kernel else 0}) "
                           f"died ({how}); ending every task")
                self.stopping = True
                return
        if self.kernel is not None and self.kernel.poll() is not None:
            self.event(f"fatal: the kernel exited with status {self.kernel.returncode}")
            self.stopping = True
            return
        now = time.time()
        for t in self.tasks.values():
            if t.kill_at and now >= t.kill_at and t.state in ("starting", "running"):
                self._signal(t, signal.SIGKILL)
                t.kill_at = 0.0
            if t.state == "backoff" and now >= t.restart_at:
                self._start(t)
        self._check_starting()
        if self.ctl in ready:
            self._serve_control()

    def serve(self, tick: Callable[[], None] | None = None, signals: bool = True) -> None:
        """Run until `down`, SIGINT or SIGTERM; then shut everything down."""
        old: dict[signal.Signals, Any] = {}
        if signals:
            def on_signal(signum: int, frame: Any) -> None:
                self.stopping = True
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                old[s] = signal.signal(s, on_signal)
            old_fd = signal.set_wakeup_fd(self.wake_w)
        try:
            while not self.stopping:
                try:
                    self.step()
                except errors.KernelGone as e:     # a call in flight when the kernel died
                    self.event(f"fatal: lost the kernel ({e}); shutting down")
                    self.stopping = True
                    break
                if tick is not None:
                    tick()
        finally:
            if signals:
                signal.set_wakeup_fd(old_fd)
            self.shutdown()
            for s, h in old.items():
                signal.signal(s, h)

    # -- control commands ---------------------------------------------------------------
    def _serve_control(self) -> None:
        ctl = self.ctl
        assert ctl is not None, "step() serves control only once the socket is bound"
        while True:
            req = control.recv_request(ctl, self.operator, self.event)
            if req is None:
                return
            fn = getattr(self, "cmd_" + req["cmd"].replace("-", "_"), None)
            try:
                if fn is None:
                    raise ValueError(f"unknown command {req['cmd']!r}")
                args = {k: v for k, v in req.items() if k != "cmd"}
                answer = {"ok": True, **(fn(**args) or {})}
            except (ValueError, KeyError, TypeError, errors.L4Error, SpawnError) as e:
                answer = {"ok": False, "error": str(e).strip("'\"")}
            control.send_answer(ctl, answer)

    def _task(self, name: str) -> TaskRun:
        if name not in self.tasks:
            raise ValueError(f"no task named {name!r} (tasks: {', '.join(self.tasks)})")
        return self.tasks[name]

    def cmd_status(self) -> dict[str, Any]:
        info = self.root.kernel_info() if self.root else None
        return {"name": self.image.name, "pid": os.getpid(), "run_dir": self.run_dir,
                "ready": self.settled(),
                "kernel_pid": self.kernel.pid if self.kernel else 0,
                "zygote_pid": self.spawner.pid if self.spawner else 0,
                "uptime_s": round(time.time() - self.started, 3),
                "protections": self.protections,
                "kernel_stats": info["stats"] if info else {},
                "fast_path": info.get("fast_path", "python") if info else None,
                "events": [f"{time.strftime('%H:%M:%S', time.localtime(ts))} {e}"
                           for ts, e in self.events[-20:]]}

    def cmd_ps(self) -> dict[str, Any]:
        assert self.root is not None, "control commands are served only while the kernel is up"
        try:
            ktasks = {k["id"]: k for k in self.root.kernel_info()["tasks"]}
        except errors.L4Error:
            ktasks = {}
        rows = []
        for t in self.tasks.values():
            row: dict[str, Any] = {
                "name": t.spec.name, "pid": t.pid if t.state in ("starting", "running") else None,
                "state": t.state, "restart": t.spec.restart, "restarts": t.restarts,
                "provides": t.spec.provides, "uses": sorted(t.spec.services_used()),
                "run": t.spec.run, "priority": t.spec.priority, "last_exit": t.last_exit,
                "uptime_s": round(time.time() - t.started, 1) if t.state == "running" else None,
                "cpu_s": None, "rss_kb": None, "ipc": None,
                "uid": self.uids.by_name.get(t.spec.name), "network": t.spec.network,
                "sandbox": self._sandbox_text(t.spec)}
            if row["pid"]:
                try:
                    cpu_s, row["rss_kb"] = proc.usage(t.pid)
                    row["cpu_s"] = round(cpu_s, 2)
                except proc.ProcessGone:
                    pass
            k = ktasks.get(t.task_id) if row["pid"] else None
            if k is not None:
                row["ipc"] = dict(k.get("stats", {}))
            if row["pid"] and t.spec.run.startswith("servers.ore.server:"):
                from .net import counters_of         # ORe's ports (launcher/net.py)
                row["net"] = counters_of(self, t)
            rows.append(row)
        rows += self._linux_rows(ktasks)
        return {"tasks": rows}

    def _linux_rows(self, ktasks: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
        """The Linux processes of an L4Linux personality: kernel tasks named linux:PID:comm
        (made by the personality, not the launcher), shown under it."""
        owners = [t.spec.name for t in self.tasks.values()
                  if t.spec.run.startswith("servers.l4linux.") and t.state == "running"]
        rows: list[dict[str, Any]] = []
        for k in ktasks.values():
            name = str(k.get("name", ""))
            if not name.startswith("linux:"):
                continue
            rows.append({"name": name, "pid": k.get("pid"), "state": "running",
                         "restart": None, "restarts": 0, "provides": [], "uses": [],
                         "run": f"linux process of {owners[0] if len(owners) == 1 else '?'}",
                         "priority": None, "last_exit": None, "uptime_s": None, "cpu_s": None,
                         "rss_kb": None, "ipc": dict(k.get("stats", {})), "uid": None,
                         "network": False, "sandbox": "isolated (L4Linux process)",
                         "under": owners[0] if len(owners) == 1 else None})
        return rows

    def cmd_stop(self, task: str) -> dict[str, Any]:
        t = self._task(task)
        t.wanted = False
        if t.state in LIVE:
            self._end(t, signal.SIGTERM)
        elif t.state in ("waiting", "backoff"):
            t.state = "stopped"
        return {}

    def cmd_start(self, task: str) -> dict[str, Any]:
        t = self._task(task)
        if t.state in ACTIVE and t.state != "backoff" and t.wanted:
            raise ValueError(f"task {task!r} is already {t.state}")
        t.wanted = True
        t.budget.reset()
        if t.backoff:
            t.backoff.reset()
        if t.state not in LIVE:
            t.state = "waiting"
        return {}

    def cmd_restart(self, task: str) -> dict[str, Any]:
        t = self._task(task)
        if t.state in LIVE:
            t.wanted, t.forced = True, True
            self._end(t, signal.SIGTERM)      # a new incarnation follows its exit
            return {}
        return self.cmd_start(task)

    def cmd_kill(self, task: str, signal_name: str = "SIGKILL") -> dict[str, Any]:
        t = self._task(task)
        if t.state not in ("starting", "running"):
            raise ValueError(f"task {task!r} is not running ({t.state})")
        if t.spec.remote:
            raise ValueError(f"task {task!r} runs on another machine: no signal reaches it "
                             f"from here (stop or restart end its incarnation)")
        sig = signal.Signals[signal_name if signal_name.startswith("SIG") else "SIG" + signal_name]
        self._signal(t, sig)
        return {"pid": t.pid}

    def cmd_attach(self, data: dict[str, Any], path: str = "snippet") -> dict[str, Any]:
        from .image import ImageError
        services = {s.name: s.provider for s in self.services.values()}
        try:
            specs, routes = check_snippet(data, path, services, set(self.tasks))
        except ImageError as e:
            return {"ok": False, "error": "invalid snippet", "problems": e.problems}
        problems = [f"{path}: task {t.name}.remote: " + (
            "the running system has no tcp:// port ([system] tcp in its image)"
            if self.tcp_info is None else "a remote task cannot have memory (this machine's RAM)")
            for t in specs if t.remote and (self.tcp_info is None or t.memory is not None)]
        problems += self._check_labels(data, path, specs, routes)
        if problems:
            return {"ok": False, "error": "invalid snippet", "problems": problems}
        self.add_tasks(specs)
        for r in routes:
            self._route(r.task, r.cap)
        self.event(f"attached {', '.join(s.name for s in specs) or 'no task'}"
                   + (f"; routes: {', '.join(f'{r.task}.{r.cap.local}' for r in routes)}" if routes else ""))
        return {"tasks": [s.name for s in specs], "routes": [f"{r.task}.{r.cap.local}" for r in routes]}

    def _check_labels(self, data: dict[str, Any], path: str, specs: list[TaskSpec],
                      routes: list[RouteSpec]) -> list[str]:
        """The labels an attach snippet asks for, checked (problems: file, key, reason):
        label 0 (rpc.ADMIN_LABEL) is every server's admin gate, and a label another task
        already uses for a service is that task's identity at the server — neither may be
        handed out. A capability given without a label gets a fresh one (the lowest label
        of that service nobody uses), so each attached client is a client of its own."""
        used = {key: set(names) for key, names in self.label_users.items()}
        problems: list[str] = []

        def check(task: str, cap: CapSpec, explicit: bool, key: str) -> CapSpec:
            if not explicit:
                label = 1
                while used.get((cap.service, label)):
                    label += 1
                cap = replace(cap, label=label)
            elif cap.label == rpc.ADMIN_LABEL:
                problems.append(f"{path}: {key}: label {cap.label} is the admin gate of "
                                f"'{cap.service}' (reserved; give a label of 1 or more)")
                return cap
            others = used.get((cap.service, cap.label), set()) - {task}
            if others:
                problems.append(f"{path}: {key}: label {cap.label} of service '{cap.service}' "
                                f"is already task '{sorted(others)[0]}''s (its identity at the "
                                f"server); choose another")
            used.setdefault((cap.service, cap.label), set()).add(task)
            return cap

        raw_tasks = data.get("task", [])
        for i, spec in enumerate(specs):
            raw_caps = raw_tasks[i].get("caps", {})
            spec.caps = [check(spec.name, c, isinstance(raw_caps.get(c.local), dict)
                               and "label" in raw_caps[c.local],
                               f"task[{i}] ({spec.name}).caps.{c.local}.label")
                         for c in spec.caps]
        raw_routes = data.get("route", [])
        for j, r in enumerate(routes):
            routes[j] = RouteSpec(r.task, check(r.task, r.cap, "label" in raw_routes[j],
                                                f"route[{j}].label"))
        return problems

    def cmd_fault(self, op: str, spec: dict[str, Any] | None = None,
                  service: str | None = None, task: str | None = None) -> dict[str, Any]:
        """A kernel IPC fault (FAULT call) for a chaos run attached through the control socket."""
        from .chaos import control_fault
        return control_fault(self, op, spec, service, task)

    def cmd_net(self, task: str | None = None) -> dict[str, Any]:
        """Every ORe switch's ports and counters (launcher/net.py)."""
        from .net import switch_counters
        return switch_counters(self, task)

    def cmd_switch_faults(self, service: str, knobs: dict[str, Any]) -> dict[str, Any]:
        """An ORe switch's fault knobs (its admin op `faults`; launcher/chaos/inject.py)."""
        from .chaos.inject import control_switch_faults
        return control_switch_faults(self, service, knobs)

    def cmd_rt(self) -> dict[str, Any]:
        """The real-time managers' reservations and refusals (launcher/rt.py)."""
        from .rt import status
        return status(self)

    def cmd_trace(self, action: str, limit: int = 0) -> dict[str, Any]:
        """The kernel's IPC trace (TRACE: on, off, status, drain; launcher/trace.py)."""
        assert self.root is not None, "control commands are served only while the kernel is up"
        return dict(self.root.trace(action, int(limit)))

    def cmd_call(self, task: str, op: str, args: list[str], list: bool = False) -> dict[str, Any]:
        """One declared op of a running server, or its ops (launcher/call.py)."""
        from . import call
        return call.list_ops(self, task) if list else call.call_op(self, task, op, args)

    def cmd_caps(self) -> dict[str, Any]:
        """Every task's capabilities, from KERNEL_INFO (launcher/caps.py)."""
        assert self.root is not None, "control commands are served only while the kernel is up"
        keys = ("caps", "links", "served", "irqs", "maps")
        return {"tasks": [{"id": t["id"], "name": t["name"], **{k: t.get(k, []) for k in keys}}
                          for t in self.root.kernel_info()["tasks"]]}

    def cmd_memory(self) -> dict[str, Any]:
        """moe's and sigma0's accounting (launcher/memory.py)."""
        return self.memory.info()

    def cmd_down(self) -> dict[str, Any]:
        self.stopping = True
        return {}

    # -- shutdown --------------------------------------------------------------------
    def _await_exits(self, pids: set[int], seconds: float) -> None:
        assert self.spawner is not None
        deadline = time.monotonic() + seconds
        while pids and time.monotonic() < deadline:
            try:
                self.spawner.pump(block=False)
            except SpawnError:
                break
            pids -= {ev["pid"] for ev in self.spawner.take_events()}
            time.sleep(0.01)

    def shutdown(self) -> None:
        """Tasks, spawner (which removes the socket files), supervisor, kernel, control."""
        self.stopping = True
        if self.spawner is not None:
            live = [t for t in self.tasks.values() if t.state in ("starting", "running")]
            # Clients before their servers: a task that handles SIGTERM (the L⁴Linux
            # personality writes its disk back through the block server) still has its
            # servers while it ends. Tasks that nobody uses go first, the rest — and the
            # launcher's own (memory, HAL, io: used without a route) — after them.
            used = set().union(*(t.spec.services_used() for t in live)) if live else set()
            first = [t for t in live if not set(t.spec.provides) & used and
                     t.spec.name not in (HAL_TASK, IO_TASK, MOE_TASK, SIGMA0_TASK)]
            for wave, wait in ((first, 3.0), ([t for t in live if t not in first], 1.0)):
                for t in wave:
                    t.wanted = False
                    self._signal(t, signal.SIGTERM)
                self._await_exits({t.pid for t in wave if t.pid}, wait)
            self.spawner.close()
            self.spawner = None
        for t in self.tasks.values():
            if t.state in ACTIVE:
                t.state = "stopped"
        if self.root is not None:
            try:
                self.root.send(self.handler_gate, b"", timeout=0)
            except errors.L4Error:
                pass
        if self.sup_thread is not None:
            self.sup_thread.join(2.0)
        if self.kernel is not None and self.kernel.poll() is None:
            self.kernel.terminate()
            try:
                self.kernel.wait(5)
            except subprocess.TimeoutExpired:
                self.kernel.kill()
                self.kernel.wait()
        for l4 in (getattr(self, "sup_l4", None), self.root):
            if l4 is not None:
                l4.close()
        self.root = None
        if self.ctl is not None:
            self.ctl.close(0)
            self.ctl = None
        for f in (control.CONTROL_SOCK, control.STATE_FILE, "kernel.sock", RT_SOCK):
            try:
                os.unlink(os.path.join(self.run_dir, f))
            except FileNotFoundError:
                pass
        for fd in (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.wake_r = self.wake_w = -1
        self.uids.close()
