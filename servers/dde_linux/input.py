"""DDE/Linux input: Linux's input core (`input_dev`, capabilities, reporting, handlers).

The driver's side, as in a Linux driver:

    dev = input_allocate_device()
    dev.name = "L4Py keyboard and mouse"
    __set_bit(EV_KEY, dev.evbit); __set_bit(KEY_A, dev.keybit)     # what it can report
    input_set_abs_params(dev, ABS_X, 0, 65535, 0, 0)               # an absolute axis
    input_register_device(dev) -> 0 | -errno
    input_report_key(dev, KEY_A, 1); input_report_abs(dev, ABS_X, x); input_sync(dev)
    input_unregister_device(dev)     # (a registered device is freed by that, as in Linux)
    input_free_device(dev)           # only for a device that was never registered

The consumer's side (Linux's evdev is one; here the input device server): an
`input_handler(name, connect, disconnect, event=..., events=...)` given to
`input_register_handler`; `connect(handler, dev)` is called for every registered device and
answers an `input_handle` (or None: not interested), which the handler opens with
`input_open_device(handle)` to receive that device's events.

Contracts (Linux's input_handle_event, simplified):
- An event whose type the device did not declare in `evbit`, or whose key/rel/abs code it
  did not declare, is dropped (counted in `dev.ignored`). EV_KEY values are 0 release,
  1 press, 2 autorepeat; a press of a key already down, or a release of one up, is dropped.
  An EV_ABS value equal to the axis's last one is dropped; it is clamped to the axis range.
- Events are collected per device until EV_SYN/SYN_REPORT and then handed to every open
  handle at once, as one frame ending with the SYN_REPORT (`events(handle, [(type, code,
  value), ...])`, or `event(handle, type, code, value)` per event): a reader never sees half
  a frame. Reports on an unregistered device are dropped.
- `input_report_*` may be called from any DDEKit thread (an interrupt handler, usually);
  handlers run in the reporting thread, under the device's `event_lock` (so frames of one
  device arrive in order); they must not block for long.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from .kernel import EBUSY, EINVAL, KERN_INFO, printk

# -- event types and codes (include/uapi/linux/input-event-codes.h; the numbers are Linux's) ---
EV_SYN, EV_KEY, EV_REL, EV_ABS, EV_MSC, EV_REP = 0x00, 0x01, 0x02, 0x03, 0x04, 0x14
EV_MAX = 0x1F
SYN_REPORT, SYN_CONFIG, SYN_MT_REPORT, SYN_DROPPED = 0, 1, 2, 3
KEY_RESERVED, KEY_ESC, KEY_1, KEY_0, KEY_BACKSPACE, KEY_TAB = 0, 1, 2, 11, 14, 15
KEY_Q, KEY_W, KEY_E, KEY_R, KEY_T, KEY_Y, KEY_ENTER, KEY_LEFTCTRL = 16, 17, 18, 19, 20, 21, 28, 29
KEY_A, KEY_S, KEY_D, KEY_F, KEY_LEFTSHIFT, KEY_Z, KEY_X, KEY_C = 30, 31, 32, 33, 42, 44, 45, 46
KEY_LEFTALT, KEY_SPACE, KEY_F1, KEY_F12, KEY_UP, KEY_LEFT, KEY_RIGHT, KEY_DOWN = \
    56, 57, 59, 88, 103, 105, 106, 108
KEY_MAX = 0x2FF
BTN_MOUSE = BTN_LEFT = 0x110
BTN_RIGHT, BTN_MIDDLE, BTN_TOUCH = 0x111, 0x112, 0x14A
REL_X, REL_Y, REL_WHEEL, REL_MAX = 0x00, 0x01, 0x08, 0x0F
ABS_X, ABS_Y, ABS_PRESSURE, ABS_MAX = 0x00, 0x01, 0x18, 0x3F
MSC_SCAN, MSC_MAX = 0x04, 0x07
BUS_HOST = 0x19
_MAX = {EV_KEY: KEY_MAX, EV_REL: REL_MAX, EV_ABS: ABS_MAX, EV_MSC: MSC_MAX}


# -- bitmaps (Linux's unsigned long arrays; bit n of the map) ---------------------------------
class Bitmap:
    """A fixed-size set of bit numbers, mutated in place like Linux's bitmaps."""

    def __init__(self, nbits: int) -> None:
        self.nbits = nbits
        self.bits = 0

    def __contains__(self, nr: int) -> bool:
        return 0 <= nr < self.nbits and bool(self.bits >> nr & 1)

    def __iter__(self) -> Any:
        return (n for n in range(self.nbits) if self.bits >> n & 1)


