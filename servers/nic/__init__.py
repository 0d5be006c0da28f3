"""The `nic` device server: the DDE/Linux NIC driver and a session server in one task.

    protocol.py   the NIC session protocol (open, release, info, stats, device_stats)
    stream.py     the packet streams in the session's shared block (layout, source, sink)
    server.py     the server task: glue + l4nic driver + sessions (main)
    client.py     NicSession: what a client (ORe's uplink) uses
    demo.py       a demo client for configs/dde-net.toml
"""
