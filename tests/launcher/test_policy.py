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


def test_backoff_counts_quick_deaths_in_a_row():
    from launcher.policy import Backoff
    b = Backoff(0.1, 0.5)
    assert [b.delay(0.05) for _ in range(6)] == [0.0, 0.1, 0.2, 0.4, 0.5, 0.5]
    assert b.delay(Backoff.QUICK_S) == 0.0          # it lived long enough: count again
    assert [b.delay(0.0) for _ in range(3)] == [0.0, 0.1, 0.2]
    b.reset()
    assert b.delay(0.0) == 0.0 and b.delay(0.0) == 0.1
