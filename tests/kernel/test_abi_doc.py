"""kernel/ABI.md and kernel/abi.py stay in step.

- every `Sys` member has exactly one section `### N · NAME`, with the same parts in the same
  order (Header, Arguments, Reply, Errors, Notes), whose header and argument table list
  exactly the names (and types) of `LAYOUTS[sysno]`, in wire order;
- every error named in an errors table is an `Err` member;
- the tables marked `<!-- enum: X -->` list exactly the members of `abi.X` with their values,
  and those marked `<!-- const: ... -->` give the values `kernel/abi.py` has;
- nothing is documented that the code lacks (no section for an unknown number or name).
"""
from __future__ import annotations

import enum
import os
import re

import pytest

from kernel import abi
from kernel.abi import LAYOUTS, Err, Sys

DOC = os.path.join(os.path.dirname(abi.__file__), "ABI.md")
PARTS = ["**Header**", "**Arguments**", "**Reply**", "**Errors**", "**Notes**"]
SECTION = re.compile(r"^### (\d+) · ([A-Z0-9_]+)\s*$", re.M)
NAME = re.compile(r"`([A-Za-z0-9_]+)`")


def doc_text() -> str:
    with open(DOC, encoding="utf-8") as f:
        return f.read()


def sections() -> dict[str, tuple[int, str]]:
    """NAME -> (number, body) of every system-call section."""
    text = doc_text()
    found: dict[str, tuple[int, str]] = {}
    matches = list(SECTION.finditer(text))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[m.end():end]
        body = re.split(r"^(?:## |---)", body, maxsplit=1, flags=re.M)[0]
        assert m.group(2) not in found, f"two sections for {m.group(2)}"
        found[m.group(2)] = (int(m.group(1)), body)
    return found


def table_rows(block: str) -> list[list[str]]:
    """Data rows of the first Markdown table in `block` (header and rule skipped)."""
    rows, started = [], False
    for line in block.splitlines():
        if line.startswith("|"):
            started = True
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows.append(cells)
        elif started:
            break
    return [r for r in rows[2:]] if len(rows) >= 2 else []


def between(body: str, start: str, end: str) -> str:
    return body[body.index(start) + len(start):body.index(end)]


def test_every_system_call_has_one_section_and_nothing_else() -> None:
    secs = sections()
    assert set(secs) == {s.name for s in Sys}, (
        f"missing: {sorted({s.name for s in Sys} - set(secs))}, "
        f"not in the code: {sorted(set(secs) - {s.name for s in Sys})}")
    for name, (number, _) in secs.items():
        assert number == Sys[name], f"{name} is documented as {number}, the code says {int(Sys[name])}"
    numbers = [n for n, _ in secs.values()]
    assert numbers == sorted(numbers), "sections are in system-call number order"


@pytest.mark.parametrize("sysno", list(Sys), ids=lambda s: s.name)
def test_section_parts_and_arguments_match_layouts(sysno: Sys) -> None:
    number, body = sections()[sysno.name]
    positions = [body.find(p) for p in PARTS]
    assert all(p >= 0 for p in positions), f"{sysno.name}: missing {[PARTS[i] for i, p in enumerate(positions) if p < 0]}"
    assert positions == sorted(positions), f"{sysno.name}: parts out of order"
    fields = LAYOUTS[sysno]
    # The header line: **Header** `[N, a, b]`
    header = re.search(r"\*\*Header\*\* `\[([^\]]*)\]`", body)
    assert header, f"{sysno.name}: no header line"
    parts = [p.strip() for p in header.group(1).split(",")]
    assert parts == [str(int(sysno)), *(f.name for f in fields)], f"{sysno.name} header {parts}"
    # The argument table: # | name | type | meaning
    rows = table_rows(between(body, "**Arguments**", "**Reply**"))
    names = [NAME.search(r[1]).group(1) for r in rows if NAME.search(r[1])]  # type: ignore[union-attr]
    assert names == [f.name for f in fields], f"{sysno.name}: arguments {names}"
    assert [r[2] for r in rows] == [f.kind for f in fields], f"{sysno.name}: argument types"
    assert [r[0] for r in rows] == [str(i + 1) for i in range(len(fields))]
    # Payload is mentioned exactly for the calls that carry one.
    head_line = body[body.index("**Header**"):].splitlines()[0]
    assert ("payload" in head_line) == (sysno in abi.CARRIES_PAYLOAD), f"{sysno.name}: payload"


@pytest.mark.parametrize("sysno", list(Sys), ids=lambda s: s.name)
def test_errors_tables_name_real_errors(sysno: Sys) -> None:
    _, body = sections()[sysno.name]
    rows = table_rows(between(body, "**Errors**", "**Notes**"))
    assert rows, f"{sysno.name}: an errors table (write '—' when the call has none of its own)"
    for r in rows:
        m = NAME.search(r[0])
        if r[0] == "—":
            continue
        assert m and m.group(1) in Err.__members__ and m.group(1) != "OK", f"{sysno.name}: {r[0]}"


def test_common_errors_table_names_real_errors() -> None:
    text = doc_text()
    block = text[text.index("### Errors every call may answer"):]
    for r in table_rows(block):
        name = NAME.search(r[0])
        assert name and name.group(1) in Err.__members__, r


def _marked(kind: str) -> dict[str, list[list[str]]]:
    text = doc_text()
    out = {}
    for m in re.finditer(rf"<!-- {kind}: (\w+) -->", text):
        out[m.group(1)] = table_rows(text[m.end():])
    return out


def test_enum_tables_list_exactly_the_code() -> None:
    enums = _marked("enum")
    for needed in ("Err", "Rights", "Item", "Proto", "AlienVerdict", "ObjType"):
        assert needed in enums, f"no table for abi.{needed}"
    for name, rows in enums.items():
        cls = getattr(abi, name)
        assert isinstance(cls, type) and issubclass(cls, enum.Enum), name
        documented = {NAME.search(r[1]).group(1): int(r[0], 0) for r in rows}  # type: ignore[union-attr]
        actual = {n: int(v) for n, v in cls.__members__.items()}
        assert documented == actual, f"abi.{name}: documented {documented}, code {actual}"


def test_constant_tables_match_the_code() -> None:
    consts = _marked("const")
    assert {"limits", "slots"} <= set(consts)
    for rows in consts.values():
        for r in rows:
            name = NAME.search(r[0]).group(1)  # type: ignore[union-attr]
            assert hasattr(abi, name), f"ABI.md documents {name}, kernel/abi.py has none"
            assert getattr(abi, name) == int(r[1], 0), f"{name}: doc {r[1]}, code {getattr(abi, name)}"
    documented = {NAME.search(r[0]).group(1) for r in consts["slots"]}  # type: ignore[union-attr]
    assert documented == {n for n in dir(abi) if n.startswith("SLOT_")} | {"FIRST_FREE_SLOT"}


def test_every_error_is_documented() -> None:
    rows = _marked("enum")["Err"]
    assert {NAME.search(r[1]).group(1) for r in rows} == set(Err.__members__)  # type: ignore[union-attr]
