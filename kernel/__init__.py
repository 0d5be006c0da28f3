"""L4Py's kernel: the kernel process and the task-side ABI library.

Modules (one mechanism each):
- `abi`       the wire format: system-call numbers, errors, rights, layouts (both sides import it)
- `errors`    exceptions of the task library, named by whose fault a failure was
- `caps`      capability spaces and the mapping database (derive, grant, recursive revoke)
- `objects`   kernel objects: Task, Thread, Gate, Irq, Factory, KernelCtl
- `ipc`       rendezvous IPC: send/wait/call/reply, IRQ delivery, kernel-originated messages
- `lifecycle` quotas, object destruction, task death
- `syscalls`  the dispatch table: one thin, check-first handler per system call
- `server`    the kernel process: sockets, authentication, the event loop, alien threads
- `memory`    physical RAM (a memfd), page tables, flexpage map/grant/unmap, faults, shootdown
- `faults`    the chaos fault table: IPC faults injected on chosen gates (FAULT)
- `client`    the synchronous task library (`L4`); `aio` the asyncio one (`AsyncL4`)
- `vm`        the task side of memory: an address-space view with a TLB, page faults on a miss
- `rpc`       server protocols declared once: client stub and server dispatch
- `task`      `python -m kernel.task MODULE:FUNC`: run a function as a task
- `testing`   boot a real kernel and spawn real task processes (tests, benchmarks)

Design principles:
- Identity is given by the kernel, never claimed: a connection becomes a thread only with
  that thread's one-time secret; a receiver sees the gate's label, never the sender's word.
- Check, then act: every request is decoded and checked in full before state changes.
- Rendezvous: no message buffers in the kernel beyond blocked senders.
- Nothing a task sends can crash the kernel; every rejection says why.
"""
