"""Small device drivers: tasks that reach the HAL's devices through the io server.

    common   open a device through io (`open_device`), map physical RAM (`PhysRam`)
    block    writes a sector by DMA, reads it back, flushes, logs the result
    fbdemo   sets a mode and draws a test picture into the framebuffer
    input    drains the keyboard/mouse queue on each interrupt and logs every event
    probe    tries to open each device it is told about and logs what io answered

Each runs as a task with the capability "io" the launcher gives to a task whose image entry
has `devices = [...]` (launcher/devices.py); see configs/devices.toml.
"""
