"""Root file systems and programs for the personality's tests.

    write(path, programs={"probe": "/tmp/x/probe"}, hosts=()) -> path
    compile_c(tmp, name, source=None, cc=("musl-gcc", "-static", "-O2"), extra=()) -> exe

`write` builds the initramfs the personality boots from: the host's static busybox with its
applet links (servers/l4linux/initramfs.py, with its /etc files; `hosts` adds lines to
/etc/hosts), plus each program as /bin/NAME (mode 0755), and writes the cpio archive to
`path`. `compile_c` builds HERE/NAME.c (or `source`) into tmp/NAME with the given compiler
and flags, failing the test with the compiler's own error when it does not build.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence

from servers.l4linux import initramfs

HERE = os.path.dirname(os.path.abspath(__file__))
BUSYBOX = "/bin/busybox"
MUSL = ("musl-gcc", "-static", "-O2")


def write(path: str, programs: Mapping[str, str] | None = None,
          hosts: Sequence[str] = ()) -> str:
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    entries = list(initramfs.read(initramfs.build(busybox, initramfs.applets(), hosts)))
    for name, exe in (programs or {}).items():
        with open(exe, "rb") as f:
            entries.append(initramfs.Entry("bin/" + name, 0o100755, f.read()))
    with open(path, "wb") as f:
        f.write(initramfs.write(entries))
    return path


def compile_c(tmp: str, name: str, source: str | None = None,
              cc: Sequence[str] = MUSL, extra: Sequence[str] = ()) -> str:
    exe = os.path.join(tmp, name)
    subprocess.run([*cc, *extra, "-o", exe, source or os.path.join(HERE, name + ".c")],
                   check=True, timeout=120)
    return exe
