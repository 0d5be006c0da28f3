"""Linux-style drivers for the HAL's devices, on the DDE/Linux glue (servers/dde_linux).

    l4disk   the block disk: a request ring in DMA memory, completion interrupt, flush
    l4nic    the Ethernet NIC (its own engineer)
    l4fb, l4input   framebuffer and input (their own engineer)

A driver is a module: `kernel.load("servers.dde_linux.drivers.l4disk")` runs its module_init.
"""
