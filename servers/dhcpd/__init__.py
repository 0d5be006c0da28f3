"""dhcpd: a DHCP server as an L4 task, so an image with no host network still hands out addresses.

    [[task]]
    name = "dhcpd"
    run = "servers.dhcpd.server:main"
    args = ["pool=10.0.2.100-10.0.2.199/24", "router=10.0.2.2", "lease=600"]
    net = { switch = "ore", ip = "10.0.2.3/24" }      # its own address: static
    provides = ["dhcpd"]                               # its protocol (protocol.py)

    pool.py     the leases: a pool of addresses, one lease per client MAC, offers, expiry
    server.py   the task: its stack (servers/netstack), UDP port 67, DISCOVER/REQUEST/
                DECLINE/RELEASE/INFORM answered from the pool; arguments checked first
    protocol.py its protocol on the task's main thread: leases(), stats() (give the task
                provides = ["dhcpd"] to reach it; the conformance suite checks it)

The message format is the client's (servers/netstack/dhcp.py): one declaration for both.
"""
