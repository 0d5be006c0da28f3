"""Capability slots are checked at their edges, and a slot names one type of object.

- A new capability may go to slots FIRST_FREE_SLOT .. MAX_SLOTS-1 of a task (both ends
  included), never to the reserved slots below or past the end: INVALID, nothing inserted.
- A call that needs an object of one type refuses a slot holding another with NO_CAP, whether
  that type's number is below or above the one asked for (kernel/core/caps.py `lookup`).
"""
from __future__ import annotations

from typing import Any

import pytest

from kernel.abi import FIRST_FREE_SLOT, MAX_SLOTS, SLOT_TASK, SLOT_THREAD, Rights
from kernel.user.errors import InvalidArgument, NoCapability


@pytest.fixture
def empty_task(shared_kit: Any) -> Any:
    """A task with no process and only the slots it is born with; root holds it."""
    root = shared_kit.root
    new = root.create_task("slots", 16)
    yield new
    root.destroy(new.slot)


@pytest.mark.parametrize("dst", [FIRST_FREE_SLOT, FIRST_FREE_SLOT + 1, MAX_SLOTS - 1])
def test_the_first_and_last_free_slots_take_a_capability(shared_kit: Any, empty_task: Any,
                                                        dst: int) -> None:
    root = shared_kit.root
    gate = root.create_gate(0x51)
    assert root.task_map(empty_task.slot, gate, dst, Rights.INVOKE) == dst
    assert root.cap_inspect(gate)["derived"] == 1
    root.cap_delete(gate)


@pytest.mark.parametrize("dst", [FIRST_FREE_SLOT - 1, 5, 0, MAX_SLOTS, MAX_SLOTS + 1])
def test_reserved_and_outside_slots_are_refused(shared_kit: Any, empty_task: Any, dst: int) -> None:
    root = shared_kit.root
    gate = root.create_gate(0x52)
    with pytest.raises(InvalidArgument):
        root.task_map(empty_task.slot, gate, dst, Rights.INVOKE)
    with pytest.raises(InvalidArgument):
        root.cap_derive(gate, Rights.INVOKE, dst)
    assert root.cap_inspect(gate)["derived"] == 0, "a refused capability was inserted"
    root.cap_delete(gate)


def test_a_slot_of_another_type_is_no_cap_below_and_above(shared_kit: Any) -> None:
    root = shared_kit.root
    gate = root.create_gate(0x53)
    irq = root.create_irq()
    # GATE asked: a TASK and a THREAD (numbered below GATE), an IRQ (above)
    for slot in (SLOT_TASK, SLOT_THREAD, irq):
        with pytest.raises(NoCapability):
            root.call(slot, b"x", snd_timeout=0)
        with pytest.raises(NoCapability):
            root.send(slot, b"x", timeout=0)
    # IRQ asked: a GATE and a TASK (below)
    for slot in (gate, SLOT_TASK):
        with pytest.raises(NoCapability):
            root.irq_trigger(slot)
    # THREAD asked: a GATE (above)
    with pytest.raises(NoCapability):
        root.bind_gate(gate, gate)
    assert root.kernel_info()["stats"]["kernel_bugs"] == 0
    root.cap_delete(gate)
    root.cap_delete(irq)
