"""--request-timeout's clock (clusterrun.wire.requestclock): what the worker stamps, and when the primary's watchdog
acts on it.

In process, with an injected clock and timers; the end-to-end tests are in tests/worker/test_e2e_timeouts.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from clusterrun.identity import WorkerInfo
from clusterrun.primary.handle import WorkerState
from clusterrun.primary.watchdog import Watchdog
from clusterrun.wire.pages import WorkerPages
from clusterrun.wire.requestclock import RequestClock


class FakeTimers:
    def __init__(self) -> None:
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def add(self, delay: float, callback: Callable[[], None]) -> None:
        self.pending.append((delay, callback))

    def run(self) -> None:
        due, self.pending = self.pending, []
        for _, callback in due:
            callback()


@dataclass(eq=False)
class FakeWorker:
    pages: WorkerPages = field(default_factory=lambda: WorkerPages(request_clock=RequestClock(True)))
    info: WorkerInfo = field(default_factory=lambda: WorkerInfo(1, 0, 4242))
    signals: list[str] = field(default_factory=list)
    state: WorkerState = WorkerState.READY

    def dump_threads(self) -> None:
        self.signals.append("dump")

    def abort(self) -> None:
        self.signals.append("abort")

    def kill(self) -> None:
        self.signals.append("kill")


def test_the_stamp_names_the_request_and_clears() -> None:
    clock = RequestClock(True)
    assert clock.running_since() is None
    clock.label(b"POST", b"/orders")
    clock.begin()
    running = clock.running_since()
    assert running is not None and running[1] == "POST /orders" and running[0] <= time.monotonic()
    clock.label(b"GET", b"/")  # a shorter label replaces a longer one whole
    assert clock.running_since() == (running[0], "GET /")
    clock.end()
    assert clock.running_since() is None
    clock.close()
    assert clock.running_since() is None


def test_off_there_is_no_page() -> None:
    clock = RequestClock(False)
    assert not clock.enabled and clock.running_since() is None


def test_the_primary_kills_only_past_the_deadline() -> None:
    now = [1000.0]
    timers, worker = FakeTimers(), FakeWorker()
    deadline = Watchdog(0.0, lambda: now[0], timers, {4242: worker}, request_timeout=2.0)  # type: ignore[arg-type]
    deadline.start()
    assert [delay for delay, _ in timers.pending] == [2.0]  # nothing runs: one deadline from now
    worker.pages.request_clock.label(b"GET", b"/slow")
    worker.pages.request_clock._stamp[0] = 999.0  # type: ignore[index]  # began a second ago
    timers.run()
    assert worker.signals == []
    assert [delay for delay, _ in timers.pending] == [1.0]  # woken again just when it reaches the deadline
    now[0] = 1001.0  # 2 s in: at the deadline
    timers.run()
    assert worker.signals == ["dump", "abort"]  # the abort: gunicorn's worker_abort hooks run, if any
    kills = [callback for delay, callback in timers.pending if delay == 1.0]
    assert len(kills) == 1  # SIGKILL after the traceback dump's grace
    timers.run()
    assert worker.signals == ["dump", "abort", "kill"]
    timers.run()  # still stamped (not reaped yet): killed once, not again
    assert worker.signals == ["dump", "abort", "kill"]


def test_off_the_primary_never_checks() -> None:
    timers = FakeTimers()
    Watchdog(0.0, time.monotonic, timers, {}, request_timeout=0.0).start()  # type: ignore[arg-type]
    assert timers.pending == []


class FakeStamp:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def label(self, method: bytes, path: bytes) -> None:
        self.calls.append(("label", method.decode(), path.decode()))

    def begin(self) -> None:
        self.calls.append(("begin",))

    def end(self) -> None:
        self.calls.append(("end",))


def test_the_inline_gate_stamps_each_hold_with_its_request() -> None:
    """The engine's gate under --request-timeout (adapters.deadline.TimedGate): each hold is a stretch of app code
    stamped for the primary, named after the request its thread runs (without the query), written once."""
    from clusterrun.adapters.deadline import TimedGate

    stamp = FakeStamp()
    gate = TimedGate(stamp)
    gate.name(b"GET", b"/report?token=secret")  # on the loop, before the app is called
    with gate:
        pass
    with gate:  # the next step of the same response: the label is not written again
        pass
    assert stamp.calls == [("label", "GET", "/report"), ("begin",), ("end",), ("begin",), ("end",)]
    stamp.calls.clear()
    with gate:  # an upload thread names its request while it holds the gate: the stamp counts for it at once
        gate.name(b"POST", b"/upload")
    assert stamp.calls == [("begin",), ("label", "POST", "/upload"), ("end",)]
