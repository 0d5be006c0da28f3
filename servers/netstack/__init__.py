"""netstack: an IPv4 stack an L4 task uses as a library, over a `nic` or ORe session.

    from servers.netstack import Stack, NicLink
    stack = Stack(NicLink(l4, l4.caps["net"]), "10.0.2.15/24", gateway="10.0.2.2").start()
    s = stack.tcp(); s.bind(80); s.listen(); conn, peer = s.accept()

    wire.py     the formats (Ethernet, ARP, IPv4, ICMP, UDP, TCP) and the checksum
    link.py     the link under the stack: NicLink (a nic/ORe session), MemLink (tests)
    stack.py    Stack: the pump thread, ARP, IPv4, ICMP echo (answered; `ping`), demultiplexing
    tcp.py      TCP connections and listeners
    socket.py   UdpSocket, TcpSocket: blocking calls with timeouts
    demo.py     tasks: echo servers (UDP and TCP), an HTTP server, clients
    config.py   the task's address from its arguments or its session (or by DHCP)
    dhcp.py     DHCP: the message format (shared with servers/dhcpd) and the client

Why not PyTCP (the pure-Python stack on PyPI, 2.7.6), checked first: its stack is a set of
module-level singletons (`pytcp.lib.stack`: one timer, one ARP cache, one packet handler
per process, configured through `pytcp.config` globals), so two stacks cannot share a test
process and a stopped stack cannot be started clean; its link layer reads and writes a TAP
descriptor with select() in two threads of its own, and its constructor opens /dev/net/tun
(exiting the process if it cannot) — over a NicSession, whose streams belong to one thread,
both rings would have to be replaced from outside; its timer thread wakes every millisecond
and walks every timer (a steady load on the two shared cores, timers that count ticks, not
time); its six threads are not daemons and stop by sleeping; and it is GPL-3.0, which the
project would take on as a dependency. The stack here is ~1,500 lines with one pump thread
that sleeps until a frame, a timer or a socket call needs it.
"""
from .link import MemLink, NicLink
from .socket import TcpSocket, UdpSocket
from .stack import Stack

__all__ = ["MemLink", "NicLink", "Stack", "TcpSocket", "UdpSocket"]
