"""Nizza split applications (docs/NIZZA.md) in one booted configs/nizza.toml, attacked.

The image as shipped, with its two files in a temporary directory: the Linux root file
system (servers/nizza/build.py: busybox, /bin/nizza, sign-doc, secret) and the data disk.
The user is played through the HAL's input device (clicks on the signer's keypad, keys);
the judges are the screen (`hal.tools.screenshot`), `cryptography` on the host (the
signature verifies with the public key written to a host file), host `debugfs` (what the
ext2 disk holds) and the host kernel (what the personality's uid may open). Attacks: a
Linux process after the key (files, /proc, a copy of the helper, the host files and memory
as the personality's uid), after the PIN (typed into Linux, a fake prompt in the Linux
window: Nitpicker's label says whose it is), after a signature without the PIN (wrong PINs,
hand-made requests, a second request meanwhile). Three wrong PINs lock the signer, also
across a restart.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from typing import Any, Iterator

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from PIL import Image as PILImage

from hal.tools import inject_input, screenshot
from kernel.user.spawn import PROJECT_ROOT
from servers.nitpicker.compose import BAR, BAR_FOCUS, BAR_FOCUS_TEXT, BAR_TEXT, LABEL_H
from servers.nitpicker.font import text_pixels
from servers.nizza import build
from servers.nizza.prompt import W as SIGNER_W
from servers.nizza.prompt import key_centre
from tests.launcher.helpers import assert_clean, l4run, ps, system_pids, task_log, wait_for

pytestmark = pytest.mark.skipif(
    not os.path.exists("/bin/busybox") or not shutil.which("musl-gcc")
    or not shutil.which("debugfs", path="/sbin:/usr/sbin:" + os.environ.get("PATH", "")),
    reason="needs busybox-static, musl-gcc and e2fsprogs")

IMAGE = os.path.join(PROJECT_ROOT, "configs", "nizza.toml")
PIN = "4711"
SIGNER_AT = (600, 120)             # configs/nizza.toml: the signer's x=, y=
TERMINAL_AT = (20, 60)             # and the terminal's window


class Nizza:
    def __init__(self, rd: str, tmp: str, disk: str) -> None:
        self.rd, self.tmp, self.disk = rd, tmp, disk

    def linux(self, script: str, timeout: float = 60) -> tuple[int, str]:
        p = l4run("linux", "run", "--run-dir", self.rd, "--", "sh", "-c", script,
                  check=False, timeout=timeout)
        return p.returncode, p.stdout + p.stderr

    def start(self, script: str) -> subprocess.Popen[str]:
        import sys
        return subprocess.Popen([sys.executable, "-m", "launcher", "linux", "run", "--run-dir",
                                 self.rd, "--", "sh", "-c", script], cwd=PROJECT_ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def asks(self) -> int:
        return task_log(self.rd, "signer").count("asking the user to sign")

    def wait_ask(self, before: int) -> None:
        wait_for(lambda: self.asks() > before, 30, "the signer to ask for the PIN")

    def click(self, x: int, y: int) -> None:
        inject_input(self.rd, "click", x, y)
        time.sleep(0.05)

    def keypad(self, keys: list[str]) -> None:
        for k in keys:
            dx, dy = key_centre(k)
            self.click(SIGNER_AT[0] + dx, SIGNER_AT[1] + dy)

    def screen(self) -> PILImage.Image:
        shot = os.path.join(self.tmp, f"shot{time.monotonic_ns()}.png")
        screenshot(self.rd, shot)
        return PILImage.open(shot).convert("RGB")


@pytest.fixture(scope="module")
def nz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nizza]:
    tmp = str(tmp_path_factory.mktemp("nizza"))
    os.chmod(tmp, 0o755)                    # the sandboxed personality reads its rootfs here
    rootfs, disk = os.path.join(tmp, "rootfs.cpio"), os.path.join(tmp, "data.ext2")
    build.build(rootfs)
    with open(IMAGE) as f:
        text = f.read()
    assert text.count("../build/nizza/data.ext2") == 2 and "../build/nizza/rootfs.cpio" in text
    image = os.path.join(tmp, "nizza.toml")
    with open(image, "w") as f:
        f.write(text.replace("../build/nizza/rootfs.cpio", rootfs)
                .replace("../build/nizza/data.ext2", disk))
    rd = os.path.join(tmp, "run")
    os.makedirs(rd)
    shm_before = set(os.listdir("/dev/shm"))
    l4run("boot", image, "--detach", "--timeout", "120", "--run-dir", rd, timeout=180)
    pids = system_pids(rd)
    try:
        wait_for(lambda: "public key" in task_log(rd, "signer"), 30, "the signer's key")
        wait_for(lambda: "L4Linux console" in task_log(rd, "terminal"), 30, "the terminal")
        yield Nizza(rd, tmp, disk)
        pids |= system_pids(rd)
    finally:
        l4run("down", "--run-dir", rd)
    assert_clean(rd, pids, shm_before)


def public_key(nz: Nizza) -> Ed25519PublicKey:
    """The signer's public key as Linux gets it (`nizza pubkey`), written to a host file and
    read back from there: the verifier outside the system has only that file."""
    status, out = nz.linux("nizza pubkey")
    assert status == 0, out
    key = out.strip()
    assert f"public key {key}" in task_log(nz.rd, "signer")
    path = os.path.join(nz.tmp, "signer.pub")
    with open(path, "w") as f:
        f.write(key + "\n")
    with open(path) as f:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(f.read().strip()))


def test_a_document_signed_after_the_pin_verifies_outside(nz: Nizza) -> None:
    doc = "pay 100 EUR to Bob\n"
    n = nz.asks()
    job = nz.start(f"printf '{doc.strip()}\\n' > /tmp/doc; sign-doc /tmp/doc && cat /tmp/doc.sig")
    nz.wait_ask(n)
    import hashlib
    digest = hashlib.sha256(doc.encode()).hexdigest()
    assert f"sign sha256 {digest}" in task_log(nz.rd, "signer")
    nz.keypad(list(PIN) + ["OK"])
    out, _ = job.communicate(timeout=30)
    assert job.returncode == 0, out
    assert f"sign-doc: {digest}  /tmp/doc" in out and "signature in /tmp/doc.sig" in out
    sig = bytes.fromhex(out.strip().splitlines()[-1])
    key = public_key(nz)
    key.verify(sig, doc.encode())                          # raises if it does not verify
    with pytest.raises(InvalidSignature):
        key.verify(sig, b"pay 1000 EUR to Bob\n")


def test_keys_typed_into_linux_never_reach_the_signer(nz: Nizza) -> None:
    """The PIN typed while the Linux window has focus goes to Linux, not to the signer; a
    second request meanwhile is BUSY; C on the keypad cancels: no signature either way."""
    n = nz.asks()
    job = nz.start("echo x > /tmp/d2; nizza sign /tmp/d2")
    nz.wait_ask(n)
    nz.click(TERMINAL_AT[0] + 100, TERMINAL_AT[1] + 100)     # the Linux window has focus
    for k in [*PIN, "enter"]:
        inject_input(nz.rd, "key", k)
    time.sleep(1.0)
    assert job.poll() is None, "the signer answered keys typed into the Linux window"
    status, out = nz.linux("nizza sign /tmp/d2")
    assert status == 1 and "BUSY" in out, out
    nz.keypad(["C"])
    out, _ = job.communicate(timeout=30)
    assert job.returncode == 1 and "signer refused: CANCELLED" in out, out


def test_a_wrong_pin_gives_no_signature(nz: Nizza) -> None:
    n = nz.asks()
    job = nz.start("echo y > /tmp/d3; sign-doc /tmp/d3; echo status $?; ls /tmp/d3.sig")
    nz.wait_ask(n)
    nz.click(SIGNER_AT[0] + 100, SIGNER_AT[1] + 30)        # the window, not a key: focus
    for k in ["1", "2", "3", "4", "enter"]:                # typed on the keyboard this time
        inject_input(nz.rd, "key", k)
    out, _ = job.communicate(timeout=30)
    assert "signer refused: WRONG_PIN" in out and "status 1" in out, out
    assert "No such file" in out, out
    assert "wrong PIN: 2 tries left" in task_log(nz.rd, "signer")


def test_linux_cannot_reach_the_key_or_the_signers_memory(nz: Nizza) -> None:
    rows = ps(nz.rd)
    signer, linux = rows["signer"], rows["linux"]
    key = os.path.join(nz.rd, "scratch", "signer", "ed25519.key")
    st = os.stat(key)
    assert (st.st_uid, st.st_mode & 0o777) == (signer["uid"], 0o600)
    # inside Linux: no such file anywhere, /proc shows Linux processes only
    status, out = nz.linux(f"find / -name ed25519.key 2>/dev/null; echo found:; "
                           f"cat {key}; ls /proc/{signer['pid']} 2>&1 | head -1; "
                           f"cat /proc/*/cmdline | tr '\\0' ' ' | grep -c 'nizza[.]signer'")
    assert out.startswith("found:\n") and "No such file" in out, out
    assert out.rstrip().endswith("0"), out
    # a copy of the helper has no grant; the granted one gets no other capability
    status, out = nz.linux("cp /bin/nizza /tmp/n; /tmp/n pubkey; for c in gui nitpicker "
                           "block signer; do nizza probe $c; done")
    lines = out.splitlines()
    assert "nizza: capability signer: Operation not permitted" in lines[0], out
    assert lines[1:4] == ["probe gui: Operation not permitted",
                          "probe nitpicker: Operation not permitted",
                          "probe block: Operation not permitted"], out
    assert re.fullmatch(r"probe signer: handle \d+", lines[4]), out
    # the host as the personality's uid: the key file, the signer's memory and environment
    for path in (key, f"/proc/{signer['pid']}/mem", f"/proc/{signer['pid']}/environ"):
        r = subprocess.run(["dd", f"if={path}", "bs=64", "count=1", "status=none"],
                           user=linux["uid"], group=linux["uid"], extra_groups=[],
                           capture_output=True, timeout=10)
        assert r.returncode != 0 and r.stdout == b"", (path, r)
        assert b"Permission denied" in r.stderr, (path, r.stderr)


def _bar_text_matches(img: PILImage.Image, x: int, y: int, w: int, label: str) -> bool:
    """The LABEL_H lines at (x, y) are Nitpicker's bar with exactly `label` (focused or not)."""
    got = img.crop((x, y, x + w, y + LABEL_H)).tobytes("raw", "RGB")
    for fg, bg in ((BAR_TEXT, BAR), (BAR_FOCUS_TEXT, BAR_FOCUS)):
        bw, bh, pix = text_pixels(label, fg, bg, w, LABEL_H)
        want = PILImage.frombytes("RGB", (bw, bh), pix, "raw", "BGRX").tobytes("raw", "RGB")
        if got == want:
            return True
    return False


