"""launcher/tcb.py's two halves without a booted system: the walk over a capability graph
(the rows KERNEL_INFO answers, turned into a graph by launcher/caps.py as `l4run caps`
does) and the line counter. tests/nizza/test_nizza.py runs `l4run tcb` on a live system."""
from __future__ import annotations

import os

from launcher import caps, tcb


def row(tid: int, name: str, held: list[tuple[str, int, int, int | None]],
        serves: list[int] = (), handler: int | None = None, pager: int | None = None
        ) -> dict:
    """A KERNEL_INFO task row: caps [slot, type, object, rights, label, ptask, pslot]."""
    return {"id": tid, "name": name,
            "caps": [[10 + i, kind, obj, rights, label, None, None]
                     for i, (kind, obj, rights, label) in enumerate(held)],
            "links": [[tid + 1, pager, handler, False]],
            "served": [[g, 1, tid + 1] for g in serves], "irqs": [], "maps": []}


def graph() -> dict:
    # root (2) serves 100 (the handler gate); app (10) holds gui (gate 200 of gui, 20);
    # gui holds drv's gate 300 and hal's device gate 401 (label 0x101); root holds every
    # gate; other (40) holds app's gate 500 and a no-rights cap to app's task.
    return caps.graph([
        row(2, "root", [("gate", 200, 3, 1), ("gate", 300, 3, 1), ("gate", 600, 3, 1),
                        ("task", 10, 15, None)], serves=[100]),
        row(10, "app", [("gate", 200, 1, 6), ("gate", 100, 1, 1)], serves=[500],
            handler=100),
        row(20, "gui", [("gate", 300, 1, 1), ("gate", 401, 1, 0x101)], serves=[200],
            handler=100),
        row(30, "drv", [], serves=[300], handler=100),
        row(50, "hal", [("task", 30, 1, None)], serves=[400, 401]),
        row(40, "other", [("gate", 500, 1, 1), ("task", 10, 0, None)], serves=[600]),
    ])


def test_the_walk_follows_gates_handlers_and_holders_but_not_root_or_callers() -> None:
    got = {m.name: m.why for m in tcb.members(graph(), "app", ["pic", "fb0"])}
    assert list(got) == ["kernel", "app", "gui", "root", "drv", "hal"]
    assert got["gui"] == ["app holds gate 200 label 6, served by gui"]
    assert "root is the exception handler of app's thread 11" in got["root"]
    assert "root holds a capability to app's task (invoke+write+grant+delete)" in got["root"]
    assert got["hal"] == ["gui holds gate 401 label 257 (device fb0), served by hal",
                          "hal holds a capability to drv's task (invoke)"]
    # other calls app and holds a right-less cap to its task: not in app's TCB; root's own
    # gates (other's 600) are not followed
    assert "other" not in got


def test_an_unknown_task_is_named_with_the_ones_there_are() -> None:
    try:
        tcb.members(graph(), "nobody")
    except tcb.TcbError as e:
        assert "no task 'nobody'" in str(e) and "app, drv, gui, hal, other, root" in str(e)
    else:
        raise AssertionError("no error")


def test_lines_of_code_leave_out_blanks_comments_and_docstrings(tmp_path: os.PathLike) -> None:
    path = os.path.join(str(tmp_path), "m.py")
    with open(path, "w") as f:
        f.write('"""A module\n\ndocstring."""\n# a comment\n\nimport os  # why\n\n\n'
                'def f(x):\n    """Its docstring."""\n    return (x +\n            1)\n'
                'S = """a string\nthat is code"""\n')
    assert tcb.count_loc(path) == 6        # import, def, return + its continuation, S x2
