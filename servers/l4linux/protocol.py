"""The personality's own protocol (`l4run linux run`, `ps`): declared once.

- `run(argv, env, cwd)`: start a Linux process running `argv` (argv[0] a path in the
  personality's root file system, or a name looked up in /bin), its stdin /dev/null-like
  (EOF), stdout and stderr collected; the reply comes when it exits: its wait status word
  as the shell shows it (`status`: exit code or 128 + signal), the output, its Linux pid.
- `ps()`: the Linux processes: pid, ppid, state, comm, argv, task id.
- `console_open(argv, env, rows, cols)`: the console (`l4run console`): a terminal
  (`tty.Tty`) with `argv` (default `sh`) started on it as a session leader in the
  foreground; with an empty argv and a console whose program still runs, that one again
  (re-attach). The attachment's `id` (a re-attach gets a new one; the old id's calls then
  no longer reach the terminal) and the program's pid.
- `console_read(id)`: what the terminal has for the screen; the reply waits until there
  is something. `status` is -1 while the program runs, -2 once another reader took over or
  the reader detached, else the program's exit status (the terminal is then gone).
- `console_write(id, data)`: typed bytes, through the line discipline.
- `console_size(id, rows, cols)`: the window size (SIGWINCH to the foreground group).
- `console_detach(id)`: the reader leaves; the program goes on (its output is kept).
- `stats()`: counters: system calls served, CONTINUEd, blocked, faults (-EFAULT answers),
  bugs (handler exceptions answered -EINVAL), unknown numbers seen, and `by_nr`: the
  calls received by number (a string key per number).

The same gate receives the kernel's LINUX calls and exit notices (negative protos); the
server tells them apart by proto (kernel/abi.py `Proto`).
"""
from __future__ import annotations

from kernel.user.rpc import Protocol, op

LINUX = Protocol("l4linux", [
    op("run", 1, ["argv:list", "env:list", "cwd:str"], ("status", "output", "pid"),
       errors=["NOT_FOUND", "NOEXEC"]),
    op("ps", 2, [], "procs"),
    op("stats", 3, [], "stats"),
    op("console_open", 4, ["argv:list", "env:list", "rows:int", "cols:int"], ("id", "pid"),
       errors=["NOT_FOUND", "NOEXEC"]),
    op("console_read", 5, ["id:int"], ("data", "status"), errors=["NOT_FOUND"]),
    op("console_write", 6, ["id:int", "data:bytes"], None, errors=["NOT_FOUND"]),
    op("console_size", 7, ["id:int", "rows:int", "cols:int"], None, errors=["NOT_FOUND"]),
    op("console_detach", 8, ["id:int"], None, errors=["NOT_FOUND"]),
], tag=0x4C58)
