"""The ledger: a durable counter store that runs each `add` exactly once, and the workload
clients that record every operation for the chaos history checker (launcher/chaos/history.py).
protocol.py declares it, server.py implements it, client.py is the recording workload."""