def test_a_fake_pin_prompt_in_linux_carries_linuxs_label(nz: Nizza) -> None:
    """Linux can draw only inside its terminal window (it holds no Nitpicker session: the
    probe above); a fake "signer" prompt typed there sits under Nitpicker's bar "linux
    console", and only the real window's bar reads "signer"."""
    nz.click(TERMINAL_AT[0] + 100, TERMINAL_AT[1] + 100)
    for k in "clear":
        inject_input(nz.rd, "key", k)
    inject_input(nz.rd, "key", "enter")
    for word in ("echo", "signer", "enter", "pin", "to", "sign"):
        for k in word:
            inject_input(nz.rd, "key", k)
        inject_input(nz.rd, "key", "space")
    inject_input(nz.rd, "key", "enter")
    time.sleep(1.5)                      # the shell echoes, the terminal draws
    img = nz.screen()
    assert _bar_text_matches(img, *SIGNER_AT, SIGNER_W, "signer | PIN to sign")
    tw = 80 * 6 + 4                                       # the terminal: 80 columns
    assert _bar_text_matches(img, *TERMINAL_AT, tw, "linux console | linux console")
    assert not _bar_text_matches(img, *TERMINAL_AT, tw, "signer | PIN to sign")
    img.save(os.path.join(nz.tmp, "fake.png"))