def set_bit(nr: int, addr: Bitmap) -> None:
    if not 0 <= nr < addr.nbits:
        raise IndexError(f"bit {nr} outside a {addr.nbits}-bit map")
    addr.bits |= 1 << nr


__set_bit = set_bit                 # Linux's non-atomic variant: the same here


def clear_bit(nr: int, addr: Bitmap) -> None:
    addr.bits &= ~(1 << nr)


__clear_bit = clear_bit


def test_bit(nr: int, addr: Bitmap) -> bool:
    return nr in addr


# -- the device ----------------------------------------------------------------------------------
@dataclass
class input_id:                      # noqa: N801 - Linux's names
    bustype: int = BUS_HOST
    vendor: int = 0
    product: int = 0
    version: int = 0


@dataclass
class input_absinfo:                 # noqa: N801
    value: int = 0
    minimum: int = 0
    maximum: int = 0
    fuzz: int = 0
    flat: int = 0
    resolution: int = 0


@dataclass(eq=False)
class input_dev:                     # noqa: N801
    name: str = ""
    phys: str = ""
    id: input_id = field(default_factory=input_id)
    evbit: Bitmap = field(default_factory=lambda: Bitmap(EV_MAX + 1))
    keybit: Bitmap = field(default_factory=lambda: Bitmap(KEY_MAX + 1))
    relbit: Bitmap = field(default_factory=lambda: Bitmap(REL_MAX + 1))
    absbit: Bitmap = field(default_factory=lambda: Bitmap(ABS_MAX + 1))
    mscbit: Bitmap = field(default_factory=lambda: Bitmap(MSC_MAX + 1))
    key: Bitmap = field(default_factory=lambda: Bitmap(KEY_MAX + 1))    # keys down now
    absinfo: dict[int, input_absinfo] = field(default_factory=dict)
    dev: Any = None                  # the parent device
    open: Callable[["input_dev"], int] | None = None
    close: Callable[["input_dev"], None] | None = None
    drvdata: Any = None
    registered: bool = False
    users: int = 0                   # open handles
    ignored: int = 0                 # events dropped by the capability/state filter
    event_lock: threading.RLock = field(default_factory=threading.RLock)
    _frame: list[tuple[int, int, int]] = field(default_factory=list)    # under event_lock
    handles: list["input_handle"] = field(default_factory=list)        # under _lock


@dataclass(eq=False)
class input_handle:                  # noqa: N801
    dev: input_dev
    handler: "input_handler"
    name: str = ""
    private: Any = None
    open: int = 0


@dataclass(eq=False)
class input_handler:                 # noqa: N801
    name: str
    connect: Callable[["input_handler", input_dev], input_handle | None]
    disconnect: Callable[[input_handle], None] = lambda h: None
    event: Callable[[input_handle, int, int, int], None] | None = None
    events: Callable[[input_handle, list[tuple[int, int, int]]], None] | None = None
    private: Any = None


_lock = threading.Lock()
_devices: list[input_dev] = []       # registered, in order; guarded by _lock
_handlers: list[input_handler] = []  # guarded by _lock


def input_allocate_device() -> input_dev:
    return input_dev()


def input_free_device(dev: input_dev | None) -> None:
    if dev is not None and dev.registered:
        printk(KERN_INFO + "input: input_free_device of registered %s: unregister it", dev.name)


def input_set_drvdata(dev: input_dev, data: Any) -> None:
    dev.drvdata = data


def input_get_drvdata(dev: input_dev) -> Any:
    return dev.drvdata


def input_set_capability(dev: input_dev, type: int, code: int) -> None:   # noqa: A002
    set_bit(type, dev.evbit)
    bm = {EV_KEY: dev.keybit, EV_REL: dev.relbit, EV_ABS: dev.absbit, EV_MSC: dev.mscbit}.get(type)
    if bm is not None:
        set_bit(code, bm)


def input_set_abs_params(dev: input_dev, axis: int, minimum: int, maximum: int, fuzz: int,
                         flat: int) -> None:
    set_bit(EV_ABS, dev.evbit)
    set_bit(axis, dev.absbit)
    dev.absinfo[axis] = input_absinfo(minimum, minimum, maximum, fuzz, flat)


