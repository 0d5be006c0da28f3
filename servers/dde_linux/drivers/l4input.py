"""l4input: the input driver of the HAL keyboard/mouse device (hal/DEVICES.md "Input"), Linux style.

Like a Linux serio/platform input driver: probe maps the registers, flushes what the device
queued before we came (i8042_flush's job), allocates an `input_dev` declaring EV_KEY (the
keys, BTN_LEFT/RIGHT/MIDDLE) and EV_ABS (ABS_X/ABS_Y, 0..65535), registers it, then requests
the interrupt. The handler drains the EVENT register until it reads 0 (empty) and reports
each hardware event as one frame: a KEY word as input_report_key (the HAL's codes are
Linux's key codes), a BUTTON word as the BTN_* key, a MOVE word as ABS_X and ABS_Y; each
followed by input_sync. Opening the device (its first reader) sets CTRL.ENABLE, closing the
last clears it: with no reader the device drops events itself.
"""
from __future__ import annotations

from typing import Any

from servers.dde_linux.device import (dev_get_drvdata, dev_info, dev_set_drvdata, platform_device,
                                      platform_device_id, platform_driver,
                                      platform_driver_register, platform_driver_unregister,
                                      platform_get_irq)
from servers.dde_linux.input import (ABS_X, ABS_Y, BTN_LEFT, BTN_MIDDLE, BTN_RIGHT, EV_KEY,
                                     __set_bit, input_allocate_device, input_dev,
                                     input_free_device, input_get_drvdata, input_register_device,
                                     input_report_abs, input_report_key, input_set_abs_params,
                                     input_set_drvdata, input_sync, input_unregister_device)
from servers.dde_linux.io import IoMem, iounmap, ioremap, readq, writeq
from servers.dde_linux.irq import IRQ_HANDLED, IRQ_NONE, free_irq, request_irq
from servers.dde_linux.kernel import ENOMEM, module_exit, module_init

# registers (hal/DEVICES.md, by index) and the event word
IN_COUNT, IN_EVENT, IN_POINTER_X, IN_POINTER_Y, IN_DROPPED, IN_CTRL = 8, 9, 10, 11, 12, 13
CTRL_ENABLE = 0x1
HW_KEY, HW_BUTTON, HW_MOVE = 1, 2, 3
HW_BUTTONS = {1: BTN_LEFT, 2: BTN_RIGHT, 3: BTN_MIDDLE}
MAX_KEYCODE = 255                     # the keys a keyboard has (KEY_ESC .. 255)
FLUSH_MAX = 1024


class l4input_priv:                   # noqa: N801 - the driver's private state
    def __init__(self, regs: IoMem, idev: input_dev, irq: int) -> None:
        self.regs, self.idev, self.irq = regs, idev, irq
        self.events = 0


def l4input_report(idev: input_dev, word: int) -> None:
    etype, code, value = word >> 56 & 0xFF, word >> 32 & 0xFFFFFF, word & 0xFFFFFFFF
    if etype == HW_KEY:
        input_report_key(idev, code, value)
    elif etype == HW_BUTTON and code in HW_BUTTONS:
        input_report_key(idev, HW_BUTTONS[code], value)
    elif etype == HW_MOVE:
        input_report_abs(idev, ABS_X, value >> 16)
        input_report_abs(idev, ABS_Y, value & 0xFFFF)
    input_sync(idev)


def l4input_interrupt(irq: int, dev_id: Any) -> int:
    priv: l4input_priv = dev_id
    handled = 0
    while True:
        word = readq(priv.regs, IN_EVENT)        # reading pops; 0 = the queue is empty
        if not word:
            break
        l4input_report(priv.idev, word)
        handled += 1
    priv.events += handled
    return IRQ_HANDLED if handled else IRQ_NONE


def l4input_open(idev: input_dev) -> int:
    priv: l4input_priv = input_get_drvdata(idev)
    writeq(priv.regs, IN_CTRL, CTRL_ENABLE)
    return 0


def l4input_close(idev: input_dev) -> None:
    priv: l4input_priv = input_get_drvdata(idev)
    writeq(priv.regs, IN_CTRL, 0)


def l4input_probe(pdev: platform_device) -> int:
    regs = ioremap(pdev)
    irq = platform_get_irq(pdev, 0)
    if irq < 0:
        iounmap(regs)
        return irq
    writeq(regs, IN_CTRL, 0)                     # no reader yet
    for _ in range(FLUSH_MAX):                   # what was queued before us is stale
        if not readq(regs, IN_EVENT):
            break
    idev = input_allocate_device()
    if idev is None:
        iounmap(regs)
        return -ENOMEM
    idev.name, idev.phys, idev.dev = "L4Py keyboard and mouse", f"{pdev.name}/input0", pdev
    __set_bit(EV_KEY, idev.evbit)
    for code in range(1, MAX_KEYCODE + 1):
        __set_bit(code, idev.keybit)
    for btn in HW_BUTTONS.values():
        __set_bit(btn, idev.keybit)
    input_set_abs_params(idev, ABS_X, 0, 0xFFFF, 0, 0)
    input_set_abs_params(idev, ABS_Y, 0, 0xFFFF, 0, 0)
    idev.open, idev.close = l4input_open, l4input_close
    priv = l4input_priv(regs, idev, irq)
    input_set_drvdata(idev, priv)
    ret = input_register_device(idev)
    if ret == 0:
        ret = request_irq(irq, l4input_interrupt, 0, "l4input", priv)
        if ret:
            input_unregister_device(idev)
    else:
        input_free_device(idev)
    if ret:
        iounmap(regs)
        return ret
    dev_set_drvdata(pdev, priv)
    dev_info(pdev, "%s on interrupt line %d", idev.name, irq)
    return 0


def l4input_remove(pdev: platform_device) -> None:
    priv: l4input_priv = dev_get_drvdata(pdev)
    free_irq(priv.irq, priv)
    input_unregister_device(priv.idev)
    writeq(priv.regs, IN_CTRL, 0)
    iounmap(priv.regs)


l4input_driver = platform_driver(name="l4input", probe=l4input_probe, remove=l4input_remove,
                                 id_table=[platform_device_id("input")])


@module_init
def l4input_init() -> int:
    return platform_driver_register(l4input_driver)


@module_exit
def l4input_exit() -> None:
    platform_driver_unregister(l4input_driver)
