"""Structure-aware fuzz: every system call's handler runs, with valid and near-miss input.

`launcher.fuzz.Fuzzer` (its docstring says how) builds each request from
`abi.LAYOUTS`, drawing the fields from what the live fuzz tasks really hold (slots, rights,
reply capabilities, memory windows) and turning one field in three into a near miss. Here a
short seeded run (`REQUESTS`) against one kernel must:

- get a well-formed answer to every request (the Fuzzer raises otherwise) and keep the
  kernel alive;
- reach the handler of every system call (`Sys`): KERNEL_INFO's `stats.handled`, minus the
  root task's own set-up calls; HELLO counted from the answers only its handler gives —
  the test fails naming every call that was never reached;
- see some requests of all but two calls succeed (well-formed input is well-formed), not
  counting `NEEDS_TRAP`: those succeed only while the one fuzz process trapped by
  LINUX_ATTACH waits in a call, which a short run may never catch (tests/l4linux has them
  succeed on purpose);
- leave the kernel with `kernel_bugs == 0`, and a real client/server workload (a spawned
  echo task, and an echo thread of root's) working afterwards.

`l4run bench fuzz --requests 100000 --json` runs the same engine at length.
"""
from __future__ import annotations

from kernel.abi import Sys
from kernel.user.testing import System
from launcher.fuzz import Fuzzer, workload_ok

REQUESTS = 4000
SEED = 20261201
NEEDS_TRAP = {Sys.LINUX_MEM_READ, Sys.LINUX_MEM_WRITE, Sys.LINUX_ADDFD}


def test_every_handler_is_reached_and_the_kernel_stays_sound() -> None:
    with System() as s:
        fz = Fuzzer(s, SEED)
        try:
            rep = fz.run(REQUESTS, deadline_s=60)
        finally:
            fz.close()
        print(f"\nstructured fuzz: {rep.requests} requests in {rep.seconds:.1f} s, "
              f"{rep.replaced} tasks and {rep.renewed} threads replaced; reached {rep.reached}; ok {rep.ok}")
        assert s.kernel.poll() is None, "the kernel died"
        missing = [c.name for c in Sys if rep.reached.get(c.name, 0) <= 0]
        assert not missing, f"handlers never reached: {missing}"
        never = [c.name for c in Sys if c not in NEEDS_TRAP and rep.ok.get(c.name, 0) <= 0]
        assert len(never) <= 2, f"these calls never succeeded: {never}"
        assert rep.kernel_bugs == 0, f"the kernel counted {rep.kernel_bugs} internal errors"
        workload_ok(s)
        srv = s.spawn("tests.kernel.rpc_tasks:echo_server", "echo-after-fuzz")
        gate = s.root.create_gate(11, thread=srv.thread)
        assert s.root.call(gate, b"abc", proto=3, rcv_timeout=20_000).data == b"abc"
        assert s.root.call(gate, b"stop", rcv_timeout=20_000).data == b"bye"
        assert srv.wait(20) == 0
        assert s.root.kernel_info()["stats"]["kernel_bugs"] == 0
