"""L⁴Linux: Debian's bash-static and sash, unmodified, under the personality against the
same binaries run natively on the host (docs/L4LINUX.md "Differential tests").

Both sides run the *same* programs: the shell is the host's /bin/bash-static (or /bin/sash)
copied into the initramfs, and the commands it runs are busybox applets — in the
personality from its root file system, natively from a directory of links to the host's
/bin/busybox that is the whole PATH. Output is stdout and stderr together (the
personality's `run` keeps both in the order written), with the exit status.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from kernel.user.testing import System
from servers.l4linux import initramfs

from .rootfs import write
from .test_personality import Linux
from tests.l4linux.native import run as native_run

BASH, SASH = "/bin/bash-static", "/bin/sash"
pytestmark = pytest.mark.skipif(
    not all(os.path.exists(p) for p in ("/bin/busybox", BASH, SASH)),
    reason="needs busybox-static, bash-static and sash (Debian packages; .ci/run installs them)")


def _rootfs(tmp: str) -> str:
    return write(os.path.join(tmp, "rootfs.cpio"), {"bash": BASH, "sash": SASH})


class Native:
    """The same shells on the host: PATH is a directory of busybox applet links."""

    def __init__(self, tmp: str) -> None:
        self.bin = os.path.join(tmp, "bin")
        os.mkdir(self.bin)
        for name in initramfs.applets():
            if name and "/" not in name:
                os.symlink("/bin/busybox", os.path.join(self.bin, name))
        os.symlink(BASH, os.path.join(self.bin, "bash"))
        os.symlink(SASH, os.path.join(self.bin, "sash"))

    def run(self, argv: list[str], cwd: str) -> tuple[int, bytes]:
        env = {"PATH": self.bin, "HOME": "/root", "TERM": "dumb"}
        r = native_run(argv, executable=os.path.join(self.bin, argv[0]), cwd=cwd, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        return r.returncode, r.stdout


def _fresh(linux: Linux) -> str:
    """A new empty directory in the personality's /tmp for one test."""
    status, out = linux.run("mktemp", "-d")
    assert status == 0, out
    return out.decode().strip()


@pytest.fixture(scope="module")
def shells(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Linux, Native]]:
    tmp = str(tmp_path_factory.mktemp("shells"))
    with System() as s:
        yield Linux(s, _rootfs(tmp)), Native(tmp)


