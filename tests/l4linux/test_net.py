"""L⁴Linux on the network: two personalities on one ORe switch, the host through TAP.

The image is configs/linux-net.toml (linux-a runs busybox httpd, linux-b is a client, `web`
is the native HTTP task of servers/netstack/demo.py), with a native `fetch` task added that
downloads a file from linux-a's httpd at boot. The whole system runs inside a network
namespace of its own (tests/netns.py), whose TAP device gets the host side's 10.0.2.2/24.
The judges are host `curl` and `ping`, and busybox `wget`, `nc`, `ping` and `sha256sum`
inside the personalities: every download is checked by sha256 against its source. Then the
faults: a chaos plan (kind "switch") that drops and corrupts linux-a's frames in ORe while
the host downloads from it, ORe killed under a running download (the sessions reopen, TCP
retransmits), one personality killed (the other goes on serving). Skipped without root,
/dev/net/tun, network namespaces or the host tools.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from typing import Any, Iterator

import pytest

from kernel.user.testing import PROJECT_ROOT
from servers.netstack.demo import body
from tests.launcher.helpers import l4run, record, task_log, until
from tests.netns import netns as namespace, netns_skip

SKIP = netns_skip("ip", "ping", "curl")
pytestmark = [pytest.mark.skipif(SKIP is not None or not os.path.exists("/bin/busybox"),
                                 reason=SKIP or "needs /bin/busybox"),
              pytest.mark.slow]          # ~95 s: a boot of eight tasks, `l4run down` of them

TAP, HOST, WEB, A, B = "l4tap0", "10.0.2.2", "10.0.2.15", "10.0.2.20", "10.0.2.21"
INIT_A = ("mkdir -p /srv && echo '<h1>busybox httpd in L4Linux</h1>' > /srv/index.html && "
          "seq 1 450000 > /srv/blob && seq 3 1200000 > /srv/big && exec httpd -f -p 80 -h /srv")
FETCH = f"""
[[task]]
name = "fetch"
run = "servers.netstack.demo:fetch"
args = ["url={A}:80/blob", "gw={HOST}"]
restart = "never"
net = {{ switch = "ore", ip = "10.0.2.16/24", broadcast = true }}
"""


def _image() -> str:
    with open(os.path.join(PROJECT_ROOT, "configs", "linux-net.toml")) as f:
        text = f.read()
    start = text.index('init = "mkdir -p /srv')
    end = text.index("\n", start)
    return text[:start] + "init = " + _toml(INIT_A) + text[end:] + FETCH


def _toml(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("linux-net")
    rd = str(base / "run")
    os.makedirs(rd)
    image = str(base / "linux-net.toml")
    with open(image, "w") as f:
        f.write(_image())
    with namespace("l4lx") as ns:
        ns.boot(image, rd)
        ns.tap_up(TAP, f"{HOST}/24", timeout=20)
        for name in ("linux-a", "linux-b"):
            until(f"{name}'s eth0", lambda: "eth0: " in task_log(rd, name), 30)
        until("the native task's HTTP", lambda: "HTTP on 80" in task_log(rd, "web"), 30)
        until("linux-a's httpd", lambda: ns.run("curl", "-s", "-m", "5", "-o", "/dev/null",
                                                f"http://{A}/", check=False).returncode == 0, 90)
        yield {"ns": ns, "rd": rd}


def sh(net: dict[str, Any], task: str, script: str, timeout: float = 60) -> str:
    p = l4run("linux", "run", "--task", task, "--run-dir", net["rd"], "--timeout", str(timeout),
              "--", "sh", "-c", script, timeout=timeout + 10, check=False)
    assert p.returncode == 0, f"{task}: {script}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def curl(net: dict[str, Any], url: str, timeout: float = 60) -> bytes:
    p = subprocess.run(["ip", "netns", "exec", net["ns"].name, "curl", "-sS", "-m", str(timeout),
                        url], capture_output=True, timeout=timeout + 10)
    assert p.returncode == 0, p.stderr
    return p.stdout


def sha_in(net: dict[str, Any], task: str, path: str) -> str:
    return sh(net, task, f"sha256sum {path}").split()[0]


def _received(out: str) -> int:
    m = re.search(r"(\d+) (?:packets )?received", out)
    return int(m.group(1)) if m else 0


def _size(net: dict[str, Any], path: str) -> int:
    return int(sh(net, "linux-a", f"wc -c < {path}").split()[0])


def test_host_curl_and_ping_reach_both_personalities(net: dict[str, Any]) -> None:
    assert b"busybox httpd in L4Linux" in curl(net, f"http://{A}/")
    for addr in (A, B):
        p = net["ns"].run("ping", "-c", "4", "-i", "0.3", "-W", "3", addr, check=False)
        assert _received(p.stdout) >= 3, p.stdout + p.stderr       # a loaded host may lose one
    data = curl(net, f"http://{A}/blob")
    assert len(data) == _size(net, "/srv/blob") > 3_000_000
    assert hashlib.sha256(data).hexdigest() == sha_in(net, "linux-a", "/srv/blob")


def test_ping_from_inside_reaches_the_host(net: dict[str, Any]) -> None:
    out = sh(net, "linux-a", f"ping -c 3 -W 3 {HOST}")
    assert _received(out) >= 2, out


def test_linux_to_linux_with_wget_and_nc(net: dict[str, Any]) -> None:
    sh(net, "linux-b", f"wget -q -O /tmp/blob http://{A}/blob")
    assert sha_in(net, "linux-b", "/tmp/blob") == sha_in(net, "linux-a", "/srv/blob")
    sh(net, "linux-a", "nc -l -p 7100 > /tmp/nc.out 2>&1 &")
    time.sleep(0.5)
    sh(net, "linux-b", f"echo line through nc | nc {A} 7100")
    until("nc's line in linux-a", lambda: "line through nc" in sh(net, "linux-a", "cat /tmp/nc.out"), 10)


def test_linux_and_the_native_task_talk_both_ways(net: dict[str, Any]) -> None:
    n = 1 << 20
    got = sh(net, "linux-b", f"wget -q -O - http://{WEB}/bytes/{n} | sha256sum").split()[0]
    assert got == hashlib.sha256(body(n)).hexdigest()
    refused = sh(net, "linux-b", f"nc {HOST} 1 < /dev/null 2>&1; echo rc=$?")
    assert "refused" in refused and "rc=1" in refused, refused      # the host's RST
    r = until("the fetch task's download", lambda: record(net["rd"], "fetch", "FETCH"), 60)
    assert r.get("bytes") == _size(net, "/srv/blob"), r
    assert r["sha256"] == sha_in(net, "linux-a", "/srv/blob"), r


def test_lossy_corrupting_frames_still_give_the_right_file(net: dict[str, Any]) -> None:
    """A chaos plan (kind "switch", attached to the running system) makes ORe drop 3 % and
    corrupt 2 % of linux-a's frames while the host downloads from its httpd: TCP
    retransmits, the checksums drop the changed frames, the file arrives whole (sha256)."""
    from concurrent.futures import ThreadPoolExecutor

    from launcher.chaos import parse_plan, run_plan
    rd = net["rd"]
    plan = parse_plan({"chaos": {"name": "lossy-switch", "seed": 9, "duration": "31s",
                                 "settle": "0.5s"},
                       "schedule": [{"at": "0s", "kind": "switch", "service": "ore",
                                     "for": "30s", "knobs": {"drop": 0.03, "corrupt": 0.02,
                                                             "ports": ["linux-a"]}}]},
                      "lossy-switch.toml")

    def faults() -> dict[str, Any]:
        return dict(json.loads(l4run("net", "--json", "--run-dir", rd).stdout)["ore"]["faults"])

    with ThreadPoolExecutor(1) as pool:
        chaos = pool.submit(run_plan, plan, run_dir=rd)
        until("the switch fault armed", lambda: chaos.done() or faults()["active"], 20)
        t0 = time.monotonic()
        data = curl(net, f"http://{A}/blob", timeout=120)
        took, during = time.monotonic() - t0, faults()
        report = chaos.result(timeout=60)
    assert hashlib.sha256(data).hexdigest() == sha_in(net, "linux-a", "/srv/blob")
    assert report["verdict"] == "pass" and report["faults"].get("switch") == 1, report
    assert during["active"], f"the download ({took:.1f} s) outlasted the fault"
    counts = faults()["counts"]
    assert counts["dropped"] > 10 and counts["corrupted"] > 5, counts
    assert not faults()["active"]                                  # reset after `for`


def test_ore_restarted_under_a_transfer(net: dict[str, Any]) -> None:
    """The switch killed while the host downloads 10 MB from linux-a: the personality's
    stack reopens its session, TCP retransmits what was lost, the file arrives whole."""
    out = os.path.join(os.path.dirname(net["rd"]), "big.out")
    dl = subprocess.Popen(["ip", "netns", "exec", net["ns"].name, "curl", "-sS", "-m", "120",
                           "--limit-rate", "2M", "-o", out, f"http://{A}/big"],
                          stderr=subprocess.PIPE)
    try:
        until("the download under way", lambda: os.path.exists(out) and os.path.getsize(out) > 1 << 20, 30)
        l4run("kill", "ore", "--run-dir", net["rd"])
        assert dl.wait(150) == 0, dl.stderr.read() if dl.stderr else ""
    finally:
        if dl.poll() is None:
            dl.kill()
            dl.wait()
        if dl.stderr is not None:
            dl.stderr.close()
    with open(out, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == sha_in(net, "linux-a", "/srv/big")
    assert "session lost" in task_log(net["rd"], "linux-a")


def test_one_personality_killed_the_other_keeps_serving(net: dict[str, Any]) -> None:
    l4run("kill", "linux-b", "--run-dir", net["rd"])
    assert b"busybox httpd in L4Linux" in curl(net, f"http://{A}/")
    until("linux-b back", lambda: task_log(net["rd"], "linux-b").count("eth0: ") >= 2, 40)
    p = net["ns"].run("ping", "-c", "3", "-W", "2", B, check=False)
    assert _received(p.stdout) >= 1, p.stdout
