"""The primary's supervision logic in-process: worker states, the pool, the watchdog, dispatch, rollout, and what
the frames and ops/ (status, control commands, /metrics) read of the pool.

No fork and no sleep: handles are made by a fake spawner over real socketpairs (so channels and passed
descriptors are real), time is a fake clock, and signals are recorded instead of sent. The assertions are on
states and on what each worker received, never on log text.
"""

from __future__ import annotations

import errno
import os
import select
import selectors
import signal
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from clusterrun.config.build import build_config
from clusterrun.config.options import MAX_WORKERS, Config
from clusterrun.errors import ConfigError, StateError
from clusterrun.host.listeners import parse_bind
from clusterrun.host.sdnotify import Notifier
from clusterrun.host.timers import Timers
from clusterrun.ops.metrics import ClusterCollector, MetricsServer, Probe
from clusterrun.ops.operations import Operations
from clusterrun.ops.status import StatusLine
from clusterrun.primary.dispatch import Dispatcher
from clusterrun.primary.events import Events
from clusterrun.primary.frames import WorkerFrames
from clusterrun.primary.handle import WorkerHandle, WorkerProcess, WorkerState
from clusterrun.primary.policies import RoundRobin
from clusterrun.primary.pool import Pool, Verdict
from clusterrun.primary.reconfigure import reread
from clusterrun.primary.throttle import Decision, RestartThrottle
from clusterrun.primary.watchdog import Watchdog
from clusterrun.wire.channel import Channel
from clusterrun.wire.heartbeat import late_after
from clusterrun.wire.protocol import Beat, BootFailed, Connections, Online, Stop
from clusterrun.wire.requestclock import RequestClock

S = WorkerState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeWorker(WorkerHandle):
    """A handle whose signals are recorded, with the worker's end of its channel kept to read what it got."""

    signals: list[str]
    worker_end: Channel

    def _signal(self, signum: int) -> None:
        self.signals.append(str(int(signum)))

    def received(self) -> list[Any]:
        """Every frame the worker was sent, with the number of descriptors each carried (closing them)."""
        got = []
        for frame, fds in self.worker_end.receive():
            for fd in fds:
                socket.socket(fileno=fd).close()
            got.append((frame, len(fds)))
        return got


