"""Physical RAM, page tables, flexpage map/grant/unmap, page faults and TLB shootdown.

RAM is `frames.Frames`: one memfd per 4 KiB frame, mapped into the kernel's own view; a
task receives the memfd of a frame only when its page table maps it and it touches it
(`deliver`, over its memory channel, `frames.Channel`), read-only for read-only mappings.
The shootdown counters (the kernel's epoch and the task's acknowledged epoch) are in a
control page of the task's own (`frames.Control`). Nothing is ever named in /dev/shm, and
the memory is freed by Linux when the last process holding it exits (docs/MEMORY.md).

The kernel's page table of each task (`AddressSpace.pages`: virtual page -> `MapNode`) is
the single source of truth; a task's TLB only caches it. Every node remembers the node it was
mapped from (`parent`) and the nodes mapped from it (`children`): the memory mapping
database, in the same spirit as `caps`. sigma0's space is the root: it holds every frame
1:1 (`identity`), its nodes are created on first use and are never removed.

Contracts:
- Flexpage items ([kind, vaddr, order, rights]) are checked completely before anything is
  mapped (`plan_items`): alignment, every source page mapped with the rights asked, the
  target inside the receiver's memory window, no target page holding another mapping.
  `do_items` then acts and cannot fail.
- A mapped node never has more rights than its parent.
- `unmap` removes every node derived from the flexpage's nodes, in every task, recursively;
  every affected task's epoch is bumped, and frames it holds but no longer maps are revoked
  (`bump`). The unmapper is answered only when every affected task acknowledged (its
  counter, or it has every thread inside the kernel — not enough when frames are revoked:
  then the kernel also verifies in /proc that its process dropped them, `acked`) — or was
  faulted (its process killed and gone) after SHOOTDOWN_MS (`Shootdown`, which sends the
  signal again every RESIGNAL_MS meanwhile: signals coalesce). Mappings removed because a task died (`reap`) are
  acknowledged lazily: the next unmap also waits for those spaces (`unacked`).
- Page faults (kernel/core/pagefault.py) are answered from these page tables; `deliver`
  first sends the task the frame's memfd if it does not hold it.

Ownership: the kernel's event-loop thread only.
"""
from __future__ import annotations

import os
import signal
import socket
import time
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from . import frames, lifecycle
from ..abi import (MEM_ITEMS, PAGE_SHIFT, SHOOTDOWN_MS, SHOOTDOWN_SIGNAL, VA_BITS, AbiError,
                   Err, Item, MemRights, encode_ok)

RESIGNAL_MS = 10        # a space still not acknowledging an unmap is signalled again this often

if TYPE_CHECKING:
    from .objects import Task, Thread
    from .state import State

DEFAULT_RAM = 64 << 20
_RWX = int(MemRights.RWX)          # plain ints on hot paths: IntFlag arithmetic is slow
MAX_SPACES = 4096                  # attached address spaces at once (control pages)
_PUBLISHED = ("refused_channels", "kept_frames", "faulted_tasks", "granted", "revoked",
              "dma_refused")


class MapNode:
    """One page mapping: `aspace` maps `vpage` to `frame` with `rights`."""
    __slots__ = ("aspace", "vpage", "frame", "rights", "parent", "children")

    def __init__(self, aspace: "AddressSpace", vpage: int, frame: int, rights: int,
                 parent: "MapNode | None") -> None:
        self.aspace = aspace
        self.vpage = vpage
        self.frame = frame
        self.rights = rights
        self.parent = parent
        self.children: list[MapNode] = []
        if parent is not None:
            parent.children.append(self)


