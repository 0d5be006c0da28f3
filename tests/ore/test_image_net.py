"""The image's `net` table (launcher/net.py wire_switches): a capability to the switch with a
label of its own, and the entry for that label in ORe's policy argument; mistakes named."""
from __future__ import annotations

import json

import pytest

from launcher.image import ImageError, parse_image

BASE = """
[system]
name = "t"

[[task]]
name = "ore"
run = "servers.ore.server:main"
args = ['{"clients": {"1": {"name": "old"}}}']
provides = ["ore"]

[[task]]
name = "old"
run = "servers.ore.demo:pong"
caps = { net = { service = "ore", label = 1 } }
"""


def _image(extra: str) -> dict[str, object]:
    import tomllib
    return tomllib.loads(BASE + extra)


def test_net_gives_a_session_and_a_policy_entry() -> None:
    img = parse_image(_image("""
[[task]]
name = "web"
run = "servers.ore.demo:pong"
net = { switch = "ore", ip = "10.0.2.15/24", broadcast = true }

[[task]]
name = "db"
run = "servers.ore.demo:pong"
net = { ip = "10.0.2.16/24", mac = "02:00:00:00:00:16", cap = "eth", label = 7 }
"""), "t.toml")
    tasks = {t.name: t for t in img.tasks}
    policy = json.loads(tasks["ore"].args[0])["clients"]
    assert policy["1"] == {"name": "old"}
    assert policy["2"] == {"name": "web", "ip": "10.0.2.15/24", "broadcast": True}
    assert policy["7"] == {"name": "db", "ip": "10.0.2.16/24", "mac": "02:00:00:00:00:16"}
    web, db = tasks["web"].caps[0], tasks["db"].caps[0]
    assert (web.local, web.service, web.label) == ("net", "ore", 2)
    assert (db.local, db.service, db.label) == ("eth", "ore", 7)


@pytest.mark.parametrize("net, needle", [
    ('{ switch = "nowhere" }', "no ORe task"),
    ('{ label = 1 }', "label 1 of 'ore' is taken"),
    ('{ ip = "ten" }', "not an address"),
    ('{ colour = "red" }', "net.colour: unknown key"),
    ('{ mac = "01:00:00:00:00:01" }', "group address"),
])
def test_net_mistakes_are_named(net: str, needle: str) -> None:
    with pytest.raises(ImageError) as e:
        parse_image(_image(f"""
[[task]]
name = "web"
run = "servers.ore.demo:pong"
net = {net}
"""), "t.toml")
    assert needle in str(e.value) and "task[2] (web).net" in str(e.value), str(e.value)
