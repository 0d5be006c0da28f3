"""The stack: in-process (two stacks on a MemLink wire, with loss, corruption and duplicates),
and in a booted machine (two tasks' stacks on one loopback NIC, the HAL NIC's loss knob).

In-process: ARP resolution (one request, both caches learn), ICMP echo both ways, UDP round
trip and a closed port, TCP refused (RST), a transfer both ways on a clean wire and one with
10% loss + corruption + duplicates that still completes intact (sha256), FIN states after
close, timeouts on an idle socket, a slow reader whose window updates cause no retransmission,
and window updates told from duplicate ACKs on one Tcb driven by hand. Booted: the `fetch` task downloads from the `serve` task
through the nic server, once clean, once with `l4run faults nic0 loss=0.1`, and once more
after the nic server was killed (the stacks reopen their sessions).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from typing import Any, Iterator

import pytest

from launcher.netimage import net_image, nic, session, task
from servers.netstack import MemLink, Stack
from servers.netstack import tcp, wire
from servers.netstack.demo import body
from tests.launcher.helpers import assert_clean, l4run, system_pids

A, B = "10.0.0.1", "10.0.0.2"


@pytest.fixture
def pair() -> Iterator[tuple[Stack, Stack, MemLink, MemLink]]:
    la, lb = MemLink.pair(seed=7)
    sa, sb = Stack(la, f"{A}/24", name="a").start(), Stack(lb, f"{B}/24", name="b").start()
    try:
        yield sa, sb, la, lb
    finally:
        sa.stop()
        sb.stop()


def _serve_once(stack: Stack, port: int, data: bytes) -> threading.Thread:
    lsock = stack.tcp()
    lsock.bind(port)
    lsock.listen()

    def run() -> None:
        # Generous: on the lossy wire the client's ARP and SYN may need retries at 1, 2, 4 s
        # (RTO_INIT, doubled), and the server's SYN-ACK too, before the handshake completes.
        conn, _ = lsock.accept(timeout=60)
        with conn:
            conn.sendall(data, timeout=60)
            conn.drain(timeout=60)
        lsock.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _download(stack: Stack, addr: str, port: int) -> bytes:
    got = bytearray()
    with stack.tcp() as c:
        c.connect((addr, port), timeout=60)
        while True:
            d = c.recv(1 << 20, timeout=30)
            if not d:
                return bytes(got)
            got += d


def test_arp_and_icmp_echo(pair: Any) -> None:
    sa, sb, _, _ = pair
    assert sa.ping(B, timeout=2) is not None
    assert sb.ping(A, timeout=2) is not None                  # b learnt a from a's request
    assert sa.stats()["arp"] == {B: "02:00:00:00:00:02"} and sb.stats()["arp"][A] == "02:00:00:00:00:01"
    assert sa.counts["arp_requests"] == 1 and sb.counts["arp_requests"] == 0
    assert sb.counts["icmp_echo_replies"] == 1 and sa.counts["icmp_echo_replies"] == 1
    assert sa.ping("10.0.0.99", timeout=0.3) is None          # nobody: ARP unanswered


def test_udp_round_trip_and_closed_port(pair: Any) -> None:
    sa, sb, _, _ = pair
    with sb.udp(7) as srv, sa.udp() as cli:
        cli.sendto(b"hello", (B, 7))
        data, peer = srv.recvfrom(timeout=2)
        assert data == b"hello" and peer == (A, cli.port)
        srv.sendto(data.upper(), peer)
        assert cli.recvfrom(timeout=2) == (b"HELLO", (B, 7))
        cli.sendto(b"nobody", (B, 9))
        with pytest.raises(TimeoutError):
            cli.recvfrom(timeout=0.2)
    assert sb.counts["drop_udp_no_port"] == 1
    with pytest.raises(OSError):
        sa.udp(sa.udp(5).port)                               # port in use


def test_tcp_refused_and_timeouts(pair: Any) -> None:
    sa, sb, _, _ = pair
    with pytest.raises(ConnectionRefusedError):
        sa.tcp().connect((B, 81), timeout=5)
    lsock = sb.tcp()
    lsock.bind(80)
    lsock.listen()
    with pytest.raises(TimeoutError):
        lsock.accept(timeout=0.1)
    c = sa.tcp()
    c.connect((B, 80), timeout=5)
    s, peer = lsock.accept(timeout=5)
    assert peer == (A, c.port) and c.state == s.state == tcp.ESTABLISHED
    with pytest.raises(TimeoutError):
        s.recv(timeout=0.1)
    c.sendall(b"ping")
    assert s.recv(timeout=5) == b"ping"
    c.close()
    assert s.recv(timeout=5) == b""                          # the peer's FIN
    assert s.state == tcp.CLOSE_WAIT
    with pytest.raises(BrokenPipeError):
        c.send(b"late")
    s.close()
    deadline = time.monotonic() + 5
    while sb.tcbs and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not sb.tcbs and c.state in (tcp.TIME_WAIT, tcp.CLOSED)
    lsock.close()


def test_tcp_transfer_both_ways(pair: Any) -> None:
    sa, sb, _, _ = pair
    data = os.urandom(3 << 20)
    t = _serve_once(sb, 80, data)
    assert hashlib.sha256(_download(sa, B, 80)).digest() == hashlib.sha256(data).digest()
    t.join(10)
    t = _serve_once(sa, 8080, data[:1 << 20])
    assert _download(sb, A, 8080) == data[:1 << 20]
    t.join(10)


def test_tcp_slow_reader_window_updates_are_not_losses(pair: Any) -> None:
    """A reader slower than the wire: the receive window fills, and every read that makes
    room sends a window update (the same ACK number). On a clean wire none of them may be
    taken for a duplicate ACK: no fast retransmit, no timeout, nothing sent twice."""
    sa, sb, la, lb = pair
    data = os.urandom(2 << 20)
    t = _serve_once(sb, 80, data)
    got = bytearray()
    with sa.tcp() as c:
        c.connect((B, 80), timeout=10)
        while True:
            d = c.recv(4096, timeout=30)
            if not d:
                break
            got += d
            if len(got) % (256 << 10) < 4096:
                time.sleep(0.02)                     # the window closes; then small reads open it
    t.join(10)
    assert bytes(got) == data
    assert sb.counts["tcp_fast_retransmits"] == 0 and sb.counts["tcp_timeouts"] == 0
    assert sa.counts["tcp_in"] >= len(data) // tcp.MSS


def test_window_updates_are_not_duplicate_acks() -> None:
    """RFC 5681: an ACK that repeats the number but changes the window is a window update.
    One Tcb of a stack that is not started, driven by hand with data in flight."""
    la, _ = MemLink.pair()
    st = Stack(la, f"{A}/24", name="a")
    t = tcp.Tcb(st, 80, wire.ip_bytes(B), 5000)
    with st.lock:
        t.state, t.mss, t.rcv_nxt = tcp.ESTABLISHED, tcp.MSS, 7000
        t.snd_una = t.snd_nxt = t.snd_max = 1000
        t.snd_wnd = 50000
        t.sndbuf += bytes(20 * tcp.MSS)
        t.output()                                    # ten segments in flight (cwnd)
        assert (t.snd_nxt - t.snd_una) & tcp.MASK == 10 * tcp.MSS

        def ack(win: int) -> None:
            t.input(wire.Segment(5000, 80, 7000, 1000, wire.ACK, win, 0, -1, b""), 1.0)
        for win in (51000, 52000, 53000, 54000):      # the reader made room, four times
            ack(win)
        assert st.counts["tcp_fast_retransmits"] == 0 and t.dupacks == 0
        for _ in range(3):                            # true duplicates: same number, same window
            ack(54000)
        assert st.counts["tcp_fast_retransmits"] == 1
    st.link.close()


def test_tcp_transfer_through_loss_corruption_duplicates(pair: Any) -> None:
    sa, sb, la, lb = pair
    for link in (la, lb):
        link.loss, link.corrupt, link.duplicate = 0.1, 0.02, 0.02
    data = os.urandom(256 << 10)
    t = _serve_once(sb, 80, data)
    got = _download(sa, B, 80)
    t.join(20)
    assert len(got) == len(data) and hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert sb.counts["tcp_timeouts"] + sb.counts["tcp_fast_retransmits"] > 0
    assert sa.counts["drop_bad_ip"] + sa.counts["drop_bad_tcp"] + sb.counts["drop_bad_ip"] \
        + sb.counts["drop_bad_tcp"] > 0                      # corrupted frames were refused


# -- in a booted machine: two tasks' stacks on one loopback NIC ----------------------------------
SIZE = 1 << 20
IMAGE = net_image(
    "netstack-loop-test", nics=[nic("nic0")], nic_clients={"1": "serve", "2": "fetch"}, tasks=[
        task("serve", "servers.netstack.demo:serve",
             ["ip=10.0.3.1/24", "mac=02:00:00:00:03:01", "report=0.5"], caps=session("nic", 1)),
        task("fetch", "servers.netstack.demo:fetch",
             ["ip=10.0.3.2/24", "mac=02:00:00:00:03:02", f"url=10.0.3.1:80/bytes/{SIZE}",
              f"size={SIZE}"], caps=session("nic", 2))])


def _fetches(rd: str) -> list[dict[str, Any]]:
    try:
        with open(os.path.join(rd, "logs", "fetch.log"), errors="replace") as f:
            return [json.loads(ln[6:]) for ln in f if ln.startswith("FETCH ")]
    except FileNotFoundError:
        return []


def _reports(rd: str, after: dict[str, Any]) -> dict[str, Any] | None:
    """The serve task's last counters that include the lossy download's retransmissions."""
    with open(os.path.join(rd, "logs", "serve.log"), errors="replace") as f:
        lines = [json.loads(ln[9:]) for ln in f if ln.startswith("NETSTACK ")]
    last = lines[-1] if lines else None
    return last if last and last.get("tcp_timeouts", 0) + last.get("tcp_fast_retransmits", 0) else None


def _last_report(rd: str) -> dict[str, Any] | None:
    with open(os.path.join(rd, "logs", "serve.log"), errors="replace") as f:
        lines = [ln for ln in f if ln.startswith("NETSTACK ")]
    return json.loads(lines[-1][9:]) if lines else None


def _until(what: str, fn: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (v := fn()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return v


def test_booted_tasks_transfer_with_loss_and_a_restarted_nic_server(tmp_path: Any) -> None:
    rd = str(tmp_path / "run")
    os.makedirs(rd)
    image = str(tmp_path / "loop.toml")
    with open(image, "w") as f:
        f.write(IMAGE)
    shm_before = set(os.listdir("/dev/shm"))
    l4run("boot", image, "--detach", "--run-dir", rd)
    pids = system_pids(rd)
    try:
        clean = _until("the clean download", lambda: _fetches(rd), 60)[0]
        assert "error" not in clean and clean["intact"] and clean["bytes"] == SIZE, clean
        l4run("faults", "nic0", "loss=0.1", "--run-dir", rd)
        l4run("restart", "fetch", "--run-dir", rd)
        lossy = _until("the download with loss", lambda: _fetches(rd)[1:], 120)[0]
        assert "error" not in lossy and lossy["intact"] and lossy["bytes"] == SIZE, lossy
        print("lossy download:", {k: lossy[k] for k in ("bytes", "seconds", "mb_per_s")})
        served = _until("the server's counters", lambda: _reports(rd, lossy), 10)
        assert served.get("tcp_timeouts", 0) + served.get("tcp_fast_retransmits", 0) > 0, served
        # the nic server dies: both stacks see SessionLost, reopen, and traffic resumes
        l4run("faults", "nic0", "loss=0", "--run-dir", rd)
        l4run("kill", "nic", "--run-dir", rd)
        _until("the server's stack reopened its session",
               lambda: (r := _last_report(rd)) is not None and r["reopened"] >= 1, 90)
        l4run("restart", "fetch", "--run-dir", rd)
        again = _until("the download after the restart", lambda: _fetches(rd)[2:], 120)[0]
        assert "error" not in again and again["intact"] and again["bytes"] == SIZE, again
    finally:
        l4run("down", "--run-dir", rd, check=False)
    assert_clean(rd, pids, shm_before)
