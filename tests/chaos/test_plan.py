"""Chaos plans: validation names file, key and reason; the schedule is a function of the seed."""
from __future__ import annotations

import pytest

from launcher.chaos import PlanError, load_plan, parse_plan, schedule

TASKS, SERVICES = ["hello", "client"], ["hello"]


def test_the_example_plans_are_valid() -> None:
    import glob
    import os

    from kernel.user.testing import PROJECT_ROOT
    from launcher.image import load_image
    paths = glob.glob(os.path.join(PROJECT_ROOT, "configs", "chaos", "*.toml"))
    assert paths
    for p in paths:
        image = load_plan(p).image        # a plan that names its image is checked against it
        if image is None:
            load_plan(p, ({"hello", "client"}, {"hello"}))
            continue
        img = load_image(os.path.join(PROJECT_ROOT, image))
        load_plan(p, ({t.name for t in img.tasks}, {s for t in img.tasks for s in t.provides}))


def test_mistakes_are_named_with_key_and_reason() -> None:
    data = {"chaos": {"duration": "soon", "rate": 1},
            "fault": [{"kind": "explode"}, {"kind": "drop", "probability": 3},
                      {"kind": "kill", "tasks": ["nobody"]}, {"kind": "mem_hog", "mib": 99999}],
            "invariants": {"be_nice": True}, "check": [{"command": "true", "task": "x"}]}
    with pytest.raises(PlanError) as e:
        parse_plan(data, "p.toml", ({"hello", "client"}, {"hello"}))
    text = "\n".join(e.value.problems)
    for needle in ("chaos.duration", "fault[0].kind", "fault[1].probability",
                   "fault[2].tasks: no task 'nobody'", "fault[3]: hogs are bounded",
                   "invariants.be_nice", "check[0]: exactly one"):
        assert needle in text, (needle, text)
    assert all(p.startswith("p.toml") for p in e.value.problems)


PLAN = {"chaos": {"seed": 3, "duration": 30, "rate": 4},
        "fault": [{"kind": "kill", "tasks": ["hello", "client"]},
                  {"kind": "delay", "services": ["hello"], "delay": ["1ms", "90ms"]},
                  {"kind": "corrupt", "services": ["hello"], "weight": 2},
                  {"kind": "stop", "tasks": ["hello"], "for": "200ms"}],
        "schedule": [{"at": "1s", "kind": "crash", "task": "hello"}]}


def test_same_seed_same_sequence_other_seed_other_sequence() -> None:
    plan = parse_plan(PLAN)
    budgets = {"hello": (5, 10.0), "client": (5, 10.0)}
    a = [i.key() for i in schedule(plan, TASKS, SERVICES, budgets=budgets)]
    b = [i.key() for i in schedule(plan, list(reversed(TASKS)), SERVICES, budgets=budgets)]
    c = [i.key() for i in schedule(plan, TASKS, SERVICES, seed=4, budgets=budgets)]
    assert a == b and a != c
    assert len(a) > 60 and any(k[2] == "crash" and k[1] == 1.0 for k in a)


def test_kills_are_spaced_to_fit_the_restart_budget() -> None:
    plan = parse_plan({"chaos": {"seed": 1, "duration": 60, "rate": 20, "recovery": 1},
                       "fault": [{"kind": "kill", "tasks": ["hello"]}]})
    times = [i.at for i in schedule(plan, TASKS, SERVICES, budgets={"hello": (5, 10.0)})]
    assert len(times) > 5
    assert all(b - a >= 2.5 for a, b in zip(times, times[1:]))
