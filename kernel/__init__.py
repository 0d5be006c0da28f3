"""L4Py's kernel: the kernel process and the task-side ABI library.

Layout: the boundary between the kernel process and the tasks is the package boundary.
- `kernel.abi`    the wire format: system-call numbers, errors, rights, one argument record per
                  call (LAYOUTS derived from them), the IPC receipt, the kernel's own messages
- `kernel.osutil` small host helpers both sides use (pidfds, parent death, one-shot requests)
- `kernel.core`   the kernel process (`python -m kernel`); nothing outside `kernel/` imports it.
  Listed bottom up: each imports only modules listed before it (tests/kernel/test_layers.py).
  - `objects`     kernel objects: Task, Thread, Gate, Factory, KernelCtl
  - `trace`       the IPC trace: a bounded ring of events, off by default (TRACE)
  - `caps`        capability spaces and the mapping database (derive, grant, recursive revoke)
  - `state`       the kernel's state: object tables, secrets, timers, counters; how a call ends
                  (answer, finish, and `fail`: every error answer counted once); the `Wire`
                  interface through which mechanisms reach the transport
  - `irq`         IRQ objects: attach, trigger, deliver, mask/unmask, detach
  - `ipc`         rendezvous IPC: send/wait/call/reply, kernel-originated messages
  - `lifecycle`   quotas, object destruction, task death
  - `frames`      physical RAM: one memfd per frame in the kernel's view; the per-task memory
                  channel (SCM_RIGHTS) and control page; /proc checks of what a process holds
  - `memory`      page tables, flexpage map/grant/unmap, shootdown and revocation of frames
  - `pagefault`   MEM_FAULT: TLB refills, the pager's kernel call and its continuations
  - `faults`      the chaos fault table: IPC faults injected on chosen gates (FAULT)
  - `linux`       L⁴Linux processes: seccomp listeners taken from host processes, each
                  trapped system call a call to the task's handler; their memory (LINUX_*)
  - `fastpath`    the common call / reply_and_wait done inline, same semantics; compiled
                  (`_fastpath.pyx`, built by the install when it can be) or in Python
  - `syscalls`    the dispatch table: one thin, check-first handler per system call; `run`
  - `hybrid`      hybrid processes: a Linux process's L4 calls, made as its task's thread
  - `alien`       alien threads: each call reported to the handler before and after it runs
  - `waitset`     the event loop's wait: one epoll set for every socket and descriptor
  - `transport`   the process: ports (ZeroMQ), HELLO, death detection, the event loop, `main`
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