class AddressSpace:
    """The page table of one task, and what its process holds of RAM (`hold`)."""

    def __init__(self, task: "Task") -> None:
        self.task = task
        self.pages: dict[int, MapNode] = {}
        self.identity = 0           # sigma0: frames 0..identity-1 are mapped 1:1
        self.epoch = 1
        self.signal = False         # its vm library asked for SHOOTDOWN_SIGNAL
        self.hold = frames.Holding()    # what its process holds of RAM, and its channel

    def node(self, vpage: int) -> MapNode | None:
        n = self.pages.get(vpage)
        if n is None and vpage < self.identity:
            n = self.pages[vpage] = MapNode(self, vpage, vpage, _RWX, None)
        return n

    @property
    def name(self) -> str:
        return self.task.name

    # MEM_DMA (syscalls) sets and reads these through the space.
    @property
    def dma(self) -> bool:
        return self.hold.dma

    @dma.setter
    def dma(self, on: bool) -> None:
        self.hold.dma = on

    @property
    def chan(self) -> socket.socket | None:
        return self.hold.chan


def _pages(vaddr: int, order: int) -> range:
    first = vaddr >> PAGE_SHIFT
    return range(first, first + (1 << (order - PAGE_SHIFT)))


class _Where:
    """Names an item in an error; formatted only if there is an error."""
    __slots__ = ("i", "vaddr", "order", "task")

    def __init__(self, i: int, vaddr: int, order: int, task: str) -> None:
        self.i, self.vaddr, self.order, self.task = i, vaddr, order, task

    def __str__(self) -> str:
        return f"memory item {self.i} [0x{self.vaddr:x}, order {self.order}] of task '{self.task}'"

    __format__ = lambda self, spec: str(self)  # noqa: E731


def check_fpage(vaddr: int, order: int, what: object = "flexpage") -> None:
    if not PAGE_SHIFT <= order <= VA_BITS:
        raise AbiError(Err.INVALID, f"{what} order {order} outside {PAGE_SHIFT}..{VA_BITS}")
    if vaddr < 0 or vaddr & ((1 << order) - 1) or vaddr + (1 << order) > 1 << VA_BITS:
        raise AbiError(Err.INVALID, f"{what} at 0x{vaddr:x} is not naturally aligned to its "
                                    f"size 2**{order} inside the address space")