def test_hand_made_requests_get_no_signature(nz: Nizza) -> None:
    """Through the capability it is granted, a Linux process may send anything: an unknown
    op, a forged 'PIN ok' answer-shaped message, a sign without a document, a huge one."""
    tag = "21319"                                          # SIGNER's tag 0x5347
    cases = {"9103": "unknown op 3",                       # [3]
             "9200c3": "answer-shaped [0, true]",
             "91 02".replace(" ", ""): "sign without its document",
             "9202a3706f6b": "sign with a str, not bytes"}
    for hexmsg, what in cases.items():
        status, out = nz.linux(f"nizza raw signer {tag} {hexmsg}")
        assert status == 0, (what, out)
        ans = bytes.fromhex(out.strip())
        assert ans[:1] == b"\x93" and ans[1] in (1, 2), (what, ans)   # UNKNOWN_OP, BAD_REQUEST
    assert task_log(nz.rd, "signer").count("signer: signed") == 1   # the first test's only


def test_the_vault_keeps_only_ciphertext_on_the_disk(nz: Nizza) -> None:
    secret = "the launch code is 0000"
    status, out = nz.linux(f"echo '{secret}' | secret put note && secret get note && "
                           "cp /data/secret/note /data/secret/moved && secret ls && sync")
    assert status == 0, out
    assert out.splitlines()[0] == secret and "moved" in out and "note" in out
    status, out = nz.linux("secret get moved; echo status $?")
    assert "vault refused: CORRUPT" in out and "status 1" in out, out
    # the host reads the ext2 image: the file is there, and it is not the text
    debugfs = shutil.which("debugfs", path="/sbin:/usr/sbin:" + os.environ.get("PATH", ""))
    assert debugfs is not None

    def stored() -> bytes:
        r = subprocess.run([debugfs, "-c", "-R", "cat /secret/note", nz.disk],
                           capture_output=True, timeout=30)
        return r.stdout
    wait_for(lambda: len(stored()) == 1 + 12 + len(secret) + 1 + 16, 20,
             "the sealed file on the disk image")
    blob = stored()
    assert secret.encode() not in blob and b"launch" not in blob
    assert blob[0] == 1                                    # vault.VERSION


