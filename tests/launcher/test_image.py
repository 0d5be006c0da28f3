"""Image validation: every mistake named with file, key and reason, before anything starts."""
from __future__ import annotations

import os

import pytest

from launcher.image import (ImageError, check_snippet, load_image, parse_backoff, parse_budget,
                            parse_size)

from .helpers import HELLO, l4run, write

BAD = f'''
[system]
name = "bad"
ram = "12X"

[[task]]
name = "a"
run = "{HELLO}"
provides = ["svc"]
depends_on = ["b"]
[task.caps]
x = "nosuch"

[[task]]
name = "b"
run = "no_such_module_xyz:main"
depends_on = ["a"]
memory = "1000"
colour = "red"

[[task]]
name = "a"
run = "{HELLO}"
restart = "sometimes"
restart_budget = "lots"
'''


def problems(tmp_path, text: str) -> list[str]:
    path = write(str(tmp_path / "img.toml"), text)
    with pytest.raises(ImageError) as e:
        load_image(path)
    return e.value.problems


def test_every_mistake_is_reported_with_file_key_and_reason(tmp_path):
    got = problems(tmp_path, BAD)
    path = str(tmp_path / "img.toml")
    assert all(p.startswith(path + ": ") for p in got)
    text = "\n".join(got)
    for needle in ("system.ram: bad size", "unknown service 'nosuch'", "missing module 'no_such_module_xyz'",
                   "task[1] (b).memory: bad size", "task[1] (b).colour: unknown key",
                   "duplicate task name 'a'", "unknown policy 'sometimes'",
                   "restart_budget", "cycle in start order"):
        assert needle in text, f"{needle!r} not in:\n{text}"


def test_cycle_through_services(tmp_path):
    got = problems(tmp_path, f'''
[system]
name = "c"
[[task]]
name = "x"
run = "{HELLO}"
provides = ["sx"]
caps = {{ y = "sy" }}
[[task]]
name = "y"
run = "{HELLO}"
provides = ["sy"]
caps = {{ x = "sx" }}
''')
    assert any("cycle in start order: x -> y -> x" in p or "cycle in start order: y -> x -> y" in p
               for p in got), got


def test_good_images_load():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for name in ("minimal", "default"):
        img = load_image(os.path.join(root, "configs", f"{name}.toml"))
        assert img.name == name and img.tasks


def test_caps_rights_and_labels(tmp_path):
    img = load_image(write(str(tmp_path / "i.toml"), f'''
[system]
name = "r"
ram = "64M"
[[task]]
name = "s"
run = "{HELLO}"
provides = ["svc"]
[[task]]
name = "c"
run = "{HELLO}"
[task.caps]
plain = "svc"
narrow = {{ service = "svc", rights = "invoke", label = 42 }}
'''))
    caps = {c.local: c for c in img.task("c").caps}
    assert caps["narrow"].rights == 1 and caps["narrow"].label == 42
    assert caps["plain"].label == 0 and img.ram == 64 << 20


def test_sizes_and_budgets():
    assert parse_size("64M") == 64 << 20 and parse_size("512K") == 512 << 10 and parse_size(8192) == 8192
    for bad in ("12X", "-1", 100, True, "0"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert parse_budget("3/10s") == (3, 10.0) and parse_budget({"max": 2, "window": 5}) == (2, 5.0)
    with pytest.raises(ValueError):
        parse_budget("3 per minute")


def test_snippet_checked_against_running_services(tmp_path):
    data = {"task": [{"name": "n", "run": HELLO, "caps": {"h": "hello", "z": "zzz"}}],
            "route": [{"task": "ghost", "service": "hello"}]}
    with pytest.raises(ImageError) as e:
        check_snippet(data, "s.toml", {"hello": "hello"}, {"hello", "client"})
    text = "\n".join(e.value.problems)
    assert "unknown service 'zzz'" in text and "unknown task 'ghost'" in text
    assert "'h'" not in text


def test_snippet_refuses_a_system_table_and_unknown_tables():
    data = {"system": {"ram": "1G"}, "memory": {}, "task": [{"name": "n", "run": HELLO}]}
    with pytest.raises(ImageError) as e:
        check_snippet(data, "s.toml", {"hello": "hello"}, {"hello"})
    assert e.value.problems == [
        "s.toml: memory: unknown top-level key in a snippet (known: task, route)",
        "s.toml: system: a snippet joins a running system, whose [system] was set when it "
        "booted (known: task, route)"]


def test_cli_rejects_a_bad_image_in_one_line_each_and_starts_nothing(tmp_path):
    path = write(str(tmp_path / "img.toml"), BAD)
    rd = str(tmp_path / "rd")
    p = l4run("boot", path, "--detach", "--run-dir", rd, check=False)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) >= 9 and all(path in ln for ln in lines)
    assert not os.path.exists(rd)


