"""The root task's own entry: load an image, boot it, supervise it — and nothing else.

    python -m launcher.root IMAGE [--run-dir DIR] [--exec-spawn]

What `l4run boot --detach` starts in the background and what the foreground `l4run boot`
becomes (`--plain`, or without a terminal: it execs this) or runs beside its live table.

Mechanism: validate IMAGE (launcher/image.py), start the kernel, the spawner and the tasks
(launcher/system.py `Launcher`), print the host's protections once, then serve: the
control socket, the supervisor, the restarts, until `l4run down`, SIGINT, SIGTERM or
SIGHUP, then shut everything down. Events go to stderr as `[l4run] ...` lines (the
detached boot points stderr at RUN_DIR/launcher.log).
Contract: the root task is in every task's trusted computing base (launcher/tcb.py), so
this module imports only what loading and supervising need: no command-line or
terminal library (click, rich), no psutil (launcher/proc.py reads /proc), none of the
`l4run` command modules; tests/launcher/test_root.py checks the modules a booted root
really holds, through the control command `modules` this entry adds. Exit status 0 after
a shutdown, 1 with one line `l4run: ...` on stderr when IMAGE is invalid or the boot fails
(nothing is left running then).
Ownership: the process's main thread runs everything `Launcher` says its main thread does.
"""
from __future__ import annotations

import os
import sys
from typing import Any

from kernel.osutil import freeze_heap

from .image import ImageError, load_image
from .system import BootError, Launcher

ENV_RUN_DIR = "L4PY_RUN_DIR"
USAGE = "usage: python -m launcher.root IMAGE [--run-dir DIR] [--exec-spawn]"


class Root(Launcher):
    """The launcher as the root task's process runs it, with one debug command more."""

    def cmd_modules(self) -> dict[str, Any]:
        """The modules this process has loaded, with their files: what tcb.py counts."""
        mods = dict(sys.modules)
        return {"modules": sorted(mods),
                "files": sorted({f for m in mods.values()
                                 if isinstance(f := getattr(m, "__file__", None), str)})}


def default_run_dir(image_name: str, given: str | None) -> str:
    """DIR as given, else $L4PY_RUN_DIR, else ./run/<image name> (what `l4run boot` says)."""
    return os.path.abspath(given or os.environ.get(ENV_RUN_DIR) or os.path.join("run", image_name))


def protection_lines(prot: dict[str, dict[str, Any]],
                     rows: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """The sandbox report (launcher/sandbox.py `probe`) as (line, is it a warning): each
    protection on or OFF with its reason, then every task that is not isolated and why."""
    out = [("protections:", False)]
    out += [(f"  {'on ' if v['on'] else 'OFF'} {key}: {v['why']}", not v["on"])
            for key, v in prot.items()]
    out += [(f"  task {r['name']}: {r['sandbox']}", True) for r in rows
            if r.get("sandbox") and not r["sandbox"].startswith("isolated")]
    return out


def parse(argv: list[str]) -> tuple[str, str | None, bool]:
    """(IMAGE, --run-dir or None, --exec-spawn) from argv; ValueError says what is wrong."""
    image, run_dir, exec_spawn = None, None, False
    args = list(argv)
    while args:
        a = args.pop(0)
        if a == "--exec-spawn":
            exec_spawn = True
        elif a == "--run-dir" and args:
            run_dir = args.pop(0)
        elif a.startswith("--run-dir="):
            run_dir = a.split("=", 1)[1]
        elif a.startswith("-") or image is not None:
            raise ValueError(f"unexpected argument {a!r}")
        else:
            image = a
    if image is None:
        raise ValueError("no IMAGE given")
    return image, run_dir, exec_spawn


def run(image_path: str, run_dir: str | None, exec_spawn: bool) -> int:
    """Boot IMAGE and serve it until shut down; the process's exit status."""
    try:
        img = load_image(image_path)
    except ImageError as e:
        for p in e.problems:
            print(p, file=sys.stderr)
        print(f"l4run: {image_path}: {len(e.problems)} problem(s); nothing was started",
              file=sys.stderr)
        return 1
    rd = default_run_dir(img.name, run_dir)
    launcher = Root(img, rd, exec_mode=exec_spawn)
    try:
        launcher.start_system()
        launcher.add_tasks(img.tasks)
        launcher.event(f"booting '{img.name}' in {rd}")
    except (BootError, OSError) as e:
        launcher.shutdown()
        print(f"l4run: {e}", file=sys.stderr)
        return 1
    print("\n".join(line for line, _ in protection_lines(launcher.protections, [])),
          file=sys.stderr, flush=True)
    freeze_heap()
    launcher.serve()
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        image, run_dir, exec_spawn = parse(sys.argv[1:] if argv is None else argv)
    except ValueError as e:
        print(f"l4run: {e}\n{USAGE}", file=sys.stderr)
        return 2
    return run(image, run_dir, exec_spawn)


if __name__ == "__main__":
    sys.exit(main())