def input_register_device(dev: input_dev) -> int:
    with _lock:
        if dev.registered:
            return -EBUSY
        if not dev.evbit.bits:
            return -EINVAL
        set_bit(EV_SYN, dev.evbit)             # every device reports frames
        dev.registered = True
        _devices.append(dev)
        handlers = list(_handlers)
    printk(KERN_INFO + "input: %s as input%d", dev.name, len(_devices) - 1)
    for h in handlers:
        _connect(h, dev)
    return 0


def input_unregister_device(dev: input_dev) -> None:
    with _lock:
        if not dev.registered:
            return
        dev.registered = False
        _devices.remove(dev)
        handles, dev.handles = list(dev.handles), []
    for handle in handles:
        handle.handler.disconnect(handle)


def _connect(handler: input_handler, dev: input_dev) -> None:
    handle = handler.connect(handler, dev)
    if handle is not None:
        with _lock:
            dev.handles.append(handle)


def input_register_handler(handler: input_handler) -> int:
    with _lock:
        if handler in _handlers:
            return -EBUSY
        _handlers.append(handler)
        devs = list(_devices)
    for dev in devs:
        _connect(handler, dev)
    return 0


def input_unregister_handler(handler: input_handler) -> None:
    with _lock:
        if handler not in _handlers:
            return
        _handlers.remove(handler)
        gone = [(d, h) for d in _devices for h in d.handles if h.handler is handler]
        for d, h in gone:
            d.handles.remove(h)
    for _, h in gone:
        handler.disconnect(h)


def input_open_device(handle: input_handle) -> int:
    dev = handle.dev
    with dev.event_lock:
        handle.open += 1
        dev.users += 1
        if dev.users == 1 and dev.open is not None:
            ret = dev.open(dev)
            if ret:
                handle.open -= 1
                dev.users -= 1
                return ret
    return 0


def input_close_device(handle: input_handle) -> None:
    dev = handle.dev
    with dev.event_lock:
        if handle.open <= 0:
            return
        handle.open -= 1
        dev.users -= 1
        if dev.users == 0 and dev.close is not None:
            dev.close(dev)


# -- reporting -----------------------------------------------------------------------------------
def _accept(dev: input_dev, type: int, code: int, value: int) -> int | None:   # noqa: A002
    """The value to pass on, or None to drop the event (undeclared, or no change)."""
    if type not in dev.evbit:
        return None
    if type == EV_SYN:
        return value
    if type == EV_KEY:
        if code not in dev.keybit or value not in (0, 1, 2):
            return None
        down = code in dev.key
        if value == 2:
            return value if down else None
        if bool(value) == down:
            return None
        (set_bit if value else clear_bit)(code, dev.key)
        return value
    if type == EV_REL:
        return value if code in dev.relbit and value != 0 else None
    if type == EV_ABS:
        info = dev.absinfo.get(code)
        if code not in dev.absbit or info is None:
            return None
        value = min(max(value, info.minimum), info.maximum)
        if value == info.value:
            return None
        info.value = value
        return value
    return value if code <= _MAX.get(type, -1) else None


def input_event(dev: input_dev, type: int, code: int, value: int) -> None:   # noqa: A002
    with dev.event_lock:
        if not dev.registered:
            return
        v = _accept(dev, type, code, value)
        if v is None:
            dev.ignored += 1
            return
        if type == EV_SYN and code != SYN_REPORT:
            return
        if type != EV_SYN:
            dev._frame.append((type, code, v))
            return
        if not dev._frame:
            return                               # an empty frame tells nobody anything
        frame, dev._frame = dev._frame + [(EV_SYN, SYN_REPORT, 0)], []
        with _lock:
            handles = [h for h in dev.handles if h.open]
        for h in handles:
            _pass(h, frame)


def _pass(h: input_handle, frame: list[tuple[int, int, int]]) -> None:
    if h.handler.events is not None:
        h.handler.events(h, frame)
    elif h.handler.event is not None:
        for t, c, v in frame:
            h.handler.event(h, t, c, v)


def input_report_key(dev: input_dev, code: int, value: int) -> None:
    input_event(dev, EV_KEY, code, 2 if value == 2 else int(bool(value)))


def input_report_rel(dev: input_dev, code: int, value: int) -> None:
    input_event(dev, EV_REL, code, value)


def input_report_abs(dev: input_dev, code: int, value: int) -> None:
    input_event(dev, EV_ABS, code, value)


def input_sync(dev: input_dev) -> None:
    input_event(dev, EV_SYN, SYN_REPORT, 0)


def input_devices() -> list[input_dev]:
    with _lock:
        return list(_devices)