class Memory:
    """All address spaces of the kernel, keyed by task id."""

    def __init__(self, k: "State", size: int) -> None:
        self.k = k
        self.ram = frames.Frames(size)
        self.channel = frames.Channel(k.run_dir, self._channel_peer)
        self.spaces: dict[int, AddressSpace] = {}
        self.tokens: dict[bytes, AddressSpace] = {}
        self.attached = 0
        self._deaths = 0
        self.unacked: dict[AddressSpace, int] = {}   # reaped from, not yet acknowledged
        self.stats = {"faults": 0, "refills": 0, "maps": 0, "unmaps": 0, "shootdowns": 0,
                      "faulted_tasks": 0, "granted": 0, "revoked": 0, "refused_channels": 0,
                      "kept_frames": 0, "dma_checks": 0, "dma_refused": 0}
        # What a hostile task tried is counted where KERNEL_INFO shows it (stats.mem_*).
        k.stats.update({f"mem_{key}": 0 for key in _PUBLISHED})

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] += n
        if key in _PUBLISHED:
            self.k.stats[f"mem_{key}"] += n

    def close(self) -> None:
        for a in list(self.spaces.values()) + list(self.unacked):
            a.hold.close()
        self.channel.close()
        self.ram.close()

    # -- address spaces ------------------------------------------------------
    def space(self, task: "Task") -> AddressSpace:
        self.reap()
        a = self.spaces.get(task.id)
        if a is None:
            a = self.spaces[task.id] = AddressSpace(task)
        return a

    # -- the memory channel (frames.py) ----------------------------------------------
    def attach(self, task: "Task", signal_: bool) -> dict[str, Any]:
        """MEM_ATTACH (checked by the caller): a token for the channel. The control page is
        made when the channel connects: a task that never connects costs no descriptor."""
        a = self.space(task)
        a.signal = signal_
        if not a.hold.attached:
            if self.attached >= MAX_SPACES:
                raise AbiError(Err.QUOTA, f"{MAX_SPACES} address spaces attached already")
            self.attached += 1
            a.hold.attached = True
        if a.hold.chan is not None:
            raise AbiError(Err.BUSY, f"task '{task.name}' is attached already")
        if a.hold.token is not None:
            self.tokens.pop(a.hold.token, None)
        a.hold.token = self.channel.token()
        self.tokens[a.hold.token] = a
        return {"channel": self.channel.path, "token": a.hold.token, "kernel_pid": os.getpid(),
                "size": self.ram.size, "frames": self.ram.frames, "epoch": a.epoch,
                "dma": a.hold.dma}

    def _channel_peer(self, token: bytes, pid: int, conn: socket.socket) -> bool:
        """A connection to mem.sock presented `token` from process `pid`: is it the task's?"""
        a = self.tokens.get(token)
        if a is None or not a.task.alive or a.task.pid is None or pid != a.task.pid:
            self.count("refused_channels")
            return False
        del self.tokens[token]
        a.hold.token = None
        a.hold.ctl = frames.Control(f"l4py-ctl-{os.getpid()}")
        a.hold.set_epoch(a.epoch)
        if not a.hold.connect(conn, pid, self.ram):
            return False
        if a.hold.dma:
            self.count("granted", len(a.hold.held))
        return True

    def deliver(self, a: AddressSpace, frame: int, rights: int) -> None:
        """The task is about to use `frame` with `rights`: make sure it holds its file.
        Read-only mappings get an O_RDONLY descriptor (never mmap-able writable)."""
        try:
            if a.hold.give(self.ram, frame, rights):
                self.count("granted")
        except OSError as e:
            # It does not read what it asked for (or is gone): a protocol violation.
            self.fault_task(a, f"its memory channel refused a frame ({e.strerror})")
            raise AbiError(Err.PEER_DIED, f"task '{a.name}' was faulted") from None

    def _stale(self, a: AddressSpace) -> list[int]:
        """Frames `a` holds that its page table no longer maps with the rights held."""
        if not a.hold.held or a.hold.dma:
            return []
        held = a.hold.held
        cover: dict[int, int] = {}
        for n in a.pages.values():
            if n.frame in held:
                cover[n.frame] = cover.get(n.frame, 0) | n.rights
        ident = a.identity
        return [f for f, r in held.items()
                if (cover.get(f, 0) | (_RWX if f < ident else 0)) & r != r]

    def fault_task(self, a: AddressSpace, reason: str) -> None:
        """Fault (kill) a task that may still reach frames it lost: its process is killed
        and gone before this returns, so the frames can be reused."""
        self.count("faulted_tasks")
        a.hold.kill()
        if a.task.alive:
            lifecycle.kill_task(self.k, a.task, reason, None)

    def reap(self) -> None:
        """Unmap everything of tasks that died (their derived mappings elsewhere too).

        Runs at the start of every memory operation; O(1) unless a task died since the last
        run (deaths = tasks created - tasks in the table)."""
        k = self.k
        deaths = k.stats["tasks_created"] - len(k.tasks)
        if deaths == self._deaths:
            return
        self._deaths = deaths
        dead = [a for a in self.spaces.values() if not a.task.alive]
        for a in dead:
            affected: set[AddressSpace] = set()
            for n in list(a.pages.values()):
                _remove(n, True, affected)
            a.pages.clear()
            del self.spaces[a.task.id]
            if a.hold.token is not None:
                self.tokens.pop(a.hold.token, None)
            if a.hold.attached:
                self.attached -= 1
            self.bump(affected - {a})
            # Nobody waits for these acknowledgements now (the kernel made the unmap); the
            # next unmap does, before the frames can go to anyone else (`unmap`).
            self.unacked.update((s, s.epoch) for s in affected - {a})
            # The dead task's process may outlive the task (OBJ_DESTROY): what it held is
            # verified gone before those frames can be reused, like any revocation.
            held = {f: self.ram.ident(f) for f in a.hold.held} if not a.hold.dma else {}
            a.hold.held.clear()
            a.hold.revoking.update(held)
            if a.hold.revoking and a.hold.pidfd is not None:
                self.unacked[a] = a.epoch
            else:
                a.hold.close()

    # -- flexpage items: check, then act ---------------------------------------
    def plan_items(self, src: "Task | None", items: Iterable[Sequence[int]], dst: "Task",
                   window: Sequence[int] | None, hotspot: int | None = None) -> list[Any]:
        """Check every memory item; map nothing. `window` is (vaddr, order) or None."""
        mine = [it for it in items if it[0] in MEM_ITEMS]
        if not mine:
            return []
        if src is None:
            raise AbiError(Err.INVALID, "kernel messages carry no memory items")
        if window is None:
            raise AbiError(Err.INVALID, f"task '{dst.name}' opened no memory receive window")
        if not dst.alive:
            raise AbiError(Err.PEER_DIED, f"task '{dst.name}' is gone")
        self.reap()
        sa, da = self.space(src), self.space(dst)
        wbase, worder = window
        plan = []
        taken: set[int] = set()
        for i, (kind, vaddr, order, rights) in enumerate(mine):
            where = _Where(i, vaddr, order, src.name)
            check_fpage(vaddr, order, where)
            if rights & ~_RWX or not rights:
                raise AbiError(Err.INVALID, f"{where}: rights {rights:#x} are not a non-empty "
                                            f"subset of r/w/x")
            if order > worder:
                raise AbiError(Err.INVALID, f"{where} is larger than the receive window "
                                            f"[0x{wbase:x}, order {worder}] of task '{dst.name}'")
            if kind == Item.GRANT_MEM and sa.identity:
                raise AbiError(Err.INVALID, f"{where}: sigma0 maps its frames, it cannot grant them")
            hot = vaddr if hotspot is None else hotspot
            target = wbase + (hot & ((1 << worder) - 1) & ~((1 << order) - 1))
            steps = []
            for sp, dp in zip(_pages(vaddr, order), _pages(target, order)):
                node = sa.node(sp)
                if node is None:
                    raise AbiError(Err.INVALID, f"{where}: the sender has no mapping at "
                                                f"0x{sp << PAGE_SHIFT:x}")
                if node.rights & rights != rights:
                    raise AbiError(Err.NO_RIGHTS, f"{where}: the sender's page 0x"
                                                  f"{sp << PAGE_SHIFT:x} has rights "
                                                  f"{MemRights(node.rights)!r}, not {MemRights(rights)!r}")
                if dp in taken:
                    raise AbiError(Err.INVALID, f"{where} overlaps another item at the receiver")
                taken.add(dp)
                old = da.pages.get(dp) or (da.node(dp) if da.identity else None)
                if old is not None and not (kind == Item.MAP_MEM and old.parent is node) \
                        and old is not node:
                    raise AbiError(Err.BUSY, f"{where}: task '{dst.name}' already has another "
                                             f"mapping at 0x{dp << PAGE_SHIFT:x}; unmap it first")
                steps.append((node, dp, old))
            plan.append((kind, target, order, rights, steps))
        return [(sa, da, plan)]

    def do_items(self, plans: list[Any]) -> list[list[int]]:
        out: list[list[int]] = []
        for sa, da, plan in plans:
            changed = False
            for kind, target, order, rights, steps in plan:
                for node, dp, old in steps:
                    if kind == Item.MAP_MEM:
                        if old is not None:         # the same mapping again: new rights
                            changed |= bool(old.rights & ~(node.rights & rights))
                            old.rights = node.rights & rights
                        else:
                            da.pages[dp] = MapNode(da, dp, node.frame, node.rights & rights, node)
                    else:
                        if sa.pages.get(node.vpage) is node:
                            del sa.pages[node.vpage]
                        node.aspace, node.vpage = da, dp
                        node.rights &= rights
                        da.pages[dp] = node
                self.stats["maps"] += len(steps)
                out.append([int(kind), target, order, rights])
                if kind == Item.GRANT_MEM:
                    self.bump([sa])
            if changed:
                self.bump([da])
        return out

    # -- unmap and shootdown -----------------------------------------------------
    def unmap(self, task: "Task", vaddr: int, order: int, self_too: bool) -> tuple[int, set[AddressSpace]]:
        """Remove every mapping derived from the flexpage (and ours with `self_too`)."""
        check_fpage(vaddr, order, "unmap flexpage")
        self.reap()
        a = self.space(task)
        affected: set[AddressSpace] = set()
        count = 0
        for vp in _pages(vaddr, order):
            node = a.pages.get(vp)
            if node is None:
                continue
            count += _remove(node, self_too and node.parent is not None, affected)
        self.stats["unmaps"] += count
        self.bump(affected)
        # Spaces that lost mappings when a task died and have not acknowledged yet: the
        # memory they saw goes back to its owner, who unmaps it before handing it out again
        # (sigma0 and moe do), so this unmap waits for them too.
        self.unacked = {s: e for s, e in self.unacked.items() if not self.acked(s)}
        affected |= set(self.unacked)
        return count, affected

    def bump(self, spaces: Iterable[AddressSpace]) -> None:
        """Tell each space its TLB is stale: a new epoch, and a signal if it asked for one.
        Frames it holds but no longer maps are revoked (a REVOKE message sent before the
        epoch moves, so a task that sees the new epoch finds the list on its channel)."""
        for a in spaces:
            if not a.task.alive:
                continue
            a.epoch += 1
            stale = self._stale(a)
            if stale:
                a.hold.take(self.ram, a.epoch, stale)
                self.count("revoked", len(stale))
            a.hold.set_epoch(a.epoch)
            self.nudge(a)

    def nudge(self, a: AddressSpace) -> None:
        """SHOOTDOWN_SIGNAL to the space's process, if its vm library asked for it."""
        if a.signal and a.task.pid:
            try:
                os.kill(a.task.pid, SHOOTDOWN_SIGNAL)
            except ProcessLookupError:
                pass

    def acked(self, a: AddressSpace) -> bool:
        """The space can no longer use a stale TLB entry, nor reach a frame it lost.

        Frames being revoked need the task's acknowledgement of the revoking epoch (being
        inside the kernel is no excuse: its mappings are real) and then the proof: its
        process neither maps nor holds any of them (/proc/PID/maps, /proc/PID/fd). A task
        that acknowledged and still holds one lied: it is faulted at once."""
        if a.hold.revoking:
            if a.task.alive and a.hold.ack() < a.hold.revoke_epoch:
                return False
            if not self._verified(a):
                if not a.task.alive:
                    return False         # its process outlives the task: wait, or kill later
                self.count("kept_frames")
                self.fault_task(a, "it acknowledged a TLB shootdown but kept the frames")
                return True
        if not a.task.alive:
            return True
        if a.hold.ack() >= a.epoch:
            return True
        # Every thread is inside the kernel: it re-checks its epoch before the next access.
        return all(t.busy or not t.alive or t.conn is None for t in a.task.threads)

    def _verified(self, a: AddressSpace) -> bool:
        """Its process maps and holds none of what is being revoked (then that is done)."""
        if not a.hold.verified(a.task.pid):
            return False
        if not a.task.alive:
            a.hold.close()
        return True

    # -- the IOMMU -------------------------------------------------------------------
    def dma_check(self, task: "Task", ranges: list[tuple[int, int, bool]]) -> dict[str, Any]:
        """May a device whose DMA domain is `task` access these physical ranges? Only frames
        the task's page table maps now, with W where the device writes memory (R where it
        reads). Answers {"ok": True, "pages": n}; else NO_RIGHTS naming the first page the
        task does not map so (checked first, nothing changes: the DMA engine then refuses
        the command). The page table is read as it is at this call: an unmap that returns
        later is seen by the next check (the DMA engine checks every command)."""
        a = self.space(task)
        cover: dict[int, int] = {}
        for n in a.pages.values():
            cover[n.frame] = cover.get(n.frame, 0) | n.rights
        pages = 0
        for addr, length, write in ranges:
            if length <= 0 or addr < 0 or addr + length > self.ram.size:
                raise AbiError(Err.INVALID, f"DMA range {addr:#x}+{length:#x} is not inside RAM "
                                            f"({self.ram.size:#x} bytes)")
            want = MemRights.W if write else MemRights.R
            for f in range(addr >> PAGE_SHIFT, (addr + length - 1 >> PAGE_SHIFT) + 1):
                have = cover.get(f, 0) | (_RWX if f < a.identity else 0)
                if not have & want:
                    self.count("dma_refused")
                    raise AbiError(Err.NO_RIGHTS, f"frame {f:#x} is not mapped "
                                                  f"{'writable' if write else 'readable'} in task "
                                                  f"'{a.name}', the device's DMA domain")
                pages += 1
        self.count("dma_checks")
        return {"ok": True, "pages": pages}

    # -- queries -------------------------------------------------------------------
    def query(self, task: "Task", vaddr: int, order: int) -> list[list[int]]:
        check_fpage(vaddr, order, "query flexpage")
        a = self.space(task)        # reaps the dead first
        if order - PAGE_SHIFT > 20:
            raise AbiError(Err.TOO_BIG, "query at most 2**20 pages at once")
        out = []
        for vp in _pages(vaddr, order):
            n = a.pages.get(vp) or (a.node(vp) if vp < a.identity else None)
            if n is not None:
                out.append([vp << PAGE_SHIFT, n.frame, n.rights])
        return out


