"""The Linux root file system of configs/nizza.toml: busybox, the hybrid helper /bin/nizza
(nizza.c, compiled here with musl-gcc -static against servers/l4linux/include/l4py.h) and
the untrusted part's shell scripts (`SCRIPTS`).

    python3 -m servers.nizza.build [-o FILE]      default FILE: build/nizza/rootfs.cpio

Contract: writes the newc archive atomically (a temporary file renamed), so an image never
boots a half-written one; raises `BuildError` naming the missing tool or the compiler's
message. Needs /bin/busybox (busybox-static) and musl-gcc (musl-tools).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from servers.l4linux import initramfs

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(os.path.dirname(HERE))
INCLUDE = os.path.join(PROJECT, "servers", "l4linux", "include")
DEFAULT = os.path.join(PROJECT, "build", "nizza", "rootfs.cpio")

SIGN_DOC = b"""#!/bin/sh
# sign-doc FILE: the trusted signer signs FILE once the user approves its digest with the
# PIN in the signer's own window (never typed here); the signature goes to FILE.sig (hex).
[ -f "$1" ] || { echo "usage: sign-doc FILE" >&2; exit 64; }
echo "sign-doc: $(sha256sum "$1")"
echo "sign-doc: approve it with your PIN in the window labelled 'signer'"
if /bin/nizza sign "$1" > "$1.sig.new"; then
    mv "$1.sig.new" "$1.sig"
    echo "sign-doc: signature in $1.sig"
else
    rc=$?
    rm -f "$1.sig.new"
    echo "sign-doc: not signed" >&2
    exit $rc
fi
"""

SECRET = b"""#!/bin/sh
# secret put NAME < DATA | get NAME | ls: files kept on the ext2 disk (/data/secret) only
# as the vault's ciphertext; the key stays in the vault task.
dir=/data/secret
case "$2" in */*|.*) echo "secret: bad name '$2'" >&2; exit 64;; esac
case "$1" in
put) [ -n "$2" ] || exit 64; mkdir -p $dir
     /bin/nizza seal "$2" > "$dir/$2.new" && mv "$dir/$2.new" "$dir/$2" && sync ;;
get) [ -n "$2" ] || exit 64; /bin/nizza unseal "$2" < "$dir/$2" ;;
ls)  ls $dir ;;
*)   echo "usage: secret put NAME < DATA | get NAME | ls" >&2; exit 64 ;;
esac
"""

MOTD = b"""L4Linux in a Nizza system: sign-doc FILE (the PIN goes into the signer's window),
secret put|get|ls NAME (sealed by the vault, stored on /data as ciphertext).
"""

SCRIPTS = {"bin/sign-doc": SIGN_DOC, "bin/secret": SECRET}


class BuildError(RuntimeError):
    """A tool the build needs is missing, or the helper did not compile."""


def compile_helper(out: str) -> None:
    cc = shutil.which("musl-gcc")
    if cc is None:
        raise BuildError("musl-gcc not found: install musl-tools (the helper is a static "
                         "Linux binary)")
    r = subprocess.run([cc, "-static", "-O2", "-Wall", "-I", INCLUDE, "-o", out,
                        os.path.join(HERE, "nizza.c")], capture_output=True, text=True,
                       timeout=120)
    if r.returncode:
        raise BuildError(f"musl-gcc nizza.c failed: {r.stderr.strip()}")


def build(output: str = DEFAULT, busybox: str = "/bin/busybox") -> str:
    if not os.path.exists(busybox):
        raise BuildError(f"{busybox} not found: install busybox-static")
    with open(busybox, "rb") as f:
        entries = list(initramfs.read(initramfs.build(f.read(), initramfs.applets(busybox))))
    with tempfile.TemporaryDirectory(prefix="l4py-nizza-") as tmp:
        exe = os.path.join(tmp, "nizza")
        compile_helper(exe)
        with open(exe, "rb") as f:
            helper = f.read()
    entries = [e for e in entries if e.name != "etc/motd"]
    entries += [initramfs.Entry("bin/nizza", 0o100755, helper),
                initramfs.Entry("etc/motd", 0o100644, MOTD)]
    entries += [initramfs.Entry(name, 0o100755, text) for name, text in SCRIPTS.items()]
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output + ".new", "wb") as f:
        f.write(initramfs.write([e._replace(ino=0) for e in entries]))
    os.replace(output + ".new", output)
    return output


def main(argv: list[str]) -> int:
    out = argv[argv.index("-o") + 1] if "-o" in argv else DEFAULT
    try:
        print(f"nizza rootfs: {build(out)}")
    except BuildError as e:
        print(f"nizza build: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
