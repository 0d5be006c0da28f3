"""An undo that fails mid-run (here: resetting a device's fault knobs when no HAL answers in
the run directory — as after the HAL was killed) is written to the record and the run goes
on; it used to abort the whole chaos run."""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

from launcher.chaos.inject import Injector, _hal_faults
from launcher.chaos.record import Record


def test_a_failed_device_reset_is_recorded_not_raised(tmp_path):
    rd = str(tmp_path)
    record = Record(rd, {})
    record.begin({"plan": "undo"})
    inj = Injector(None, SimpleNamespace(run_dir=rd), {}, record)    # type: ignore[arg-type]
    done: list[str] = []
    inj.later.append((time.time() - 1, "reset disk0", lambda: _hal_faults(rd, "disk0", {"error_rate": 0})))
    inj.later.append((time.time() - 1, "cont t", lambda: done.append("cont t")))
    inj.run_due(time.time())
    assert inj.later == [] and done == ["cont t"]      # the next undo still ran
    record.close()
    with open(record.path) as f:
        notes = [json.loads(line).get("note", "") for line in f]
    assert any(n.startswith("reset disk0 failed: Unsupported: HAL:") for n in notes), notes