class Spawner:
    """The pool's spawner minus the fork (spawn.Forker forks): pids are made up, channels are real."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.made: list[FakeWorker] = []
        self.forgotten: list[WorkerHandle] = []
        self.refusals = 0  # the next forks the system refuses (EAGAIN, as past ulimit -u)

    def __call__(self, index: int, replaces: WorkerHandle | None = None) -> FakeWorker:
        return self.spawn(len(self.made) + 1, index, replaces)

    def spawn(self, worker_id: int, index: int, replaces: WorkerHandle | None) -> FakeWorker:
        if self.refusals:
            self.refusals -= 1
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        primary_end, worker_end = Channel.socketpair()
        handle = FakeWorker(worker_id, index, 900_000 + worker_id, Channel(primary_end), started=self.clock(),
                            replaces=replaces)
        handle.signals = []
        handle.worker_end = Channel(worker_end)
        handle.last_seen = self.clock()
        self.made.append(handle)
        return handle

    def forget(self, handle: WorkerHandle) -> None:
        self.forgotten.append(handle)

    def close(self) -> None:
        for handle in self.made:
            handle.channel.close()
            handle.worker_end.close()
            handle.pages.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def spawn(clock: Clock) -> Iterator[Spawner]:
    spawner = Spawner(clock)
    yield spawner
    spawner.close()


# The restart throttle (clusterrun/primary/throttle.py)


def test_the_throttle_never_counts_or_delays_a_worker_that_took_a_request(clock: Clock) -> None:
    throttle = RestartThrottle(max_restarts=1, window=60, clock=clock, min_uptime=1.0)
    # A client that crashes every worker it reaches, each within a moment of its ready: served deaths all.
    for crash in range(1, 51):
        clock.now += 0.05
        assert throttle.record_death(0, ready_for=0.01, took_request=True) == Decision(
            respawn=True, delay=0.0, deaths=0, stable=True, crashes=crash, served=True)
    assert throttle.deaths(0) == 0 and throttle.crashes(0) == 50


def test_the_throttle_counts_unstable_deaths_in_a_sliding_window_per_slot(clock: Clock) -> None:
    throttle = RestartThrottle(max_restarts=2, window=10, clock=clock, min_uptime=1.0)
    assert throttle.record_death(0).respawn  # died before it was ready
    assert throttle.record_death(0, ready_for=0.5).respawn  # within --min-uptime of it, with no request
    assert throttle.record_death(1).respawn  # slots are counted apart
    third = throttle.record_death(0, ready_for=0.2)
    assert not third.respawn and third.deaths == 3 and not third.stable and not third.served
    clock.now += 10.5  # the first deaths left the window
    assert throttle.record_death(0).respawn and throttle.deaths(0) == 1


def test_a_worker_ready_for_min_uptime_without_a_request_does_not_count(clock: Clock) -> None:
    throttle = RestartThrottle(max_restarts=0, window=60, clock=clock, min_uptime=1.0)
    decision = throttle.record_death(0, ready_for=1.5, took_request=False)
    assert decision.respawn and decision.stable and not decision.served and decision.deaths == 0
    assert decision.delay == 0.0


def test_backoff_grows_for_unstable_deaths_only_and_a_served_death_ends_the_run(clock: Clock) -> None:
    throttle = RestartThrottle(max_restarts=100, window=60, clock=clock, first_delay=0.1, max_delay=1.0)
    delays = [throttle.record_death(0).delay for _ in range(7)]
    assert delays == [0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert throttle.record_death(0, ready_for=0.1, took_request=True).delay == 0.0
    assert throttle.record_death(0).delay == 0.0  # a new run of unstable deaths starts at once
    assert throttle.record_death(0).delay == 0.1


def test_a_respawn_never_waits_when_no_other_worker_serves(clock: Clock) -> None:
    throttle = RestartThrottle(max_restarts=100, window=60, clock=clock, first_delay=0.1, max_delay=10.0)
    for _ in range(5):
        assert throttle.record_death(0, others_serving=False).delay == 0.0
    assert throttle.record_death(0, others_serving=True).delay == 1.6  # the run went on: only the wait was spared
    assert throttle.deaths(0) == 6


# Worker states


@pytest.mark.parametrize("path", [
    [S.READY, S.DRAINING, S.EXITED],
    [S.DRAINING, S.EXITED],  # stopped while starting
    [S.EXITED],  # died while starting
    [S.READY, S.EXITED],  # crashed while serving
])
def test_a_worker_moves_forward_through_its_life(spawn: Spawner, path: list[WorkerState]) -> None:
    handle = spawn(0)
    assert handle.state is S.STARTING
    for state in path:
        handle.move(state)
        assert handle.state is state


@pytest.mark.parametrize("path", [
    [S.READY, S.STARTING],
    [S.DRAINING, S.READY],
    [S.EXITED, S.READY],
    [S.EXITED, S.DRAINING],
    [S.READY, S.DRAINING, S.STARTING],
])
def test_a_move_no_worker_makes_is_refused(spawn: Spawner, path: list[WorkerState]) -> None:
    handle = spawn(0)
    *allowed, refused = path
    for state in allowed:
        handle.move(state)
    with pytest.raises(StateError, match=f"from {allowed[-1].value} to {refused.value}"):
        handle.move(refused)
    assert handle.state is allowed[-1]


def test_a_retired_worker_is_told_to_drain_in_band(spawn: Spawner, clock: Clock) -> None:
    handle = spawn(0)
    handle.mark_ready("wsgi", clock())
    handle.drain(linger=True)
    assert handle.retired and handle.state is S.DRAINING
    assert handle.received() == [(Stop(linger=True), 0)]
    # Its channel hung up (it died): a stop can only be a signal now.
    other = spawn(1)
    other.mark_ready("wsgi", clock())
    other.channel.hang_up()
    other.drain()
    assert other.signals == [str(int(signal.SIGTERM))]


# The watchdog


def test_the_watchdog_kills_only_a_silent_worker_once(spawn: Spawner, clock: Clock) -> None:
    timers = Timers(clock)
    quiet, chatty, starting = spawn(0), spawn(1), spawn(2)
    for handle in (quiet, chatty):
        handle.mark_ready("asgi", clock())
    workers = {h.pid: h for h in (quiet, chatty, starting)}
    Watchdog(5.0, clock, timers, workers).start()
    for _ in range(12):  # 6 s in half-second steps; the chatty one beats every step
        clock.now += 0.5
        chatty.last_seen = clock()
        timers.run_due()
    dump, abort, kill = str(int(signal.SIGUSR1)), str(int(signal.SIGABRT)), str(int(signal.SIGKILL))
    assert quiet.signals == [dump, abort, kill]  # tracebacks and worker_abort first, then SIGKILL a second later
    assert chatty.signals == [] and starting.signals == []  # a starting worker has --boot-timeout instead
    for _ in range(20):
        clock.now += 0.5
        timers.run_due()
    assert quiet.signals == [dump, abort, kill]  # found once


def test_one_watchdog_for_both_deadlines_names_the_request_a_hung_worker_ran(
    spawn: Spawner, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """--request-timeout above --timeout: the heartbeat's deadline comes first, and its line names the request
    the app was running (the stamp), so the overrun is not lost; the worker is killed once, by either."""
    timers = Timers(clock)
    stuck = spawn(0)
    stuck.mark_ready("wsgi", clock())
    stuck.pages.request_clock = RequestClock(True)
    stuck.pages.request_clock.label(b"GET", b"/report")
    stuck.pages.request_clock._stamp[0] = clock()  # type: ignore[index]  # began now, on the injected clock
    Watchdog(5.0, clock, timers, {stuck.pid: stuck}, request_timeout=600.0).start()
    for _ in range(12):
        clock.now += 0.5
        timers.run_due()
    assert stuck.signals == [str(int(signal.SIGUSR1)), str(int(signal.SIGABRT)), str(int(signal.SIGKILL))]
    assert "sent no heartbeat for 5.0s (--timeout) while its app ran request GET /report" in caplog.text
    stuck.pages.request_clock.close()


# Dispatch


def _connections(count: int) -> tuple[list[tuple[int, str, int]], list[socket.socket]]:
    """``count`` accepted-looking connections (the primary's ends of socketpairs) and the clients' ends."""
    accepted, clients = [], []
    for _ in range(count):
        ours, theirs = socket.socketpair()
        accepted.append((ours.detach(), "", socket.AF_UNIX))
        clients.append(theirs)
    return accepted, clients


@pytest.fixture
def dispatcher(clock: Clock) -> Iterator[Dispatcher]:
    with selectors.DefaultSelector() as selector:
        yield Dispatcher(RoundRobin(), selector, Timers(clock), late_after(30.0), clock)


def test_dispatch_skips_a_late_worker_and_holds_when_none_can_take(
    spawn: Spawner, clock: Clock, dispatcher: Dispatcher
) -> None:
    a, b = spawn(0), spawn(1)
    for handle in (a, b):
        handle.mark_ready("wsgi", clock())
        dispatcher.ready_worker(handle)
    accepted, clients = _connections(6)
    try:
        clock.now += late_after(30.0)  # both silent for that long: late
        a.last_seen = clock()  # a beats again
        dispatcher._dispatch(accepted[:2])
        assert a.received() == [(Connections(socket.AF_UNIX), 2)] and b.received() == []  # one frame per worker
        a.last_seen = clock() - late_after(30.0)  # now both are late
        dispatcher._dispatch(accepted[2:])
        assert a.received() == [] and b.received() == [] and len(dispatcher.held) == 4
        assert not dispatcher.accepting
        b.last_seen = clock()
        dispatcher.heard_from(b)  # its heartbeat: what was held goes to it
        assert sum(n for _, n in b.received()) == 4 and not dispatcher.held
    finally:
        for client in clients:
            client.close()


def test_dispatch_skips_a_worker_whose_descriptor_table_is_full(
    spawn: Spawner, clock: Clock, dispatcher: Dispatcher
) -> None:
    a, b = spawn(0), spawn(1)
    for handle in (a, b):
        handle.mark_ready("wsgi", clock())
        handle.connection_room = 2
        dispatcher.ready_worker(handle)
    accepted, clients = _connections(5)
    try:
        dispatcher._dispatch(accepted)
        assert sum(n for _, n in a.received()) == 2 and sum(n for _, n in b.received()) == 2
        assert len(dispatcher.held) == 1 and a.is_full and b.is_full
        a.pages.closes.add()  # a closed one connection: room for the held one
        dispatcher.heard_from(a)
        assert sum(n for _, n in a.received()) == 1 and not dispatcher.held
    finally:
        for client in clients:
            client.close()


def test_connections_a_dead_worker_never_read_go_to_another(
    spawn: Spawner, clock: Clock, dispatcher: Dispatcher
) -> None:
    a = spawn(0)
    keep = a.worker_end.sock  # the primary keeps the worker's end, as Primary._spawn does
    a.channel = Channel(a.channel.sock, keep=keep)
    b = spawn(1)
    for handle in (a, b):
        handle.mark_ready("wsgi", clock())
    dispatcher.ready_worker(a)
    accepted, clients = _connections(3)
    try:
        dispatcher._dispatch(accepted)  # all to a, which dies before reading any
        dispatcher.gone(a)
        dispatcher.ready_worker(b)
        dispatcher.redispatch(a.channel.take_undelivered_fds())
        assert sum(n for _, n in b.received()) == 3
    finally:
        for client in clients:
            client.close()


# The pool and the rollout


def _pool(spawn: Spawner, clock: Clock, workers: int = 2, **options: Any) -> Pool:
    config = build_config("app:app", {"workers": str(workers), **options}, environ={}, cpus=2)
    with selectors.DefaultSelector() as selector:
        timers = Timers(clock)
        policy = RoundRobin()
        dispatcher = Dispatcher(policy, selector, timers, late_after(config.timeout), clock)
        return Pool(config, clock, timers, spawn, dispatcher, policy, Events())


def _serving(spawn: Spawner, clock: Clock, workers: int = 2, **options: Any) -> Pool:
    """A pool whose first generation is ready."""
    pool = _pool(spawn, clock, workers, **options)
    for index in range(workers):
        pool.spawn(index)
    booted = [pool.ready(handle, "wsgi") for handle in list(pool.workers.values())]
    assert booted == [False] * (workers - 1) + [True] and pool.booted
    return pool


def _status(code: int | None = None, killed_by: int | None = None) -> int:
    """A wait status: exited with ``code``, or killed by a signal."""
    return killed_by if killed_by is not None else (code or 0) << 8


def test_a_crashed_worker_is_respawned_into_its_slot_after_its_backoff(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock)
    first = pool.slots[0]
    clock.now += 5  # it served for more than --min-uptime
    assert pool.reaped(first.pid, _status(killed_by=signal.SIGKILL)) is None
    assert first.state is S.EXITED and 0 not in pool.slots and pool.pending_respawns == {0}
    assert spawn.forgotten == [first]  # its channel is no longer watched
    pool.timers.run_due()  # the first death of a slot is respawned at once
    respawned = pool.slots[0]
    assert respawned.id == 3 and respawned.index == 0 and respawned.state is S.STARTING
    assert not pool.ready(respawned, "wsgi")  # the cluster had booted already
    assert respawned.state is S.READY


def test_deaths_before_ready_give_a_slot_up_and_the_last_slot_ends_the_cluster(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock, workers=1, max_restarts="1")
    verdicts = []
    for _ in range(2):  # the first dies within --min-uptime of ready, its respawn before ready: both unstable
        verdicts.append(pool.reaped(spawn.made[-1].pid, _status(code=1)))
        clock.now += 0.5
        pool.timers.run_due()
    assert verdicts == [None, Verdict.NONE_LEFT]  # 2 unstable deaths > --max-restarts 1: the slot gave up
    assert not pool.slots and not pool.workers and len(spawn.made) == 2


def test_workers_that_die_in_their_first_request_are_respawned_at_once_and_never_give_up(
    spawn: Spawner, clock: Clock
) -> None:
    pool = _serving(spawn, clock, max_restarts="1", min_uptime="600")
    for _ in range(30):
        victim = pool.slots[0]
        victim.pages.first_request.add()  # what the worker does before its app runs its first request
        clock.now += 0.01
        assert pool.reaped(victim.pid, _status(code=1)) is None
        assert pool.pending_respawns == {0}
        pool.timers.run_due()  # at once: no clock moved
        assert pool.slots[0] is not victim and pool.slots[0].state is S.STARTING
        pool.ready(pool.slots[0], "wsgi")
    assert pool.throttle.deaths(0) == 0 and pool.throttle.crashes(0) == 30


def test_an_unstable_death_waits_its_backoff_only_while_another_worker_serves(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock, max_restarts="10")
    assert pool.reaped(pool.slots[0].pid, _status(code=1)) is None  # killed before its first request
    pool.timers.run_due()
    respawned = pool.slots[0]  # the first of a run at once
    assert pool.reaped(respawned.pid, _status(code=1)) is None  # and its respawn before it was ready
    pool.timers.run_due()
    assert 0 not in pool.slots and pool.pending_respawns == {0}  # the second waits 0.1 s: slot 1 serves meanwhile
    # Slot 1 dies too, before its first request: no worker serves now, so its respawn does not wait.
    assert pool.reaped(pool.slots[1].pid, _status(code=1)) is None
    pool.timers.run_due()
    assert 1 in pool.slots and 0 not in pool.slots
    clock.now += 0.1
    pool.timers.run_due()
    assert 0 in pool.slots and not pool.pending_respawns


def test_a_refused_fork_is_tried_again_with_a_growing_wait_and_never_counted(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock, max_restarts="0")
    spawn.refusals = 3
    pool.slots[0].pages.first_request.add()  # it served: its own death does not count either
    assert pool.reaped(pool.slots[0].pid, _status(killed_by=signal.SIGKILL)) is None  # its respawn is refused
    pool.timers.run_due()
    for wait in (0.1, 0.2, 0.4):  # refused, refused, then forked
        assert 0 not in pool.slots and pool.pending_respawns == {0}
        clock.now += wait
        pool.timers.run_due()
    assert pool.slots[0].state is S.STARTING and not pool.pending_respawns
    assert pool.throttle.deaths(0) == 0  # --max-restarts 0 held: refusals are no deaths
    pool.scale(4)
    assert sorted(pool.slots) == [0, 1, 2, 3]


def test_scaling_up_leaves_a_slot_waiting_for_its_fork_alone(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock)
    spawn.refusals = 1
    pool.scale(3)  # slot 2's fork is refused: it waits for its retry
    assert sorted(pool.slots) == [0, 1] and pool.pending_respawns == {2}
    pool.scale(4)
    assert sorted(pool.slots) == [0, 1, 3]
    clock.now += 0.1
    pool.timers.run_due()
    assert sorted(pool.slots) == [0, 1, 2, 3] and len(spawn.made) == 4


def test_scaling_down_drops_a_slot_waiting_for_its_fork_first(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock)
    spawn.refusals = 1
    pool.scale(3)  # slot 2 waits for its retry
    pool.scale(2)  # slot 2 goes: slots 0 and 1 serve on
    assert sorted(pool.slots) == [0, 1] and not pool.pending_respawns
    assert all(h.state is S.READY for h in pool.slots.values())
    clock.now += 0.1
    pool.timers.run_due()
    assert sorted(pool.slots) == [0, 1] and len(spawn.made) == 2  # its retry found it unwanted


def test_a_rolling_restart_whose_fork_is_refused_aborts_and_keeps_the_old_workers(
    spawn: Spawner, clock: Clock
) -> None:
    pool = _serving(spawn, clock)
    old = dict(pool.slots)
    spawn.refusals = 1
    pool.rollout.start()
    assert not pool.rollout.active and pool.rollout.outcome == "aborted" and "forked" in pool.rollout.reason
    assert pool.slots == old and all(h.state is S.READY for h in old.values())


def test_a_boot_failure_before_any_worker_served_is_the_app_s(spawn: Spawner, clock: Clock) -> None:
    pool = _pool(spawn, clock)
    first, second = pool.spawn(0), pool.spawn(1)
    first.boot_error = "importing 'app' failed"
    assert pool.reaped(first.pid, _status(code=3)) is Verdict.BOOT_FAILED
    assert second.state is S.STARTING  # the primary stops it next (stop_all)
    pool.stop_all()
    assert second.state is S.DRAINING and second.signals == [str(int(signal.SIGTERM))]
    # Its own boot failure, reaped after the verdict, is an exit of a stopping cluster: no second verdict.
    second.boot_error = "importing 'app' failed"
    assert pool.reaped(second.pid, _status(code=3)) is None and not pool.workers


def test_a_retired_worker_s_exit_is_no_crash(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock)
    old = pool.slots[1]
    pool.retire(old, respawn=True)  # stopped from outside (SIGTERM): its slot is filled anew at once
    new = pool.slots[1]
    assert old.state is S.DRAINING and new is not old and new.state is S.STARTING
    assert pool.reaped(old.pid, _status(code=0)) is None
    assert pool.slots[1] is new and not pool.pending_respawns


def test_scaling_adds_and_retires_slots(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock)
    pool.scale(3)
    assert sorted(pool.slots) == [0, 1, 2] and pool.target == 3
    pool.scale(1)
    assert sorted(pool.slots) == [0] and [h.state for h in spawn.made[1:]] == [S.DRAINING, S.DRAINING]


def test_a_rolling_restart_replaces_one_slot_at_a_time(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock, workers=3)
    old = dict(pool.slots)
    pool.rollout.start()
    for index in range(3):
        new = spawn.made[-1]
        assert pool.rollout.current is new and new.replaces is old[index] and new.index == index
        assert pool.slots[index] is old[index]  # the old worker serves until its replacement is ready
        pool.ready(new, "wsgi")
        assert pool.slots[index] is new and old[index].state is S.DRAINING
    assert not pool.rollout.active and len(spawn.made) == 6
    assert [frame for frame, _ in old[0].received()] == [Stop(linger=True)]


def test_a_failed_replacement_aborts_the_restart_and_keeps_the_old_workers(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock)
    old = dict(pool.slots)
    pool.rollout.start()
    replacement = spawn.made[-1]
    assert pool.reaped(replacement.pid, _status(code=3)) is None
    assert not pool.rollout.active and pool.slots == old and all(h.state is S.READY for h in old.values())


def test_a_worker_is_recycled_once(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock, workers=1)
    pool.rollout.recycle(pool.slots[0], "it served 10 requests")
    pool.rollout.recycle(pool.slots[0], "it served 11 requests")
    assert len(spawn.made) == 2 and spawn.made[1].replaces is pool.slots[0]


def test_connections_frames_carry_their_descriptors(spawn: Spawner, clock: Clock, dispatcher: Dispatcher) -> None:
    a = spawn(0)
    a.mark_ready("asgi", clock())
    dispatcher.ready_worker(a)
    accepted, clients = _connections(2)
    try:
        dispatcher._dispatch(accepted)
        assert a.received() == [(Connections(socket.AF_UNIX), 2)]
        assert a.dispatched == 2 and a.open_connections == 2
    finally:
        for client in clients:
            client.close()


# What ops/ and the frames read: the pool and a few callables, never the Primary


class Steered:
    """A Steering (clusterrun.ops.operations) that records what the commands started."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def reload(self) -> None:
        self.calls.append(("reload", None))

    def scale(self, target: int) -> None:
        self.calls.append(("scale", target))

    def stop(self, timeout: float | None = None) -> None:
        self.calls.append(("stop", timeout))


def test_the_status_line_reads_the_pool_and_the_clock(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock)
    line = StatusLine(pool, clock, "rr")
    assert line() == "2/2 workers ready, policy rr, 0 req/s"
    for handle in pool.workers.values():
        handle.counts = Beat(requests=50)
    clock.now += 2
    assert line() == "2/2 workers ready, policy rr, 50 req/s"
    pool.stop_all()
    assert line() == "stopping, policy rr, 0 req/s"


def test_the_control_commands_read_the_pool_and_start_what_the_steering_does(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock)
    steered = Steered()
    commands = Operations(pool, steered, clock, "rr", [], started=clock() - 5)
    info = commands.answer({"command": "info"})
    assert (info["target"], info["ready"], info["policy"], info["uptime"], info["binds"]) == (2, 2, "rr", 5.0, [])
    assert commands.answer({"command": "scale", "workers": "+1"})["ok"]
    assert commands.answer({"command": "reload"})["ok"]
    assert commands.answer({"command": "stop", "timeout": 5})["ok"]
    assert not commands.answer({"command": "stop", "timeout": "soon"})["ok"]
    assert steered.calls == [("scale", 3), ("reload", None), ("stop", 5.0)]


def test_readyz_and_the_metrics_read_the_probe(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock)
    told = {"stop": False}
    probe = Probe(pool, backlog=lambda: 3, shutting_down=lambda: told["stop"])
    with selectors.DefaultSelector() as selector:
        server = MetricsServer(parse_bind("127.0.0.1:0"), selector, Timers(clock), probe, None)  # never opened
        ready = server.answer(b"GET /readyz HTTP/1.1\r\n\r\n")
        told["stop"] = True
        stopping = server.answer(b"GET /readyz HTTP/1.1\r\n\r\n")
    assert ready is not None and ready.startswith(b"HTTP/1.1 200 OK") and ready.endswith(b"2/2 workers serving\n")
    assert stopping is not None and stopping.startswith(b"HTTP/1.1 503") and stopping.endswith(b"stopping\n")
    samples = {(s.name, tuple(s.labels.values())): s.value
               for family in ClusterCollector(pool, probe.backlog).collect() for s in family.samples}
    assert samples[("clusterrun_dispatch_backlog", ())] == 3
    assert samples[("clusterrun_workers", ("ready",))] == 2 and samples[("clusterrun_workers_target", ())] == 2


def test_frames_act_on_the_pool_the_dispatcher_and_the_events(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock)
    events = Events()
    online: list[int] = []
    events.on("online", lambda worker: online.append(worker.id))
    frames = WorkerFrames(pool, pool.dispatcher, events, clock)
    handle = pool.slots[0]
    clock.now += 7
    handle.worker_end.send(Beat(requests=9))
    handle.worker_end.send(Online())
    frames.on_channel(handle, selectors.EVENT_READ)
    assert handle.counts.requests == 9 and handle.last_seen == clock.now and online == [handle.id]


def test_a_boot_error_still_unread_when_its_worker_is_reaped_is_the_reason_given(
    spawn: Spawner, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Two workers fail to boot together: the first one's SIGCHLD may reap the second before the loop read its
    channel. Its boot error is read then, not lost for "it exited before it was ready" (seen once in CI)."""
    pool = _pool(spawn, clock)
    WorkerFrames(pool, pool.dispatcher, pool.events, clock)
    pool.spawn(0)
    handle = pool.slots[0]
    handle.worker_end.send(BootFailed("ValueError: SECRET_KEY is missing"))
    assert pool.reaped(handle.pid, _status(code=3)) is Verdict.BOOT_FAILED
    assert "failed to boot in worker 1 (index 0, pid 900001): ValueError: SECRET_KEY is missing" in caplog.text


def test_a_worker_let_go_leaves_its_slot_vacant_until_a_fork_fills_it(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock, workers=3)
    errors: list[tuple[object, str]] = []
    pool.events.on("error", lambda worker, error: errors.append((worker, type(error).__name__)))
    first = pool.slots[0]
    first.public.disconnect()
    assert first.state is S.DRAINING and pool.target == 2 and pool.vacant == {0}
    assert first.public.exited_after_disconnect is None and not first.public.is_dead()
    assert pool.reaped(first.pid, _status(code=0)) is None
    assert first.public.exited_after_disconnect is True and first.public.is_dead()
    assert first.public.process == WorkerProcess(first.pid, 0, None)
    clock.now += 60
    pool.timers.run_due()
    assert sorted(pool.slots) == [1, 2]  # not respawned
    # A crash below the top is still respawned into its slot, and is no planned exit.
    third = pool.slots[2]
    assert pool.reaped(third.pid, _status(killed_by=signal.SIGKILL)) is None
    assert third.public.exited_after_disconnect is False and third.public.process.signal == "SIGKILL"
    pool.timers.run_due()
    assert pool.slots[2] is not third
    # A fork takes the vacant slot first, with its environment; a refused one is the error event, and retried.
    spawn.refusals = 1
    assert pool.add({"X": "1"}) is None and errors == [(None, "BlockingIOError")]
    clock.now += 0.1
    pool.timers.run_due()
    assert pool.slots[0].state is S.STARTING and pool.target == 3 and not pool.vacant
    assert pool.fork_settings.slot_env == {0: {"X": "1"}}
    # The top slot let go is one slot fewer, its signal sent at once; down to none, the cluster waits for a fork.
    top = pool.slots[2]
    top.public.kill("KILL")
    assert pool.target == 2 and not pool.vacant and str(int(signal.SIGKILL)) in top.signals  # type: ignore[attr-defined]
    for handle in list(pool.slots.values()):
        handle.public.kill()
    assert pool.target == 0
    for handle in list(pool.workers.values()):
        assert pool.reaped(handle.pid, _status(code=0)) is None
    assert not pool.workers and not pool.vacant
    with pytest.raises(ValueError, match="unknown signal 'SIGNOPE'"):
        first.public.kill("SIGNOPE")


@pytest.mark.parametrize("starting", [False, True])
def test_kill_sends_its_signal_before_the_stop_frame(spawn: Spawner, clock: Clock, starting: bool) -> None:
    """Worker.kill(signal): the signal goes first. Sent after the Stop frame, it could come too late: an idle
    worker drained and exited 0 before a kill("SIGKILL") landed (seen once in CI)."""
    pool = _serving(spawn, clock)
    handle = pool.slots[0]
    if starting:
        pool.rollout.start()
        handle = pool.rollout.current  # type: ignore[assignment]
        assert handle is not None and handle.state is S.STARTING
    told: list[bool] = []  # at each signal: had the worker been sent anything yet?
    record = handle._signal  # type: ignore[attr-defined]

    def look_then_record(signum: int) -> None:
        told.append(bool(select.select([handle.worker_end.fileno()], [], [], 0)[0]))  # type: ignore[attr-defined]
        record(signum)

    handle._signal = look_then_record  # type: ignore[attr-defined,method-assign]
    handle.public.kill("SIGKILL")
    assert handle.signals[0] == str(int(signal.SIGKILL)) and told[0] is False  # type: ignore[attr-defined]


def test_a_worker_let_go_during_its_replacement_takes_the_replacement_with_it(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock)
    old = pool.slots[0]
    pool.rollout.start()
    new = pool.rollout.current
    assert new is not None and new.replaces is old
    old.public.disconnect()
    # The slot is given up: the replacement that would fill it again goes too, and the rolling restart ends.
    assert new.state is S.DRAINING and not pool.rollout.active and pool.rollout.outcome == "aborted"
    assert pool.target == 1 and pool.vacant == {0} and sorted(pool.slots) == [1]
    assert pool.reaped(new.pid, _status(killed_by=signal.SIGTERM)) is None
    assert new.public.exited_after_disconnect is True and sorted(pool.slots) == [1]


def test_a_fork_past_the_worker_limit_is_refused_with_a_warning(
    spawn: Spawner, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    pool = _serving(spawn, clock, workers=1)
    pool.target = MAX_WORKERS  # as if that many served: only the count matters here
    assert pool.add() is None and len(spawn.made) == 1
    assert f"cannot fork one worker more: one cluster runs at most {MAX_WORKERS}" in caplog.text


# Taking the configuration read again (clusterrun/primary/reconfigure.py)


class _Parts:
    """What a re-read changes and starts, as the Primary holds it: the pool's config, a forker, the watchdog."""

    def __init__(self, pool: Pool, clock: Clock) -> None:
        self.config = pool.config
        self.pool = pool
        self.forker: Any = type("FakeForker", (), {"config": pool.config})()
        self.watchdog = Watchdog(pool.config.timeout, clock, pool.timers, pool.workers, pool.config.request_timeout)
        self.dispatcher = pool.dispatcher
        self.notifier = Notifier(pool.timers, lambda: "", environ={})  # no systemd

    def reload(self) -> None:
        self.pool.rollout.start()

    def scale(self, target: int) -> None:
        self.pool.scale(target)


def _finish_rollout(pool: Pool) -> None:
    while pool.rollout.current is not None:
        pool.ready(pool.rollout.current, "wsgi")


def test_a_reread_takes_what_can_change_and_keeps_what_needs_a_restart(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock, workers=2, timeout="120")
    parts = _Parts(pool, clock)
    new = build_config("app:app", {"workers": "3", "timeout": "1", "binds": ["127.0.0.1:9"], "restart_delay": "0.5",
                                   "max_requests": "9", "policy": "shared"}, environ={}, cpus=2)
    outcome = reread(parts, lambda: new)
    assert outcome.error == ""
    assert outcome.changed == ["--workers 2 -> 3", "--restart-delay 0.1 -> 0.5", "--timeout 120 -> 1",
                               "--max-requests 0 -> 9"]
    assert outcome.kept == ["--bind changed from 127.0.0.1:8000 to 127.0.0.1:9", "--policy changed from rr to shared"]
    taken = parts.config
    assert taken is pool.config is parts.forker.config  # what later forks get
    assert (str(taken.binds[0]), taken.policy, taken.max_requests, taken.workers) == ("127.0.0.1:8000", "rr", 9, 3)
    assert pool.throttle.first_delay == 0.5 and pool.target == 3 and pool.rollout.active
    # The running workers beat for --timeout 120: the stricter deadline waits until each is replaced.
    assert parts.watchdog.timeout == 120 and pool.dispatcher.late_after == late_after(120)
    _finish_rollout(pool)
    assert pool.rollout.outcome == "complete"
    assert parts.watchdog.timeout == 1 and pool.dispatcher.late_after == late_after(1)


def test_a_reread_keeps_the_log_rotation_which_is_set_up_once(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock, workers=2)
    parts = _Parts(pool, clock)
    new = build_config("app:app", {"workers": "2", "log_max_size": "10M", "log_keep": "2"}, environ={}, cpus=2)
    outcome = reread(parts, lambda: new)
    assert outcome.kept == ["--log-max-size changed from 0 to 10485760", "--log-keep changed from 5 to 2"]
    assert (parts.config.log_max_size, parts.config.log_keep) == (0, 5)


def test_a_stricter_timeout_is_not_taken_when_the_rolling_restart_aborts(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock, workers=2, timeout="120")
    parts = _Parts(pool, clock)
    reread(parts, lambda: build_config("app:app", {"workers": "2", "timeout": "1"}, environ={}, cpus=2))
    replacement = pool.rollout.current
    assert replacement is not None and pool.reaped(replacement.pid, _status(code=3)) is None
    assert pool.rollout.outcome == "aborted" and parts.watchdog.timeout == 120
    assert pool.dispatcher.late_after == late_after(120)


def test_a_reread_that_fails_or_comes_during_a_rolling_restart_changes_nothing(
    spawn: Spawner, clock: Clock
) -> None:
    pool = _serving(spawn, clock, workers=2)
    parts = _Parts(pool, clock)
    before = parts.config

    def broken() -> Config:
        raise ConfigError("cannot read clusterrun.toml: Invalid value")

    outcome = reread(parts, broken)
    assert outcome.error == "cannot read clusterrun.toml: Invalid value"
    assert parts.config is before and pool.config is before and not pool.rollout.active
    pool.rollout.start()
    outcome = reread(parts, lambda: build_config("app:app", {"workers": "4"}, environ={}, cpus=2))
    assert "a rolling restart is running" in outcome.error and pool.config is before and pool.target == 2


def test_a_reread_scales_from_the_number_running_and_forks_a_new_slot_once(spawn: Spawner, clock: Clock) -> None:
    pool = _serving(spawn, clock, workers=4)
    parts = _Parts(pool, clock)
    pool.scale(2)  # scaled since the start: 2 run, the file said 4
    reread(parts, lambda: build_config("app:app", {"workers": "3"}, environ={}, cpus=2))
    assert pool.target == 3 and sorted(pool.slots) == [0, 1, 2]
    _finish_rollout(pool)
    assert pool.rollout.outcome == "complete" and sorted(pool.slots) == [0, 1, 2]
    # 4 at start, 2 replacements, and slot 2 forked once with the new settings: not forked, then replaced.
    assert len(spawn.made) == 7
