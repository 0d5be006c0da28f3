"""The personality's own protocol (`l4run linux run`, `ps`): declared once.

- `run(argv, env, cwd)`: start a Linux process running `argv` (argv[0] a path in the
  personality's root file system, or a name looked up in /bin), its stdin /dev/null-like
  (EOF), stdout and stderr collected; the reply comes when it exits: its wait status word
  as the shell shows it (`status`: exit code or 128 + signal), the output, its Linux pid.
- `ps()`: the Linux processes: pid, ppid, state, comm, argv, task id.
- `stats()`: counters: system calls served, CONTINUEd, blocked, faults (-EFAULT answers),
  bugs (handler exceptions answered -EINVAL), unknown numbers seen.

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
], tag=0x4C58)
