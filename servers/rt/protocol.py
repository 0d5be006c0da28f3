"""The `rt` protocol (kernel.user.rpc): periodic CPU reservations for a task's threads.

A client asks for a reservation for one of its own threads, named by the thread's host
thread id (a task's L4 threads run on host threads of the task's one process:
`threading.get_native_id()` on the thread itself, servers/rt/client.py). Times are in
microseconds. The manager checks the claim with the launcher's word (NAMES client_pid: the
process that runs the task behind the caller's gate label) and the host (/proc/PID/task/TID),
runs its admission test, and only then sets the host thread's policy.

RT (client gates; the label says which task calls)
    reserve(tid, period_us, budget_us, deadline_us) -> {id, policy, utilisation, total, bound}
                              policy: "deadline" (SCHED_DEADLINE runtime=budget,
                              deadline, period) or "fifo" (the fallback: SCHED_FIFO, the
                              manager throttles the thread once it used its budget in a
                              period). total: the admitted utilisation with this one; bound:
                              what the host admits. Errors: INVALID (a field: which and why),
                              NOT_YOURS (tid is no thread of the caller's process), NO_TASK
                              (the launcher names no one running task behind this label),
                              REFUSED (admission: the sums and the bound in the reason),
                              HOST (the host refused what our test admitted: errno, reason),
                              EXISTS (the thread has a reservation already)
    release(id) -> None       the reservation ends; the thread is SCHED_OTHER again.
                              Errors: NOT_FOUND (no reservation `id` of this client)
    report(id, periods, misses, worst_us) -> None
                              the job's own count since its last report: periods run,
                              deadlines missed, the worst lateness; shown by `l4run rt`.
                              Errors: NOT_FOUND, INVALID
    mine() -> [reservation]   the caller's reservations (the rows of `status`)

RT admin (label 0, the launcher's)
    status() -> {mode, mode_reason, bound, total, reservations: [...], refused: [...],
                 boosted: {...}, counters}
                              everything `l4run rt` shows: each reservation's parameters,
                              measured use (CPU time of its thread / elapsed), reported
                              periods and misses, the throttles of the fallback; the last
                              REFUSED_KEPT refusals with their reasons.
"""
from __future__ import annotations

from kernel.user.rpc import Protocol, op

MIN_PERIOD_US = 1_000            # 1 ms .. 10 s
MAX_PERIOD_US = 10_000_000
MIN_BUDGET_US = 100              # below this the host's accounting is too coarse
REFUSED_KEPT = 32
REPLY = ("id", "policy", "utilisation", "total", "bound")

RT = Protocol("rt", [
    op("reserve", 1, ["tid:int", "period_us:int", "budget_us:int", "deadline_us:int"], REPLY,
       errors=["INVALID", "NOT_YOURS", "NO_TASK", "REFUSED", "HOST", "EXISTS"],
       doc="a periodic CPU reservation for host thread tid of the caller's process"),
    op("release", 2, ["id:int"], None, errors=["NOT_FOUND"]),
    op("report", 3, ["id:int", "periods:int", "misses:int", "worst_us:int"], None,
       errors=["NOT_FOUND", "INVALID"]),
    op("mine", 4, [], "reservations"),
    op("status", 10, [], "status", admin=True),
], tag=0x5254)
