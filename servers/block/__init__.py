"""The `block` device server: a disk driven by the DDE/Linux l4disk driver in this task,
served to many clients with a per-client policy (servers/block/protocol.py)."""
