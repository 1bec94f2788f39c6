"""--policy balanced's array and rule (clusterrun.wire.loads), in process: two workers' cells in one array, a fake
serving that records whether it watches its listeners, and timers run by hand.

The end-to-end tests (real CLI, real clients, SIGSTOP, SIGKILL, SIGTTIN) are in tests/primary/test_e2e_balanced.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from clusterrun.wire.loads import SLACK, STALE, AcceptBalance, Loads
from clusterrun.wire.pages import WorkerPages


class FakeServing:
    def __init__(self) -> None:
        self.watching = True

    def pause_accepting(self) -> None:
        self.watching = False

    def resume_accepting(self) -> None:
        self.watching = True


class Timer:
    def __init__(self, timers: Timers, callback: Callable[[], object]) -> None:
        self.timers, self.callback = timers, callback

    def cancel(self) -> None:
        self.timers.pending.remove(self)


class Timers:
    def __init__(self) -> None:
        self.pending: list[Timer] = []

    def call_later(self, delay: float, callback: Callable[[], object]) -> Any:
        timer = Timer(self, callback)
        self.pending.append(timer)
        return timer

    def run(self) -> None:
        due, self.pending = self.pending, []
        for timer in due:
            timer.callback()


def worker(loads: Loads, slack: int = SLACK) -> tuple[AcceptBalance, FakeServing, Timers]:
    cell = loads.take()
    assert cell is not None
    serving, timers = FakeServing(), Timers()
    balance = AcceptBalance(cell, serving, timers.call_later, slack)
    balance.start()
    return balance, serving, timers


def accept(balance: AcceptBalance, count: int = 1) -> None:
    for _ in range(count):
        balance.opened()
        balance.held()


def test_the_busiest_stops_and_the_least_loaded_never_stops() -> None:
    assert SLACK == 0
    loads = Loads()
    a, a_serving, a_timers = worker(loads)
    b, b_serving, _ = worker(loads)
    accept(a)
    assert not a_serving.watching  # 1 > 0
    accept(b)
    assert b_serving.watching  # 1 against 1: b is among the least loaded
    accept(b)
    assert not b_serving.watching  # 2 > 1: both wait, a for its re-check, which comes soon
    a_timers.run()
    assert a_serving.watching  # 1 against 2
    b.closed()  # its own close: 1 against 1
    assert b_serving.watching


def test_a_slack_lets_a_worker_hold_that_many_more() -> None:
    loads = Loads()
    a, a_serving, _ = worker(loads, slack=1)
    b, b_serving, _ = worker(loads, slack=1)
    accept(a, 2)
    assert not a_serving.watching  # 2 > 0 + 1
    accept(b, 3)
    assert b_serving.watching  # 3 > 2 + 1 is false
    b.opened()
    b.held()
    assert not b_serving.watching  # 4 > 2 + 1


def test_a_worker_that_stopped_watching_looks_again_on_its_timer() -> None:
    loads = Loads()
    a, a_serving, a_timers = worker(loads)
    b, _, _ = worker(loads)
    accept(a, 2)
    assert not a_serving.watching
    a_timers.run()
    assert not a_serving.watching  # nothing changed: still 2 against 0
    accept(b, 2)  # b changes without telling a
    a_timers.run()
    assert a_serving.watching


def test_a_stale_stamp_and_a_released_cell_count_no_more() -> None:
    loads = Loads()
    a, a_serving, a_timers = worker(loads)
    b, _, _ = worker(loads)
    accept(a, 2)
    assert not a_serving.watching
    loads.stamps[b.cell] = time.monotonic() - STALE - 0.1  # b's loop has not turned since: stopped or hung
    a_timers.run()
    assert a_serving.watching
    accept(a, 3)
    assert a_serving.watching and a.open == 5
    loads.stamps[b.cell] = time.monotonic()  # b's loop turns again, with no connection
    a_timers.run()
    assert not a_serving.watching
    loads.release(b.cell)  # b was reaped
    a.closed()
    assert a_serving.watching


def test_a_draining_worker_counts_no_more_and_schedules_nothing() -> None:
    loads = Loads()
    a, a_serving, _ = worker(loads)
    b, _, b_timers = worker(loads)
    b.stop()
    assert not b_timers.pending and loads.stamps[b.cell] == 0.0
    accept(a, 4)
    assert a_serving.watching


def test_cells_are_taken_per_worker_and_the_scan_ends_at_the_last_in_use() -> None:
    loads = Loads(capacity=3)
    pages = [WorkerPages.map(count_closes=False, time_requests=False, loads=loads) for _ in range(3)]
    assert [p.load.index if p.load else None for p in pages] == [0, 1, 2]
    assert WorkerPages.map(count_closes=False, time_requests=False, loads=loads).load is None  # all taken
    pages[2].close()
    assert loads.span[0] == 2
    pages[0].close()
    pages[0].close()  # released once only
    assert loads.span[0] == 2
    again = loads.take()
    assert again is not None and again.index == 0
    loads.close()
