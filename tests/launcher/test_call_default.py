"""`l4run call` reaches every server of configs/default.toml: each task that provides a
service lists its declared ops (`--list`), answers one harmless (read-only or stats) op, and
refuses an argument of the wrong type (or count) in one line naming SERVICE.OP and the
argument, with exit status 1 and nothing sent; where an op declares errors a bad call gets
the declared error's name and the server's reason (exit status 1). The HAL's bus, spoken only
on its admin gate, is listed and refused by name."""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kernel.user.testing import PROJECT_ROOT
from servers.ledger.protocol import digest

from .helpers import l4run, ps

DEFAULT = os.path.join(PROJECT_ROOT, "configs", "default.toml")

# service -> (a harmless op and its arguments, the ops --list must show)
HARMLESS: dict[str, tuple[list[str], set[str]]] = {
    "sigma0": (["info"], {"alloc", "free", "info"}),
    "io": (["devices"], {"devices", "open", "ram"}),
    "hello": (["hello", "operator"], {"hello"}),
    "counter": (["add", "0"], {"add"}),
    "ledger": (["read", "k", "r1", digest("read", "k", "r1")], {"add", "read"}),
    "block": (["info"], {"open", "submit", "collect", "info"}),
    "fb": (["end"], {"mode", "open", "refresh", "stats"}),
    "input": (["end"], {"open", "stats"}),
    "nic": (["info"], {"open", "info", "stats", "device_stats"}),
    "ore": (["device_stats"], {"open", "info", "broadcast", "counters"}),
    "dhcpd": (["stats"], {"leases", "stats"}),
    "nitpicker": (["end"], {"open", "view_create", "refresh"}),
    "linux": (["ps"], {"run", "ps", "console_open"}),
}
# service -> (a call with a wrong argument, what the one-line refusal must say)
WRONG: dict[str, tuple[list[str], str]] = {
    "sigma0": (["free", "x", "0"], "sigma0.free: argument 'phys' must be int, got 'x'"),
    "io": (["devices", "x"], "io.devices takes 0 arguments (none), got 1"),
    "hello": (["hello"], "hello.hello takes 1 argument (name:str), got 0"),
    "counter": (["add", "five"], "counter.add: argument 'n' must be int, got 'five'"),
    "ledger": (["add", "k", "1.5", "r", "s"], "ledger.add: argument 'delta' must be int"),
    "block": (["collect", "x", "0"], "block.collect: argument 'min' must be int, got 'x'"),
    "fb": (["refresh", "0", "0", "w", "1"], "fb.refresh: argument 'w' must be int, got 'w'"),
    "input": (["stats", "1"], "input.stats takes 0 arguments (none), got 1"),
    "nic": (["stats", "first"], "nic.stats: argument 'session' must be int, got 'first'"),
    "ore": (["broadcast", "1", "yes"], "ore.broadcast: argument 'on' must be bool, got 'yes'"),
    "dhcpd": (["leases", "all"], "dhcpd.leases takes 0 arguments (none), got 1"),
    "hal": (["devices"], "hal.devices: the HAL's bus gate is its admin gate"),
}
# service -> (a call one of whose declared errors must answer, that error)
DECLARED: dict[str, tuple[list[str], str]] = {
    "sigma0": (["free", "0", "-1"], "INVALID"),
    "ledger": (["read", "k", "r1", "not-the-sum"], "CORRUPT"),
    "block": (["submit", "[]"], "NO_SESSION"),
    "fb": (["stats"], "NO_SESSION"),
    "input": (["stats"], "NO_SESSION"),
    "nic": (["stats", "999"], "INVALID"),
    "ore": (["stats", "999"], "INVALID"),
}


def run(rd: str, *args: str) -> Any:
    return l4run("call", *args, "--run-dir", rd, check=False)


def harmless(rd: str, service: str, op: list[str]) -> dict[str, Any]:
    """The op's JSON answer; retried while its server restarts (hello crashes on purpose
    every 40 calls) or is not ready yet (dhcpd before its stack is up)."""
    for _ in range(20):
        p = run(rd, f"{service}.{op[0]}", *op[1:], "--json")
        if p.returncode == 0:
            break
        if '"NOT_READY"' not in p.stdout and "did not complete" not in p.stderr:
            break
        time.sleep(0.5)
    assert p.returncode == 0, (service, p.stdout, p.stderr)
    return json.loads(p.stdout)


def test_call_reaches_every_server_of_the_default_image(tmp_path):
    rd = str(tmp_path / "run")
    l4run("boot", DEFAULT, "--detach", "--run-dir", rd, timeout=120)
    try:
        providers = {s: name for name, row in ps(rd).items() for s in row.get("provides") or []}
        assert set(providers) == set(HARMLESS) | {"hal"}, \
            f"the default image's services changed (give each new one its cases): {providers}"
        with ThreadPoolExecutor(4) as pool:
            lists = {s: pool.submit(run, rd, s, "--list", "--json") for s in providers}
            wrong = {s: pool.submit(run, rd, f"{s}.{a[0]}", *a[1:]) for s, (a, _) in WRONG.items()}
            declared = {s: pool.submit(run, rd, f"{s}.{a[0]}", *a[1:], "--json")
                        for s, (a, _) in DECLARED.items()}
            answers = {s: pool.submit(harmless, rd, s, op) for s, (op, _) in HARMLESS.items()}
        for s, f in lists.items():
            p = f.result()
            assert p.returncode == 0, (s, p.stderr)
            ops = {o["op"]: o for o in json.loads(p.stdout)}
            want = HARMLESS[s][1] if s in HARMLESS else {"devices", "open", "ram"}
            assert want <= set(ops), (s, set(ops))
            assert s != "hal" or all(o["admin"] for o in ops.values())
        for s, f in answers.items():
            a = f.result()
            assert a["service"] == s and a["op"] == HARMLESS[s][0][0], a
            assert "result" in a, a
        assert "operator" in answers["hello"].result()["result"]
        assert answers["ledger"].result()["result"]["key"] == "k"
        for s, f in wrong.items():
            p = f.result()
            assert p.returncode == 1 and p.stdout == "", (s, p.stdout, p.stderr)
            assert p.stderr.startswith("l4run: ") and WRONG[s][1] in p.stderr, (s, p.stderr)
            assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
        for s, f in declared.items():
            p = f.result()
            a = json.loads(p.stdout)
            assert p.returncode == 1 and a["error"] == DECLARED[s][1], (s, a)
            assert a["status"] == "FAILED" and a["reason"], a
        text = run(rd, "nic.stats", "999")
        assert text.returncode == 1 and text.stderr.startswith("nic.stats: INVALID: "), text.stderr
    finally:
        l4run("down", "--run-dir", rd, check=False, timeout=120)
