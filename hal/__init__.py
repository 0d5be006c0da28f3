"""The HAL: the emulated machine, one process, an L4 task that owns the device state.

Modules (one mechanism each):
    ram       physical RAM as the devices see it; every DMA range checked
    device    the register file all devices share: common registers, error status, fault knobs
    pic       the interrupt controller (mask, pending, in service, EOI) -> kernel IRQ objects
    timer, disk, fb, input, nic    the devices (registers in hal/DEVICES.md)
    cable     NIC back ends: loopback, UDP cable to another HAL, Linux TAP
    protocol  the register (DEV) and bus (BUS) protocols, declared once with kernel.user.rpc
    machine   builds and wires the devices, serves register IPC on the main thread
    control   the control socket: fault knobs, screenshots, input, status, stop
    main      command line (`python -m hal`, task `hal.main:task`)
    driver    driver side: DeviceHandle, open_devices, NicRings (a minimal polling NIC driver)
    tools     control-socket clients: screenshot, inject_input, set_faults
    testing   HalRig: a kernel plus HALs, for tests and benchmarks

Principles: a driver touches a device only through its I/O capability (a gate); DMA only
into RAM, range-checked; bad register values are error status, never a crash; interrupts
are kernel IRQ objects, held while masked or in service.
"""
