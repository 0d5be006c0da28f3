"""moe: dataspaces (memory objects), region maps, and the pager of its clients.

Memory comes from sigma0 in 1 MiB blocks (chunks) mapped into moe's pool (POOL_BASE +
physical address); moe hands out single pool pages, and gives a chunk back to sigma0 as soon
as every page of it is free again (so sigma0's free count tells what moe really uses). A dataspace is a size, an owner session and a
page table index -> pool page, filled on demand: the first touch of a page allocates and
zeroes it (demand paging). `copy` makes a copy-on-write clone: both share the pages, mapped
read-only, until one side writes; then moe copies the page, unmaps the shared one from every
client (they re-fault and find their own page) and maps the copy writable.

Each client has a session gate (label SESSION|n) that is both its moe capability and its
pager gate: a page fault names the session by its label, the region map of that session
finds the dataspace and page. Dataspaces are named by their own gates (DATASPACE|n):
passing that capability to another task lets it attach the same memory (sharing).
Quota: each session may hold dataspaces totalling at most its quota in bytes.

Death of a client: moe cannot see it; the launcher, which supervises every task, calls
`client_gone(n)` on the admin gate. Moe then releases every dataspace the session owns
(pages unmapped from every task, sharers' regions of it dropped, its gate destroyed so every
copy of its capability dies), drops the session's regions and destroys the session gate; the
quota is gone with the session, and wholly free chunks go back to sigma0.

Protocols: servers/moe/protocol.py (MOE_ADMIN, MOE_SESSION, MOE_DATASPACE), served by
`kernel.user.rpc.serve`; `Moe.route` picks one by the gate's label, each kind of gate has a
small class of ops (AdminOps, SessionOps, DataspaceOps) over the one `Moe` state.

Ownership: single-threaded; all state below belongs to the serving loop.
"""
from __future__ import annotations

import sys
from typing import Any, cast

from kernel.abi import PAGE_SHIFT, PAGE_SIZE, MemRights
from kernel.user.client import Message, map_cap
from kernel.user.errors import QuotaExceeded
from kernel.user.rpc import ADMIN_LABEL, Call, RemoteError, Reply, Route, RpcError, serve
from kernel.user.vm import VM, map_mem, window

from ..sigma0.protocol import SIGMA0
from .protocol import DATASPACE, MOE_ADMIN, MOE_DATASPACE, MOE_SESSION, SESSION

POOL_BASE, POOL_ORDER = 1 << 39, 39      # sigma0 blocks land at POOL_BASE + phys
CHUNK_ORDER = 20
REGION_BASE = 1 << 32                    # where attach puts regions by default
RECV_SLOT = 4000                         # where capabilities sent to us arrive
MAX_QUOTA = 1 << 40                      # bytes one session may be given


class Dataspace:
    def __init__(self, ident: int, size: int, owner: "Session", gate: int, gate_id: int) -> None:
        self.id = ident
        self.size = size
        self.owner = owner
        self.gate = gate            # our slot of its gate
        self.gate_id = gate_id      # the kernel object id (checks capabilities sent to us)
        self.pages: dict[int, int] = {}     # page index -> pool vaddr


class Region:
    def __init__(self, start: int, size: int, ds: Dataspace, rights: int) -> None:
        self.start, self.size, self.ds, self.rights = start, size, ds, rights


class Session:
    def __init__(self, ident: int, name: str, quota: int) -> None:
        self.id, self.name, self.quota = ident, name, quota
        self.used = 0
        self.gate = 0               # our slot of its session gate
        self.regions: list[Region] = []


