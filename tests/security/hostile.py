"""Hostile processes for the attack suite: an attacker under another uid, a thief of ours.

`as_uid(fn)` runs `fn()` as `NOBODY` (uid and gid 65534, no supplementary groups) in a
forked child that drops root with os.setresuid first: an unprivileged stranger to the
system under test, holding nothing of ours but what `fn` uses. The child never returns
into pytest: it sends `fn`'s JSON-able result (or the exception it raised) through a pipe
and leaves with os._exit. Needs root (skips otherwise).

`run_python(code)` runs a snippet as another process of ours (same uid): a thief that was
handed a secret. Both answer the JSON value the attacker reports. `open_dir`: a fixture,
a directory every uid can reach, for run directories under attack.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Callable, Iterator

import pytest

from kernel.user.testing import PROJECT_ROOT

NOBODY = 65534


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("running an attacker under another uid needs root")


def as_uid(fn: Callable[[], Any], uid: int = NOBODY, timeout: float = 30.0) -> Any:
    """`fn()`'s result, computed by a forked child running as `uid`; its exception is
    raised here as AssertionError."""
    need_root()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # the child: never back into pytest
        status = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            out: dict[str, Any] = {"ok": fn()}
        except BaseException as e:                  # noqa: BLE001 - reported to the parent
            out = {"error": f"{type(e).__name__}: {e}"}
        try:
            os.write(w, json.dumps(out, default=str).encode())
        except BaseException:
            status = 1
        os._exit(status)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        while True:
            chunk = f.read(65536)
            if not chunk:
                break
            chunks.append(chunk)
    os.waitpid(pid, 0)
    got = json.loads(b"".join(chunks) or b"{}")
    if "ok" not in got:
        raise AssertionError(f"the attacker (uid {uid}) failed: {got.get('error', 'no answer')}")
    return got["ok"]


def run_python(code: str, timeout: float = 30.0, **env: str) -> Any:
    """Run `code` as another process of ours (same uid); answer the JSON value it prints."""
    p = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                       text=True, timeout=timeout,
                       env={**os.environ, "PYTHONPATH": PROJECT_ROOT, **env})
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        raise AssertionError(f"the process failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return json.loads(lines[-1])


def dir_in_tmp(mode: int) -> Iterator[str]:
    """A directory in /tmp with `mode`, removed afterwards (pytest's own tmp_path lies under
    a 0700 directory, which would stop an attacker before the protection under test)."""
    d = tempfile.mkdtemp(prefix="l4py-sec-")
    os.chmod(d, mode)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def open_dir() -> Iterator[str]:
    """A directory in /tmp every uid can reach (mode 0755)."""
    yield from dir_in_tmp(0o755)
