"""`l4run call` on a booted image of hello, counter and ledger: declared ops answer with
their typed results (text and --json), a declared error comes back by its name, `--list`
shows the ops; an unknown op or task, wrong arguments and an admin op are refused in one
line."""
from __future__ import annotations

import json

from .helpers import l4run, write

IMAGE = """
[system]
name = "calls"

[[task]]
name = "hello"
run = "servers.hello.server:serve"
args = ["hello"]
provides = ["hello"]

[[task]]
name = "counter"
run = "servers.hello.counter:serve"
provides = ["counter"]

[[task]]
name = "ledger"
run = "servers.ledger.server:main"
provides = ["ledger"]
"""


def refused(rd: str, *args: str, says: str) -> None:
    p = l4run("call", *args, "--run-dir", rd, check=False)
    assert p.returncode != 0 and says in p.stderr, (p.stdout, p.stderr)
    assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr, p.stderr


def test_call(tmp_path):
    rd = str(tmp_path / "run")
    l4run("boot", write(str(tmp_path / "calls.toml"), IMAGE), "--detach", "--run-dir", rd)
    try:
        out = l4run("call", "hello.hello", "operator", "--run-dir", rd).stdout
        assert "operator" in out, out
        first = json.loads(l4run("call", "counter.add", "5", "--json", "--run-dir", rd).stdout)
        assert first["service"] == "counter" and first["op"] == "add" and "result" in first
        again = json.loads(l4run("call", "counter.add", "2", "--json", "--run-dir", rd).stdout)
        assert again["result"] != first["result"]
        ops = json.loads(l4run("call", "ledger", "--list", "--json", "--run-dir", rd).stdout)
        assert {o["op"] for o in ops} == {"add", "read"}
        bad = l4run("call", "ledger.read", "k", "r1", "not-the-sum", "--json", "--run-dir", rd,
                    check=False)
        answer = json.loads(bad.stdout)
        assert bad.returncode == 1 and answer["error"] == "CORRUPT", answer
        refused(rd, "counter.add", "five", says="counter.add: argument 'n' must be int, got "
                "'five' (not an integer)")
        refused(rd, "counter.add", says="counter.add takes 1 argument (n:int), got 0")
        refused(rd, "counter.nosuch", says="has no op 'nosuch'")
        refused(rd, "nobody.hello", "x", says="no task or service named 'nobody'")
    finally:
        l4run("down", "--run-dir", rd, check=False)
