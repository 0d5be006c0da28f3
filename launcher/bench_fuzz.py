"""`l4run bench fuzz`: structure-aware fuzzing of the kernel's system calls (launcher.fuzz).

`run_fuzz_bench(n)` boots a kernel, runs `launcher.fuzz.Fuzzer` for `n` generated requests
(every system call, fields from `kernel.abi.LAYOUTS` and the fuzz tasks' real holdings, near
misses), checks that a plain workload still works, and answers the report as JSON: keys
`requests`, `handlers_reached`, `system_calls`, `kernel_bugs`, `per_call` (requests that
reached each handler), `sent`, `ok`, `errors`, `tasks_replaced`, `threads_replaced`,
`seconds`, `requests_per_s`, `workload_ok`.

`run_protocol_bench(n)` (`--protocols`) fuzzes every server's declared protocol instead
(launcher.fuzz.protocol, `n` requests per server): keys `servers` (per server: `requests`,
`ops`, `ops_reached`, `handled` per op, `cases`, `answers` by status, `seconds`,
`kernel_bugs`), `internal_errors` (undeclared exceptions per server; REPLY_ITEMS is sigma0's
memory answered to a client without a memory window), `all_ops_reached`, `kernel_bugs`.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

from kernel.user.testing import System

from .fuzz import Fuzzer, workload_ok


def run_fuzz_bench(requests: int = 100_000, seed: int = 1, verbose: bool = False) -> dict[str, Any]:
    """Boot a kernel, fuzz it with `requests` generated requests, check a workload after."""
    def progress(i: int, seconds: float) -> None:
        print(f"  {i} requests, {seconds:.1f} s", file=sys.stderr, flush=True)

    # Tasks the fuzz tasks create outlive them (nothing but their threads' secrets reaches
    # them) and keep the quota carved for them: about one root quota unit per request.
    with System(root_quota=max(100_000, 3 * requests)) as s:
        fz = Fuzzer(s, seed)
        try:
            rep = fz.run(requests, progress=progress if verbose else None)
        finally:
            fz.close()
        workload_ok(s)
        res = rep.as_json()
        res["kernel_bugs"] = s.root.kernel_info()["stats"]["kernel_bugs"]
        res["workload_ok"] = True
        return res


def run_protocol_bench(requests: int = 2000, seed: int = 1) -> dict[str, Any]:
    """Fuzz every server's declared protocol with `requests` generated requests each.
    The servers are booted as the conformance suite boots them (its adapters,
    tests/conformance/servers.py, are the one place that says how), so this runs from a
    checkout."""
    from tests.conformance.servers import ADAPTERS

    from .fuzz.protocol import fuzz_adapter
    out: dict[str, Any] = {}
    stdout = os.dup(1)
    os.dup2(2, 1)               # the servers inherit stderr as their stdout: ours stays JSON
    try:
        for cls in ADAPTERS:
            a = cls()
            a.up()
            try:
                rep = fuzz_adapter(a, requests, seed)
                out[a.name] = rep.as_json()
                out[a.name]["kernel_bugs"] = a.root.kernel_info()["stats"]["kernel_bugs"]
            finally:
                a.down()
    finally:
        sys.stdout.flush()
        os.dup2(stdout, 1)
        os.close(stdout)
    internal = {n: {k: v for k, v in r["answers"].items() if k.startswith("INTERNAL:")}
                for n, r in out.items()}
    return {"servers": out, "internal_errors": {n: e for n, e in internal.items() if e},
            "requests_per_server": requests,
            "all_ops_reached": all(r["ops_reached"] == r["ops"] for r in out.values()),
            "kernel_bugs": sum(r["kernel_bugs"] for r in out.values())}


def register(group: Any) -> None:
    import click

    @group.command("fuzz")
    @click.option("--requests", "n", type=int, default=None,
                  help="generated requests to send [default: 100000; with --protocols: 2000 "
                       "per server]")
    @click.option("--seed", default=1, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="print one JSON object")
    @click.option("--protocols", is_flag=True,
                  help="fuzz every server's declared protocol instead (N requests per server)")
    def fuzz(n: int | None, seed: int, as_json: bool, protocols: bool) -> None:
        """Structure-aware fuzz of every system call (from the ABI's LAYOUTS) over live tasks."""
        if protocols:
            res = run_protocol_bench(2000 if n is None else n, seed)
            click.echo(json.dumps(res) if as_json else _protocol_text(res))
            return
        res = run_fuzz_bench(100_000 if n is None else n, seed, verbose=not as_json)
        if as_json:
            click.echo(json.dumps(res))
            return
        click.echo(f"{res['requests']} requests in {res['seconds']} s "
                   f"({res['requests_per_s']}/s); handlers reached "
                   f"{res['handlers_reached']}/{res['system_calls']}; kernel_bugs "
                   f"{res['kernel_bugs']}; tasks replaced {res['tasks_replaced']}, threads "
                   f"{res['threads_replaced']}")
        for name, count in res["per_call"].items():
            click.echo(f"  {name:14} {count:8} of {res['sent'].get(name, 0)}")


def _protocol_text(res: dict[str, Any]) -> str:
    lines = []
    for server, r in res["servers"].items():
        lines.append(f"{server}: {r['requests']} requests in {r['seconds']} s, ops reached "
                     f"{r['ops_reached']}/{r['ops']}")
        lines += [f"  {op:14} {n:6}" for op, n in r["handled"].items()]
    return "\n".join(lines)
