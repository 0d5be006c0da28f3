"""The restart decision and the restart budget (pure logic)."""
from launcher.policy import Budget, decide


def test_policies():
    b = Budget(10, 10)
    assert not decide("never", 1, b, wanted=True, forced=False).restart
    assert decide("on-failure", 1, b, wanted=True, forced=False).restart
    assert decide("on-failure", None, b, wanted=True, forced=False).restart
    d = decide("on-failure", 0, b, wanted=True, forced=False)
    assert not d.restart and d.state == "exited"
    assert decide("always", 0, b, wanted=True, forced=False).restart


def test_stop_request_wins_and_forced_restart_is_free():
    b = Budget(0, 10)
    assert decide("always", 1, b, wanted=False, forced=False).state == "stopped"
    assert decide("never", 0, b, wanted=True, forced=True).restart


def test_budget_window():
    b = Budget(2, 10)
    assert decide("always", 1, b, wanted=True, forced=False, now=0).restart
    assert decide("always", 1, b, wanted=True, forced=False, now=1).restart
    d = decide("always", 1, b, wanted=True, forced=False, now=2)
    assert not d.restart and d.state == "failed" and "budget exhausted" in d.reason
    assert decide("always", 1, b, wanted=True, forced=False, now=11.5).restart
