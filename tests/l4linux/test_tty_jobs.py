"""Job control on the personality's terminal, as Linux's tty does it (servers/l4linux/tty.py
`background`): a background job that reads the console gets SIGTTIN — ash reports it
stopped, `fg` brings it back and it reads; one that ignores SIGTTIN gets EIO; a background
write goes out unless `stty tostop`, then SIGTTOU stops the writer."""
from __future__ import annotations

import os
import sys
import time
from typing import Any

import pytest

from tests.l4linux.test_personality import L4RUN, _linux_image, _Pty

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/busybox") or sys.platform != "linux",
                                reason="needs /bin/busybox (busybox-static) on x86-64 Linux")


def test_background_read_gets_sigttin_and_tostop_write_sigttou(tmp_path: Any) -> None:
    with _linux_image(tmp_path, TERM="vt100") as (rd, env):
        con = _Pty([*L4RUN, "console", "--run-dir", rd], env)
        con.expect(b"/ # ", timeout=60)            # the first shell: slow on a loaded host
        con.type(b"cat &\r")
        con.expect(b"/ # ")
        time.sleep(1.0)                         # cat reads: SIGTTIN stops its group
        con.type(b"jobs\r")
        assert b"Stopped (tty input)" in con.expect(b"/ # ", timeout=30)
        con.type(b"fg\r")
        con.expect(b"cat\r\n")
        con.type(b"typed\r")
        con.expect(b"typed\r\n")                  # the echo,
        con.expect(b"typed\r\n")                  # then cat's copy: it read the terminal
        con.type(b"\x04")                       # ^D: cat ends, in the foreground
        con.expect(b"/ # ", timeout=30)
        con.type(b"(trap '' TTIN; cat; echo rc=$?) &\r")
        assert b"Input/output error" in con.expect(b"rc=1", timeout=30)   # EIO, no stop
        con.type(b"(echo free) & wait\r")
        assert b"\nfree\r\n" in con.expect(b"/ # ", timeout=30)    # no TOSTOP: it writes
        con.type(b"stty tostop; (echo held) &\r")
        con.expect(b"/ # ")
        time.sleep(1.0)
        con.type(b"jobs\r")
        out = con.expect(b"/ # ", timeout=30)
        assert b"Stopped (tty output)       (echo held)" in out and b"\nheld" not in out, out
        con.type(b"fg\r")
        assert b"\nheld\r\n" in con.expect(b"/ # ", timeout=30)
        con.type(b"stty -tostop; exit\r")
        assert con.wait() == 0
