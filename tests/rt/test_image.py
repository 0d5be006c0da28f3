"""configs/drops.toml is a valid image as it ships, wired as the DROPS demonstration needs:
the player reaches the CPU manager, the block server and ORe; the manager runs privileged
and boosts the player's servers; ORe's uplink has a capacity (so reservations exist)."""
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
    assert {c.local: c.service for c in player.caps} == {"rt": "rt", "block": "block", "net": "ore"}
    assert sandbox.privilege(rt) is not None and sandbox.privilege(player) is None
    serve = json.loads(rt.args[0])["serve"]
    assert {"block", "ore", "nic", "hal"} <= set(serve)
    assert json.loads(ore.args[0])["uplink_rate"] > 0
    assert {t.name for t in img.tasks} >= {"cpuhog1", "cpuhog2", "diskhog", "flood"}
