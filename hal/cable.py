"""NIC back ends: where frames go when they leave the emulated NIC, and come from.

    Loopback()                 every frame sent is received by the same NIC
    UdpCable(port, peer)       a cable to another HAL: UDP on 127.0.0.1 (or between hosts)
    TapCable(ifname)           a Linux TAP interface (needs root and /dev/net/tun): host tools
                               (ping, tcpdump) see the emulated NIC's frames

Contract: `open(deliver, bind_thread)` starts receiving; each received batch of frames goes
to `deliver(frames)` on the back end's own receive thread (which first calls `bind_thread`
to get an L4 thread, since delivering raises an interrupt). `send(frames)` is called by the
NIC's transmit worker with a batch of frames. `close()` stops the receive thread.

UDP cable wire format: one datagram carries several frames (a batch from one doorbell):
b"L4" then, per frame, u16 big-endian length + the frame. A datagram that does not parse
is dropped and counted (`bad_datagrams`). Batching is why the cable can move tens of
thousands of frames per second from Python.
"""
from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
import threading
from typing import Callable

Deliver = Callable[[list[bytes]], None]
MAGIC = b"L4"
MAX_DATAGRAM = 65000
SOCK_BUF = 8 << 20


class Backend:
    kind = "none"

    def __init__(self) -> None:
        self.deliver: Deliver = lambda frames: None
        self.bad_datagrams = 0

    @property
    def link_up(self) -> bool:
        return True

    def open(self, deliver: Deliver, bind_thread: Callable[[], None]) -> None:
        self.deliver = deliver

    def send(self, frames: list[bytes]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def info(self) -> dict:
        return {"backend": self.kind}


class Loopback(Backend):
    kind = "loopback"

    def send(self, frames: list[bytes]) -> None:
        self.deliver(frames)


def encode_batch(frames: list[bytes]) -> list[bytes]:
    """Pack frames into as few datagrams as fit MAX_DATAGRAM."""
    out: list[bytes] = []
    parts: list[bytes] = [MAGIC]
    size = 2
    pack = struct.Struct(">H").pack
    for f in frames:
        if size + 2 + len(f) > MAX_DATAGRAM and size > 2:
            out.append(b"".join(parts))
            parts, size = [MAGIC], 2
        parts.append(pack(len(f)))
        parts.append(f)
        size += 2 + len(f)
    if size > 2:
        out.append(b"".join(parts))
    return out


def decode_batch(data: bytes | memoryview) -> list[bytes] | None:
    if bytes(data[:2]) != MAGIC:
        return None
    frames = []
    i, n = 2, len(data)
    while i < n:
        if i + 2 > n:
            return None
        ln = data[i] << 8 | data[i + 1]
        i += 2
        if i + ln > n:
            return None
        frames.append(bytes(data[i:i + ln]))
        i += ln
    return frames


class _Receiver(Backend):
    """A back end with a receive thread polling one file descriptor."""

    def __init__(self) -> None:
        super().__init__()
        self.running = False
        self.thread: threading.Thread | None = None

    def fileno(self) -> int:
        raise NotImplementedError

    def receive(self) -> list[bytes] | None:
        raise NotImplementedError

    def open(self, deliver: Deliver, bind_thread: Callable[[], None]) -> None:
        self.deliver = deliver
        self.running = True

        def run() -> None:
            bind_thread()
            poller = select.poll()
            poller.register(self.fileno(), select.POLLIN)
            while self.running:
                if not poller.poll(200):
                    continue
                try:
                    frames = self.receive()
                except OSError:
                    continue
                if frames is None:
                    self.bad_datagrams += 1
                elif frames:
                    self.deliver(frames)

        self.thread = threading.Thread(target=run, name=f"nic-rx-{self.kind}", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.running = False
        if self.thread is not None:
            self.thread.join(5)
            self.thread = None


class UdpCable(_Receiver):
    kind = "udp"

    def __init__(self, port: int = 0, peer: str | None = None, host: str = "127.0.0.1") -> None:
        super().__init__()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUF)
            except OSError:
                pass
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.peer: tuple[str, int] | None = None
        self.buf = bytearray(65536)
        if peer:
            self.set_peer(peer)

    def set_peer(self, peer: str) -> None:
        host, _, port = peer.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"peer {peer!r} must be HOST:PORT")
        self.peer = (host, int(port))

    @property
    def link_up(self) -> bool:
        return self.peer is not None

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[bytes] | None:
        n = self.sock.recv_into(self.buf)
        return decode_batch(memoryview(self.buf)[:n])

    def send(self, frames: list[bytes]) -> None:
        if self.peer is None:
            return
        for dgram in encode_batch(frames):
            try:
                self.sock.sendto(dgram, self.peer)
            except OSError:
                pass            # the far end is gone: frames are lost, as on a cut cable

    def close(self) -> None:
        super().close()
        self.sock.close()

    def info(self) -> dict:
        return {"backend": self.kind, "port": self.port,
                "peer": f"{self.peer[0]}:{self.peer[1]}" if self.peer else None}


TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
RX_BATCH = 64                   # frames read from a TAP per delivery at most


def tap_available() -> bool:
    return os.path.exists("/dev/net/tun") and os.geteuid() == 0


class TapCable(_Receiver):
    kind = "tap"

    def __init__(self, ifname: str = "l4tap0") -> None:
        super().__init__()
        if not tap_available():
            raise OSError("a tap back end needs root and /dev/net/tun")
        self.fd = os.open("/dev/net/tun", os.O_RDWR)
        try:
            fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH", ifname.encode(), IFF_TAP | IFF_NO_PI))
        except OSError:
            os.close(self.fd)
            raise
        self.ifname = ifname
        self.more = select.poll()             # "is another frame queued?" without blocking
        self.more.register(self.fd, select.POLLIN)

    def fileno(self) -> int:
        return self.fd

    def receive(self) -> list[bytes] | None:
        """Every frame the host has queued on the interface now (at most RX_BATCH): one
        delivery, so one DMA check and one interrupt for a burst (TCP acknowledgements
        come in bursts), not one per frame."""
        frames = [os.read(self.fd, 65536)]
        while len(frames) < RX_BATCH and self.more.poll(0):
            frames.append(os.read(self.fd, 65536))
        return frames

    def send(self, frames: list[bytes]) -> None:
        for f in frames:
            try:
                os.write(self.fd, f)
            except OSError:
                pass            # interface down: the frame is lost

    def close(self) -> None:
        super().close()
        os.close(self.fd)

    def info(self) -> dict:
        return {"backend": self.kind, "ifname": self.ifname}


def make_backend(kind: str, port: int = 0, peer: str | None = None, tap: str = "l4tap0") -> Backend:
    if kind == "loopback":
        return Loopback()
    if kind == "udp":
        return UdpCable(port, peer)
    if kind == "tap":
        return TapCable(tap)
    raise ValueError(f"unknown NIC back end {kind!r} (loopback, udp, tap)")