def test_tcb_of_the_signer_from_the_live_graph(nz: Nizza) -> None:
    r = json.loads(l4run("tcb", "signer", "--json", "--run-dir", nz.rd, timeout=120).stdout)
    names = [c["name"] for c in r["components"]]
    assert names[:2] == ["kernel", "signer"]
    assert {"nitpicker", "fb", "input", "moe", "root", "hal", "io"} <= set(names)
    assert not {"linux", "vault", "block", "terminal"} & set(names), names
    assert {"linux", "vault", "block", "terminal"} <= set(r["outside_tcb"])
    by = {c["name"]: c for c in r["components"]}
    assert any("nitpicker" in w for w in by["fb"]["why"])
    assert any("(device fb0), served by hal" in w for w in by["hal"]["why"])
    assert {"fb0", "input0"} <= set(r["devices"])
    assert any("signer holds gate" in w for w in by["nitpicker"]["why"])
    assert any("pager of signer" in w for w in by["moe"]["why"])
    assert all(c["why"] and c["loc"] > 0 for c in r["components"])
    assert 0 < r["tcb_loc"] < r["monolithic_loc"]
    assert r["reduction"] == round(r["monolithic_loc"] / r["tcb_loc"], 2)
    # the personality's own TCB holds the signer (it calls it), not the other way round
    lin = json.loads(l4run("tcb", "linux", "--json", "--run-dir", nz.rd, timeout=120).stdout)
    assert "signer" in [c["name"] for c in lin["components"]]


def test_three_wrong_pins_lock_the_signer_across_a_restart(nz: Nizza) -> None:
    for left in (1, 0):                 # one wrong PIN so far (test_a_wrong_pin...)
        n = nz.asks()
        job = nz.start("echo z > /tmp/d4; nizza sign /tmp/d4")
        nz.wait_ask(n)
        nz.keypad(["9", "9", "OK"])
        out, _ = job.communicate(timeout=30)
        assert "WRONG_PIN" in out and f"({left} tries left)" in out, out
    status, out = nz.linux("nizza sign /tmp/d4")
    assert status == 1 and "LOCKED" in out, out
    old = ps(nz.rd)["signer"]["pid"]
    l4run("kill", "signer", "--run-dir", nz.rd)
    wait_for(lambda: ps(nz.rd)["signer"]["pid"] not in (None, old)
             and task_log(nz.rd, "signer").count("public key") >= 2, 30, "the signer's restart")
    assert "(locked: 3 wrong PINs)" in task_log(nz.rd, "signer")
    status, out = nz.linux("nizza sign /tmp/d4")
    assert status == 1 and "LOCKED" in out, out
    public_key(nz)                       # the same key after the restart
