"""ORe: the software network switch (paper §4.4). One session per client — a virtual NIC
with its own MAC, the `nic` session's interface — and the uplink to the `nic` server.

    protocol.py   the ORE protocol: the NIC ops at their opcodes, plus broadcast, counters
    switch.py     ports, policy, the MAC table and the forwarding decision (no IPC)
    blocks.py     the sessions' shared blocks, from sigma0
    server.py     the task: sessions, the uplink, moving frames (main)
    demo.py       ping/pong clients for configs/net.toml
"""
