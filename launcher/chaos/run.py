"""The chaos runner: the schedule played against a system, then cleanup and the report.

Contract: `run_plan(plan, image_path=…)` boots the image (in `run_dir`, or a temporary
directory), or with `run_dir` alone attaches to the system running there; checks the plan's
scopes against that image (`PlanError` before anything is injected); runs; shuts down what
it booted and checks that nothing leaked; answers the report (report.py). `ChaosRun` is one
run: `run()` plays the schedule — each injection when due, the `later` undo list, the
invariants every 50 ms, the kernel's fault log every 0.5 s — until the duration is over and
no expectation is pending (a backstop ends it `settle + client_recovery + 5` s later), then
cleans up — with a `[history]` table, the last step of the cleanup freezes the workload
clients (SIGSTOP), reads the ledger's log and then the clients' histories, lets the clients
go on (SIGCONT) and checks what it read (history.py): every history violation is counted in
`history` (the first few per rule also as violations of the run); `finish()` closes the
system and checks for leaks.

Threads: the launcher (when we booted it) runs its own loop in a background thread; the
prober and load threads each own an L4 thread of the root task; everything else — schedule,
injections, invariant checks, the record — is the calling thread's.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from . import history
from .inject import Injector
from .invariants import Invariants
from .plan import Plan, PlanError, check_scope
from .record import Record
from .report import build_report
from .sequence import Injection, schedule
from .subject import Attached, Booted

Progress = Callable[[float, float, dict[str, int]], None]


class ChaosRun:
    def __init__(self, plan: Plan, system: Any, *, seed: int | None = None,
                 duration: float | None = None, progress: Progress | None = None) -> None:
        self.plan, self.sys = plan, system
        self.seed = plan.seed if seed is None else seed
        self.duration = plan.duration if duration is None else duration
        self.progress = progress
        img = system.image
        self.specs = {t.name: t for t in img.tasks}
        services = {s: t.name for t in img.tasks for s in t.provides}
        budgets = {t.name: t.budget for t in img.tasks}
        self.injections = schedule(plan, list(self.specs), list(services), self.seed,
                                   self.duration, budgets)
        self.record = Record(system.run_dir, plan.invariants)
        self.injector = Injector(plan, system, self.specs, self.record)
        self.invariants = Invariants(plan, system, self.specs, self.record, self.injector)
        self.history: history.Verdict | None = None

    def run(self) -> dict[str, Any]:
        self.record.begin({"start": self.plan.name, "seed": self.seed,
                           "duration": self.duration, "scheduled": len(self.injections)})
        self.invariants.start()
        queue = list(self.injections)
        self._last_watch = self._last_drain = 0.0
        try:
            while self._step(queue, self.record.t_start + self.duration):
                time.sleep(0.01)
        finally:
            self._cleanup()
        return self.report()

    def _step(self, queue: list[Injection], end: float) -> bool:
        """One turn of the loop; False when the run is over."""
        now = time.time()
        if not self.invariants.kernel_up():
            self.record.violate("kernel_up", "the kernel process is gone")
            return False
        while queue and self.record.t_start + queue[0].at <= now:
            self.injector.inject(queue.pop(0))
        self.injector.run_due(now)
        if now - self._last_watch >= 0.05:
            self._last_watch = now
            self.invariants.watch()
            self.invariants.run_checks(now)
        if now - self._last_drain >= 0.5:
            self._last_drain = now
            self.injector.drain_kernel_log()
        if self.progress is not None:
            self.progress(min(now, end) - self.record.t_start, self.duration,
                          self.injector.counts())
        if now >= end and not self.injector.later and not self.injector.pending \
                and not self.invariants.clients:
            return False
        if now >= end + self.plan.settle + self.plan.client_recovery + 5:
            return False        # pending expectations have deadlines; this is a backstop
        return True

    def _cleanup(self) -> None:
        self.injector.undo()
        self.invariants.stop_probes()
        self.injector.disarm_all()
        self.injector.drain_kernel_log()
        self.invariants.check_kernel_bugs()
        self.injector.reap_hogs()
        self.invariants.refresh()
        if self.plan.history:
            self._check_history()

    def _check_history(self) -> None:
        """Freeze the clients, read the log then the histories, thaw; check; record."""
        clients, server = self.plan.history["clients"], self.plan.history.get("server")
        rows = self.invariants.rows
        frozen = [c for c in clients if rows.get(c, {}).get("state") == "running"]
        for c in frozen:
            self.sys.kill(c, "SIGSTOP")
        try:
            hist, log = history.load(self.sys.run_dir, clients, server)
        finally:
            for c in frozen:
                self.sys.kill(c, "SIGCONT")
        self.history = v = history.check(hist, log)
        self.record.write({"history": v.as_dict()})
        for x in v.violations:
            self.record.violate("history", f"{x['rule']}: {x['message']}")
        if v.total > len(v.violations):
            self.record.violate("history", f"{v.total - len(v.violations)} more history "
                                           f"violations ({v.counts})")

    def finish(self) -> None:
        """Shut a booted system down and check that nothing leaked."""
        pids = set(self.injector.seen_pids) | {self.sys.kernel_pid}
        self.sys.close()
        self.invariants.check_leaks(pids)
        self.record.close()

    def counts(self) -> dict[str, int]:
        return self.injector.counts()

    def report(self) -> dict[str, Any]:
        return build_report(self)


def run_plan(plan: Plan, *, image_path: str | None = None, run_dir: str | None = None,
             seed: int | None = None, duration: float | None = None,
             budgets: tuple[int, float] | None = None,
             progress: Progress | None = None, edit: Callable[[Any], None] | None = None
             ) -> dict[str, Any]:
    """Boot `image_path` (in `run_dir`, or a temporary one) or attach to `run_dir`; run the
    plan; shut down what we booted; answer the report. `edit(image)` may change the loaded
    image before it boots (the bench sets its workload's pace)."""
    import tempfile

    from ..image import load_image
    tmp = None
    if image_path is not None:
        image = load_image(image_path)
        if edit is not None:
            edit(image)
        if run_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="l4chaos-")
            run_dir = tmp.name
        system: Any = Booted(image, run_dir, budgets)
    elif run_dir is not None:
        system = Attached(run_dir)
    else:
        raise ValueError("give an image to boot or the run directory of a running system")
    names = ({t.name for t in system.image.tasks},
             {s for t in system.image.tasks for s in t.provides})
    problems = check_scope(plan, *names)
    if problems:
        system.close() if isinstance(system, Attached) else _close_quietly(system)
        raise PlanError(problems)
    run = ChaosRun(plan, system, seed=seed, duration=duration, progress=progress)
    try:
        run.run()
    finally:
        run.finish()
    report = run.report()
    if tmp is not None:
        report["injections_file"] = None      # the temporary run directory is gone
        tmp.cleanup()
    return report


def _close_quietly(system: Any) -> None:
    try:
        system.close()
    except Exception:
        pass
