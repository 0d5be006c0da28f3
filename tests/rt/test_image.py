"""configs/drops.toml is a valid image as it ships, wired as the DROPS demonstration needs:
the player reaches the CPU manager, the block server, ORe and Nitpicker; the manager runs privileged
and boosts the player's servers (their reserved threads: best effort stays in the ordinary
class); ORe's uplink has a capacity (so reservations exist); the hogs are L4Linux's."""
from __future__ import annotations

import json
import os

from launcher import sandbox
from launcher.image import load_image
from kernel.user.testing import PROJECT_ROOT


def test_drops_image_is_wired_for_the_player() -> None:
    img = load_image(os.path.join(PROJECT_ROOT, "configs", "drops.toml"))
    player, rt, ore = img.task("player"), img.task("rt"), img.task("ore")
    assert player is not None and rt is not None and ore is not None
    assert {c.local: c.service for c in player.caps} == {"rt": "rt", "block": "block", "net": "ore",
                                                         "gui": "nitpicker"}
    assert sandbox.privilege(rt) is not None and sandbox.privilege(player) is None
    serve = json.loads(rt.args[0])["serve"]
    names = {e if isinstance(e, str) else e["task"] for e in serve}
    # the reserved path: the disk's (block, the HAL) and ORe's reserved threads; the nic
    # server and the HAL's NIC workers carry best effort only (servers/rt/server.py)
    assert {"block", "ore", "hal", "nitpicker"} <= names and "nic" not in names, serve
    hal = next(e for e in serve if isinstance(e, dict) and e["task"] == "hal")
    assert hal["best_effort"] == ["nic-"], hal
    assert json.loads(ore.args[0])["uplink_rate"] > 0
    # the non-real-time load is L4Linux's: CPU loops, dd on the disk (a block session of
    # its own, writable) and a ping flood through ORe, in one personality
    linux = img.task("linux")
    assert linux is not None and linux.net is not None and linux.net["switch"] == "ore"
    assert {c.local: c.service for c in linux.caps}.get("block") == "block"
    block = json.loads(img.task("block").args[0])
    label = next(c.label for c in linux.caps if c.local == "block")
    assert block[str(label)] == {"disk": "disk0", "write": True}
    init = " ".join(linux.args)
    assert init.count("while :; do :; done") == 2 and init.count("conv=fsync") == 2, init
    assert "ping" in init
