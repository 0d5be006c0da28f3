"""L4Py's kernel: the kernel process and the task-side ABI library.

Layout: the boundary between the kernel process and the tasks is the package boundary.
- `kernel.abi`    the wire format: system-call numbers, errors, rights, layouts (both sides)
- `kernel.osutil` small host helpers both sides use (pidfds, parent death, one-shot requests)
- `kernel.core`   the kernel process (`python -m kernel`); nothing outside `kernel/` imports it
  - `kernel`      the process: sockets, authentication, the event loop, alien threads
  - `objects`     kernel objects: Task, Thread, Gate, Irq, Factory, KernelCtl
  - `caps`        capability spaces and the mapping database (derive, grant, recursive revoke)
  - `ipc`         rendezvous IPC: send/wait/call/reply, IRQ delivery, kernel-originated messages
  - `fastpath`    the common call / reply_and_wait done inline, same semantics
  - `lifecycle`   quotas, object destruction, task death
  - `syscalls`    the dispatch table: one thin, check-first handler per system call
  - `memory`      physical RAM (a memfd), page tables, flexpage map/grant/unmap, faults, shootdown
  - `faults`      the chaos fault table: IPC faults injected on chosen gates (FAULT)
- `kernel.user`   the task library: what servers, the HAL and the launcher import
  - `client`      the synchronous task library (`L4`, `MultiWait`); `aio` the asyncio one
  - `errors`      exceptions of the task library, named by whose fault a failure was
  - `vm`          an address-space view with a TLB, page faults on a miss
  - `rpc`         server protocols declared once: client stub and server dispatch
  - `spawn`       create and wire a task, its process's environment and argv (one path for
                  the launcher and `testing`)
  - `task`        `python -m kernel.user.task MODULE:FUNC`: run a function as a task
  - `testing`     boot a real kernel and spawn real task processes (tests, benchmarks)

Design principles:
- Identity is given by the kernel, never claimed: a connection becomes a thread only with
  that thread's one-time secret; a receiver sees the gate's label, never the sender's word.
- Check, then act: every request is decoded and checked in full before state changes.
- Rendezvous: no message buffers in the kernel beyond blocked senders.
- Nothing a task sends can crash the kernel; every rejection says why.
"""