BASH_SCRIPTS = {
    "arrays": "a=(one two three); a+=(four); echo ${#a[@]} ${a[2]} ${a[@]:1:2}\n"
              "unset 'a[1]'; echo ${!a[@]} \"${a[*]}\"\n"
              "declare -A m=([x]=1 [y]=2); m[z]=3\n"
              "for k in $(printf '%s\\n' \"${!m[@]}\" | sort); do echo $k=${m[$k]}; done\n"
              "mapfile -t l < <(printf 'l1\\nl2\\n'); echo ${#l[@]} ${l[1]}",
    "functions": "fact() { (( $1 <= 1 )) && { echo 1; return; }; "
                 "echo $(( $1 * $(fact $(( $1 - 1 ))) )); }; fact 6\n"
                 "f() { local v=in; g; }; g() { echo $v; }; v=out; f; echo $v\n"
                 "r() { return $1; }; r 7; echo $?; declare -f r | head -n 1",
    "double brackets": "s=hello.txt; [[ $s == *.txt ]] && echo glob\n"
                       "[[ $s =~ ^(h.)(l+) ]] && echo ${BASH_REMATCH[2]} ${BASH_REMATCH[1]}\n"
                       "[[ -n $s && ! -z $s ]] && echo both; [[ 10 -gt 9 ]] && echo num\n"
                       "[[ abc < abd ]] && echo lt; [[ -d /bin && -e /bin/sh ]] && echo fs\n"
                       "[[ x == y ]] || echo differ",
    "arithmetic": "echo $((2**16)) $((17 % 5)) $((1<<4)) $((0x1f)) $((8#17)) $(( (3+4)*2 ))\n"
                  "x=5; ((x++)); ((x+=10)); echo $x $((x > 10 ? 1 : 0)) $((-7 / 2))\n"
                  "declare -i n=5; n+=3; echo $n; let 'y = n * 2'; echo $y",
    "here documents": "cat <<EOF\n$((1+1)) $HOME\nEOF\ncat <<'EOF'\n$literal `x`\nEOF\n"
                      "cat <<-EOF\n\tindented\n\tEOF\ncat <<< \"here string\"\n"
                      "read a b <<< 'x y'; echo $b$a",
    "pipelines": "seq 1 10 | grep 5 | wc -l\n"
                 "echo a b c | tr ' ' '\\n' | sort -r | head -n 2\n"
                 "true | false | true; echo ${PIPESTATUS[@]}\n"
                 "set -o pipefail; false | true; echo $?\n"
                 "printf 'x\\ny\\n' | while read l; do echo got $l; done",
    "subshells": "x=1; (x=2; echo in $x); echo out $x; (exit 3); echo $?\n"
                 "{ echo group; }; echo $(echo cmd $(echo nested)); echo \"$(cd /; pwd)\"\n"
                 "[ $BASHPID = $$ ] && echo same; ( [ $BASHPID != $$ ] && echo differ )\n"
                 "echo $( (exit 4); echo $? )",
    "traps": "trap 'echo exit trap' EXIT; trap 'echo usr1' USR1; kill -USR1 $$\n"
             "trap - USR1; f() { trap 'echo ret' RETURN; echo body; }; f\n"
             "trap 'echo int' INT; kill -INT $$; echo after\n"
             "trap 'echo err' ERR; false; trap - ERR; echo done",
    "wait": "sleep 0.2 & p1=$!; (exit 3) & p2=$!; wait $p2; echo s2=$?; wait $p1; echo s1=$?\n"
            "{ for i in 1 2 3; do (echo job$i) & done; wait; } | sort; echo all\n"
            "sleep 5 & kill -TERM $!; wait $!; echo killed $?\n"
            "sleep 0.3 & sleep 0.05 & wait -n; echo first $?; wait; echo rest $?",
    "jobs": "sleep 1 & jobs; kill %1; wait; echo $?",
    "strings": "s=abcdef; echo ${s:2:3} ${s#ab} ${s%ef} ${s/cd/XX} ${#s} ${s^^}\n"
               "printf -v v '%03d' 7; echo $v; printf '%s|%5s|%-3d|%x\\n' a b 7 255\n"
               "echo $'tab\\there'; u=${unset:-default}; echo $u ${u:1:2}",
    "loops and case": "while read -r l; do case $l in a*) echo A:$l;; *) echo O:$l;; esac; "
                      "done <<EOF\napple\nbanana\nEOF\n"
                      "for ((i=0;i<3;i++)); do echo -n $i; done; echo\n"
                      "n=0; until [ $n -ge 3 ]; do n=$((n+1)); done; echo $n\n"
                      "for w in a b c; do [ $w = b ] && continue; echo $w; done",
    "redirections": "exec 3>f; echo to3 >&3; exec 3>&-; cat f\n"
                    "{ echo o; echo e >&2; } 2>&1 | sort\n"
                    "cat < f > g; cat g; echo more >> g; wc -l < g\n"
                    "echo gone > /dev/null; cat /dev/null; rm f g",
    "process substitution": "cat <(echo ps) <(echo two)\n"
                            "diff <(printf 'a\\nb\\n') <(printf 'a\\nb\\n') && echo same\n"
                            "while read x; do echo r$x; done < <(seq 2)",
    "set -e and status": "set -e; f() { return 4; }; f || echo caught $?\n"
                         "(set -e; false; echo no); echo sub=$?; ! false; echo neg=$?",
    "globbing": "touch a1 a2 b1; echo a*; echo ?1; shopt -s extglob\necho !(a*)\n"
                "shopt -s nullglob; echo none*; rm a1 a2 b1",
    "getopts and args": "set -- -a -b val arg; while getopts ab: o; do echo $o ${OPTARG-}; done\n"
                        "shift $((OPTIND-1)); echo $1 $#\n"
                        "f() { echo $# \"$@\"; shift; echo \"$*\"; }; f 'a b' c d",
    "random and eval": "RANDOM=42; echo $RANDOM $RANDOM; eval 'x=evaluated'; echo $x\n"
                       "v=name; declare \"$v=indirect\"; echo ${!v}",
    "directories": "mkdir -p d/e; ln -s d/e l; cd l; basename \"$(pwd)\"; "
                   "basename \"$(pwd -P)\"; cd ..; ls; cd -P l/..; ls; cd ..; rm -r d l; ls",
    "bash -c in bash": "bash -c 'echo inner $0 $1; exit 5' zero one; echo $?",
}


@pytest.mark.parametrize("name", list(BASH_SCRIPTS))
def test_bash_static_as_natively(shells: tuple[Linux, Native], name: str,
                                 tmp_path: Any) -> None:
    linux, native = shells
    argv = ["bash", "-c", BASH_SCRIPTS[name]]
    want = native.run(argv, str(tmp_path))
    assert linux.run(*argv, cwd=_fresh(linux)) == want, name


# sash's built-ins (its "-" commands), one script read with -f; the script and a file it
# sources are written first by busybox's sh, on both sides. Nothing here prints times, inode
# numbers, absolute paths or directory order.
SASH_SCRIPT = """\
echo hi > f
cat f
echo a b | cat
-dd if=f of=g
-cmp f g
-sum f
-grep -n hi f g
-mkdir d e
-touch d/x
-find d -type f
-find . -name x
-chmod 600 g
-ln -s f l
-ls
-ls -F
-tar cf t.tar d f
-rm f
-tar xf t.tar
-cmp f g
-printenv HOME
setenv X 1
-printenv X
-echo $X plain
alias ll -ls
ll d
umask 027
umask
-mv g gg
-ls
cd d
-ls
cd ..
source src
-rm d/x gg l t.tar src s
-rmdir d e
-ls
exit 4
"""


def test_sash_built_ins_as_natively(shells: tuple[Linux, Native], tmp_path: Any) -> None:
    linux, native = shells
    setup = (f"cat > s <<'EOF'\n{SASH_SCRIPT}EOF\necho '-echo sourced' > src\n"
             "sash -f s; echo status $?; rm f")
    argv = ["sh", "-c", setup]
    with tempfile.TemporaryDirectory() as tmp:
        want = native.run(argv, tmp)
    assert want[0] == 0 and b"status 4" in want[1], want
    assert linux.run(*argv, cwd=_fresh(linux)) == want


def test_sash_minus_c(shells: tuple[Linux, Native], tmp_path: Any) -> None:
    linux, native = shells
    for cmd in ("-echo one two", "-kill -0 12345678", "-ls /bin/sash", "exit 3"):
        argv = ["sash", "-c", cmd]
        assert linux.run(*argv, cwd=_fresh(linux)) == native.run(argv, str(tmp_path)), cmd