def test_task_modules_are_found_beside_the_image(tmp_path):
    """A user's image and its task module can live anywhere, side by side."""
    mod = f"beside_{os.getpid()}"
    write(str(tmp_path / f"{mod}.py"), "def serve(l4):\n    pass\n")
    path = write(str(tmp_path / "mine.toml"),
                 f'[system]\nname = "mine"\n\n[[task]]\nname = "t"\nrun = "{mod}:serve"\n')
    image = load_image(path)
    assert [t.run for t in image.tasks] == [f"{mod}:serve"]
    missing = write(str(tmp_path / "missing.toml"),
                    '[system]\nname = "m"\n\n[[task]]\nname = "t"\nrun = "nowhere_at_all:serve"\n')
    with pytest.raises(ImageError, match="missing module 'nowhere_at_all'"):
        load_image(missing)


def test_restart_backoff_values(tmp_path):
    assert parse_backoff("100ms..5s") == (0.1, 5.0) and parse_backoff("off") is None
    for bad in ("5s..1s", "fast", "0ms..1s", 3):
        with pytest.raises(ValueError):
            parse_backoff(bad)
    path = write(str(tmp_path / "b.toml"), '[system]\nname = "b"\n\n[[task]]\nname = "t"\n'
                 'run = "servers.hello.server:serve"\nrestart_backoff = "soon"\n')
    with pytest.raises(ImageError, match=r"task\[0\] \(t\)\.restart_backoff: expected"):
        load_image(path)


def test_the_linux_section_stands_for_the_personality_task(tmp_path):
    """`[linux]` is the personality's task (launcher/linux.py): its keys become the task's
    arguments, a rootfs relative to the image, `[[linux]]` for several; mistakes name the
    section's key."""
    write(str(tmp_path / "root.cpio"), "")
    path = write(str(tmp_path / "img.toml"), '''
[system]
name = "lx"
[[linux]]
init = "echo up"
rootfs = "root.cpio"
[[linux]]
name = "second"
init = ["sh", "-c", "true"]
door = false
quota = 512
''')
    tasks = {t.name: t for t in load_image(path).tasks}
    assert tasks["linux"].run == "servers.l4linux.server:main" and tasks["linux"].quota == 8192
    assert tasks["linux"].args == ["--rootfs", str(tmp_path / "root.cpio"), "--door",
                                   "--init", "sh", "-c", "echo up"]
    assert tasks["second"].args == ["--init", "sh", "-c", "true"] and tasks["second"].quota == 512
    text = "\n".join(problems(tmp_path, '''
[system]
name = "lx"
[linux]
init = 3
door = "yes"
rootfs = "missing.cpio"
colour = "red"
'''))
    for needle in ("linux.init: expected a command line", "linux.door: expected true or false",
                   "missing.cpio: no such file", "linux.colour: unknown key"):
        assert needle in text, f"{needle!r} not in:\n{text}"


def test_kernel_cpu_is_auto_none_or_a_cpu_number(tmp_path):
    head = f'[[task]]\nname = "a"\nrun = "{HELLO}"\n'
    for good, want in (('"none"', "none"), ('"auto"', "auto"), ("1", "1")):
        path = write(str(tmp_path / "ok.toml"), f'[system]\nname = "k"\nkernel_cpu = {good}\n' + head)
        assert load_image(path).kernel_cpu == want
    assert load_image(write(str(tmp_path / "d.toml"), '[system]\nname = "k"\n' + head)).kernel_cpu is None
    for bad in ('"fast"', "-1", "true", "1.5"):
        got = problems(tmp_path, f'[system]\nname = "k"\nkernel_cpu = {bad}\n' + head)
        assert any("system.kernel_cpu: expected \"auto\", \"none\" or a CPU number" in p for p in got), got


def test_kernel_rt_port_is_true_or_false(tmp_path):
    head = f'[[task]]\nname = "a"\nrun = "{HELLO}"\n'
    path = write(str(tmp_path / "ok.toml"), '[system]\nname = "k"\nkernel_rt_port = true\n' + head)
    assert load_image(path).kernel_rt_port is True
    assert load_image(write(str(tmp_path / "d.toml"), '[system]\nname = "k"\n' + head)).kernel_rt_port is False
    got = problems(tmp_path, '[system]\nname = "k"\nkernel_rt_port = "yes"\n' + head)
    assert any("system.kernel_rt_port: expected true or false, got 'yes'" in p for p in got), got
