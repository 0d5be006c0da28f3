"""docs/ARCHITECTURE.md stays true: its server example is the code the suite runs, and every
function its call path names exists in the file it names."""
from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*parts: str) -> str:
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def test_the_server_example_is_the_example_server() -> None:
    doc = _read("docs", "ARCHITECTURE.md")
    section = doc[doc.index("## How to write a server"):]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    code = _read("servers", "example", "protocol.py") + _read("servers", "example", "server.py")
    for block in blocks:
        for line in block.strip().splitlines():
            assert line in code, f"docs/ARCHITECTURE.md shows a line servers/example lacks: {line!r}"
    assert 30 <= sum(len(b.strip().splitlines()) for b in blocks) <= 45


def test_every_step_of_the_call_path_names_real_code() -> None:
    doc = _read("docs", "ARCHITECTURE.md")
    section = doc[doc.index("## The path of one `call`"):doc.index("## Where the wire format is")]
    pairs = re.findall(r"`((?:kernel|servers|launcher|hal)/[\w/]+\.py)` `([\w.]+)`", section)
    assert len(pairs) >= 8
    for path, name in pairs:
        src = _read(path)
        last = name.split(".")[-1]
        assert re.search(rf"^\s*(def|class) {last}\b", src, re.M), f"{path} has no {name}"
    current = doc[:doc.index("## The module map")] + doc[doc.index("## The path of one `call`"):]
    for path in set(re.findall(r"`((?:kernel|servers|launcher|hal|tests)/[\w/]+\.py)`", current)):
        assert os.path.exists(os.path.join(ROOT, path)), f"docs/ARCHITECTURE.md names {path}"