class Moe:
    def __init__(self, l4: Any) -> None:
        self.l4 = l4
        self.vm = VM(l4)
        # stub ops are attributes made from the declaration: the checker sees them as Any
        self.sigma0 = cast(Any, SIGMA0.client(l4, l4.caps["sigma0"]))
        self.chunks: dict[int, list[int]] = {}  # chunk pool vaddr -> its free pages
        self.pool_pages = 0
        self.next_session = 1                   # numbers are never reused (labels stay unique)
        self.next_ds = 1
        self.refs: dict[int, int] = {}          # pool page -> dataspaces holding it
        self.sessions: dict[int, Session] = {}
        self.spaces: dict[int, Dataspace] = {}

    # -- the pool ------------------------------------------------------------
    @property
    def free_pages(self) -> int:
        return sum(len(f) for f in self.chunks.values())

    def _page(self) -> int:
        for free in self.chunks.values():
            if free:
                break
        else:
            try:
                self.sigma0.alloc(CHUNK_ORDER, _window=window(POOL_BASE, POOL_ORDER))
            except RemoteError as e:
                raise RpcError("QUOTA", f"sigma0 has no more memory: {e.reason}") from None
            _, base, order, _ = self.sigma0.last_items[0]
            n = 1 << (order - PAGE_SHIFT)
            free = self.chunks[base] = [base + i * PAGE_SIZE for i in range(n - 1, -1, -1)]
            self.pool_pages += n
        page = free.pop()
        self.refs[page] = 1
        return page

    def _drop(self, page: int, unmap: bool = False) -> None:
        """One dataspace less holds `page`; the last one frees it (`unmap`: unmap it anyway,
        so no task keeps it through a dataspace that is going away)."""
        self.refs[page] -= 1
        if self.refs[page] == 0:
            del self.refs[page]
            self.l4.mem_unmap(page, PAGE_SHIFT)      # out of every client, then reuse
            chunk = page & ~((1 << CHUNK_ORDER) - 1)
            free = self.chunks[chunk]
            free.append(page)
            if len(free) == 1 << (CHUNK_ORDER - PAGE_SHIFT):
                self._give_back(chunk)
        elif unmap:
            self.l4.mem_unmap(page, PAGE_SHIFT)      # sharers of a copy re-fault

    def _give_back(self, chunk: int) -> None:
        """A wholly free chunk goes back to sigma0 (which unmaps it from us)."""
        try:
            self.sigma0.free(chunk - POOL_BASE, CHUNK_ORDER)
        except RemoteError as e:    # keep it: still ours, still usable
            print(f"[moe] sigma0 refused block 0x{chunk - POOL_BASE:x}: {e.reason}",
                  file=sys.stderr, flush=True)
            return
        del self.chunks[chunk]
        self.pool_pages -= 1 << (CHUNK_ORDER - PAGE_SHIFT)
        self.vm.flush()

    # -- dataspaces -------------------------------------------------------------
    def _new_ds(self, s: Session, size: int) -> Dataspace:
        if size <= 0 or size > 1 << 34:
            raise RpcError("INVALID", f"size {size} outside 1..16 GiB")
        size = -(-size // PAGE_SIZE) * PAGE_SIZE
        if s.used + size > s.quota:
            raise RpcError("QUOTA", f"session '{s.name}': {s.used} of {s.quota} bytes used, "
                                    f"{size} more asked")
        ident = self.next_ds
        self.next_ds += 1
        gate = self.l4.create_gate(DATASPACE | ident)
        ds = Dataspace(ident, size, s, gate, self.l4.cap_inspect(gate)["id"])
        s.used += size
        self.spaces[ident] = ds
        return ds

    def cap_ds(self, call: Call) -> Dataspace:
        """The dataspace named by the capability that came with the request (then drop the
        cap). The dispatch saw to it that one came (the op declares caps_in=1)."""
        slot = call.items[0][1]
        try:
            insp = self.l4.cap_inspect(slot)
        finally:
            self.l4.cap_delete(slot)
        ds = self.spaces.get(insp.get("label", 0) ^ DATASPACE)
        if ds is None or insp.get("id") != ds.gate_id:
            raise RpcError("NO_CAP", "that capability is not a live moe dataspace")
        return ds

    def alloc(self, s: Session, size: int) -> tuple[dict, list]:
        ds = self._new_ds(s, size)
        return {"ds": ds.id, "size": ds.size}, [map_cap(ds.gate, 0x5)]   # invoke + grant

    def copy(self, s: Session, src: Dataspace) -> tuple[dict, list]:
        ds = self._new_ds(s, src.size)
        ds.pages = dict(src.pages)
        for page in ds.pages.values():
            self.refs[page] += 1
            self.l4.mem_unmap(page, PAGE_SHIFT)      # writers must fault: now copy-on-write
        return {"ds": ds.id, "size": ds.size}, [map_cap(ds.gate, 0x5)]

    def release(self, s: Session, ds: Dataspace) -> None:
        if ds.owner is not s:
            raise RpcError("NO_RIGHTS", f"dataspace {ds.id} belongs to session '{ds.owner.name}'")
        for other in self.sessions.values():
            other.regions = [r for r in other.regions if r.ds is not ds]
        for page in ds.pages.values():
            self._drop(page, unmap=True)
        ds.pages.clear()
        s.used -= ds.size
        del self.spaces[ds.id]
        self.l4.destroy(ds.gate)             # every copy of its capability vanishes

    # -- sessions -----------------------------------------------------------------
    def open_session(self, name: str, quota: int) -> tuple[dict, list]:
        if not 0 <= quota <= MAX_QUOTA:
            # bounded: info() sums the quotas, and a sum past 2**64 no longer packs
            raise RpcError("INVALID", f"quota {quota} for session '{name}' outside 0..2**40")
        try:
            gate = self.l4.create_gate(SESSION | self.next_session)
        except QuotaExceeded as e:      # our kernel objects are spent (too many sessions)
            raise RpcError("QUOTA", f"no gate for session '{name}': {e}") from None
        ident = self.next_session
        self.next_session += 1
        s = Session(ident, name, quota)
        s.gate = gate
        self.sessions[ident] = s
        return {"session": ident}, [map_cap(s.gate)]

    def client_gone(self, ident: int) -> dict:
        """The task behind session `ident` died: free everything it had."""
        s = self.sessions.get(ident)
        if s is None:
            raise RpcError("INVALID", f"no session {ident}")
        mine = [ds for ds in self.spaces.values() if ds.owner is s]
        freed = sum(ds.size for ds in mine)
        for ds in mine:
            self.release(s, ds)
        s.regions.clear()
        del self.sessions[ident]
        self.l4.destroy(s.gate)
        return {"dataspaces": len(mine), "bytes": freed}

    def admin_info(self) -> dict:
        return {"sessions": len(self.sessions), "dataspaces": len(self.spaces),
                "quota": sum(s.quota for s in self.sessions.values()),
                "used": sum(s.used for s in self.sessions.values()),
                "pool_pages": self.pool_pages, "free_pages": self.free_pages,
                "resident_pages": len(self.refs)}

    # -- regions ---------------------------------------------------------------------
    def attach(self, s: Session, ds: Dataspace, addr: int | None, rights: int) -> dict:
        if rights & ~MemRights.RWX or not rights:
            raise RpcError("INVALID", f"rights {rights:#x}")
        size = ds.size
        if addr is None:
            addr = max([REGION_BASE] + [r.start + r.size for r in s.regions])
            addr = -(-addr // PAGE_SIZE) * PAGE_SIZE
        if addr % PAGE_SIZE or addr < 0:
            raise RpcError("INVALID", f"region address 0x{addr:x} is not page aligned")
        for r in s.regions:
            if addr < r.start + r.size and r.start < addr + size:
                raise RpcError("BUSY", f"0x{addr:x}+{size} overlaps the region at 0x{r.start:x}")
        s.regions.append(Region(addr, size, ds, rights))
        return {"addr": addr, "size": size}

    def detach(self, s: Session, addr: int) -> None:
        for r in s.regions:
            if r.start == addr:
                s.regions.remove(r)
                return
        raise RpcError("INVALID", f"no region starts at 0x{addr:x}")

    # -- paging -------------------------------------------------------------------------
    def fault(self, s: Session, addr: int, access: int) -> list:
        for r in s.regions:
            if r.start <= addr < r.start + r.size:
                break
        else:
            raise RpcError("INVALID", f"0x{addr:x} is in no region of session '{s.name}'")
        if access & ~r.rights:
            raise RpcError("NO_RIGHTS", f"{MemRights(access)!r} access to a "
                                        f"{MemRights(r.rights)!r} region at 0x{r.start:x}")
        ds, idx = r.ds, (addr - r.start) >> PAGE_SHIFT
        page = ds.pages.get(idx)
        if page is None:                                 # demand-zero
            page = ds.pages[idx] = self._page()
            self.vm.fill(page, PAGE_SIZE)
        elif access & MemRights.W and self.refs[page] > 1:   # copy on write
            new = self._page()
            self.vm.write(new, self.vm.read(page, PAGE_SIZE))
            ds.pages[idx] = new
            self._drop(page)
            self.l4.mem_unmap(page, PAGE_SHIFT)          # sharers re-fault, find their page
            page = new
        rights = r.rights
        if self.refs[page] > 1:
            rights &= ~MemRights.W
        return [map_mem(page, PAGE_SHIFT, rights)]

    # -- dispatch: the gate's label picks the protocol --------------------------------------
    def route(self, msg: Message) -> Route | None:
        label = msg.label
        if label == ADMIN_LABEL:
            return MOE_ADMIN, AdminOps(self)
        if label & SESSION and (label ^ SESSION) in self.sessions:
            return MOE_SESSION, SessionOps(self, self.sessions[label ^ SESSION])
        if label & DATASPACE and (label ^ DATASPACE) in self.spaces:
            return MOE_DATASPACE, DataspaceOps(self.spaces[label ^ DATASPACE])
        return None

    def on_page_fault(self, call: Call, body: dict) -> Reply:
        s = self.sessions.get(call.label ^ SESSION) if call.label & SESSION else None
        if s is None:
            raise RpcError("INVALID", f"page fault through a non-session gate {call.label:#x}")
        addr, access = body.get("addr"), body.get("access")
        if type(addr) is not int or type(access) is not int:
            raise RpcError("INVALID", f"page fault without address and access: {body!r:.80}")
        return Reply(None, self.fault(s, addr, access))


class AdminOps:
    """MOE_ADMIN, on the launcher's gate."""

    def __init__(self, moe: Moe) -> None:
        self.moe = moe

    def session(self, call: Call, name: str, quota: int) -> Reply:
        value, items = self.moe.open_session(name, quota)
        return Reply(value, items)

    def client_gone(self, call: Call, session: int) -> dict:
        return self.moe.client_gone(session)

    def info(self, call: Call) -> dict:
        return self.moe.admin_info()


class SessionOps:
    """MOE_SESSION, on one client's session gate (`s`: the session its label names)."""

    def __init__(self, moe: Moe, s: Session) -> None:
        self.moe, self.s = moe, s

    def alloc(self, call: Call, size: int) -> Reply:
        return Reply(*self.moe.alloc(self.s, size))

    def attach(self, call: Call, addr: int | None, rights: int) -> dict:
        return self.moe.attach(self.s, self.moe.cap_ds(call), addr, rights)

    def detach(self, call: Call, addr: int) -> None:
        self.moe.detach(self.s, addr)

    def copy(self, call: Call) -> Reply:
        return Reply(*self.moe.copy(self.s, self.moe.cap_ds(call)))

    def release(self, call: Call) -> None:
        self.moe.release(self.s, self.moe.cap_ds(call))

    def info(self, call: Call) -> dict:
        s = self.s
        return {"quota": s.quota, "used": s.used,
                "regions": [[r.start, r.size, r.ds.id, r.rights] for r in s.regions]}


class DataspaceOps:
    """MOE_DATASPACE, on a dataspace's own gate."""

    def __init__(self, ds: Dataspace) -> None:
        self.ds = ds

    def info(self, call: Call) -> dict:
        ds = self.ds
        return {"ds": ds.id, "size": ds.size, "owner": ds.owner.name, "resident": len(ds.pages)}


def main(l4: Any) -> int:
    moe = Moe(l4)
    serve(l4, moe.route, kernel=moe, name="moe", window=(RECV_SLOT, 1))
    return 0