def _remove(node: MapNode, include_self: bool, affected: set[AddressSpace]) -> int:
    """Remove `node`'s subtree (and `node` with `include_self`). Answers the count removed."""
    stack = list(node.children)
    node.children = []
    count = 0
    while stack:
        n = stack.pop()
        if n.aspace.pages.get(n.vpage) is n:
            del n.aspace.pages[n.vpage]
        affected.add(n.aspace)
        stack.extend(n.children)
        n.children = []
        n.parent = None
        count += 1
    if include_self:
        if node.parent is not None:
            try:
                node.parent.children.remove(node)
            except ValueError:
                pass
            node.parent = None
        if node.aspace.pages.get(node.vpage) is node:
            del node.aspace.pages[node.vpage]
        affected.add(node.aspace)
        count += 1
    return count


class Shootdown:
    """An unmapper waiting for every affected space to acknowledge (polled every ms)."""

    def __init__(self, mem: Memory, thread: "Thread", result: Any,
                 spaces: set[AddressSpace]) -> None:
        self.mem = mem
        self.thread = thread
        self.result = result
        self.spaces = {a: a.epoch for a in spaces}
        now = time.monotonic()
        self.deadline = now + SHOOTDOWN_MS / 1000.0
        self.resend = now + RESIGNAL_MS / 1000.0
        self.waiting: list[AddressSpace] = []   # not acknowledged at the last _settle

    def start(self) -> bool:
        """True if done at once; otherwise the thread is polled by a 1 ms kernel timer."""
        if self._settle(False):
            return True
        self._arm()
        return False

    def _arm(self) -> None:
        th = self.thread
        th.mem_wait = self.tick
        self.mem.k.timers.add(1, th, th.set_state(th.state))

    def _settle(self, final: bool) -> bool:
        waiting = self.waiting = [a for a in self.spaces if not self.mem.acked(a)]
        if not waiting:
            return True
        if not final:
            return False
        for a in waiting:
            self.mem.fault_task(a, f"did not acknowledge a TLB shootdown within "
                                   f"{SHOOTDOWN_MS} ms")
            self.mem.unacked.pop(a, None)
            if not a.task.alive:
                a.hold.revoking.clear()
                a.hold.close()
        self.mem.reap()
        return True

    def tick(self, k: "State") -> None:
        th = self.thread
        th.mem_wait = None
        if not th.alive:
            return
        now = time.monotonic()
        if self._settle(now >= self.deadline):
            k.finish(th, encode_ok(self.result))
            return
        if now >= self.resend:
            # Signals coalesce, and one landing while the task's handler runs for the epoch
            # before can be consumed without a second run: ask again, as a kernel re-sends
            # an IPI, until it acknowledges or the deadline faults it.
            self.resend = now + RESIGNAL_MS / 1000.0
            for a in self.waiting:
                self.mem.nudge(a)
        self._arm()


def install(k: "State", size: int) -> Memory:
    signal.SIGUSR2  # documented: SHOOTDOWN_SIGNAL
    assert SHOOTDOWN_SIGNAL == int(signal.SIGUSR2)
    return Memory(k, size)
