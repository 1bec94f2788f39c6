"""What the primary knows of each worker, its deadlines, and how a child's exit is described."""

from __future__ import annotations

import contextlib
import enum
import heapq
import itertools
import logging
import os
import signal
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import messaging
from .channel import Channel
from .counters import SharedCounter
from .errors import MessageError, StateError
from .identity import WorkerInfo
from .protocol import Beat, Message, Stop
from .requestclock import RequestClock

logger = logging.getLogger("clusterrun")

# The signal a worker's faulthandler answers with a dump of every thread's traceback.
DUMP_SIGNAL = signal.SIGUSR1

# Shortest --timeout: below it, a heartbeat often enough to prove a healthy loop would cost real CPU.
MIN_TIMEOUT = 0.5


def heartbeat_interval(timeout: float) -> float:
    """How often a worker's loop says it is alive: four beats per --timeout, at most one a second."""
    return min(1.0, timeout / 4) if timeout > 0 else 1.0


def late_after(timeout: float) -> float:
    """Silence after which a worker is late: primary-side policies pass it nothing new until it beats again.

    Two missed beats and some slack: a worker busy in a long inline request is late too, which is right, since
    it could not serve a new connection before that request ends.
    """
    return 2.5 * heartbeat_interval(timeout)



class WorkerState(enum.Enum):
    """Where a worker is in its life. Only the moves in ``_MOVES`` happen; any other is a bug (StateError)."""

    STARTING = "starting"  # forked, loading the app; nothing is routed to it
    READY = "ready"  # serving; primary-side policies route connections to it
    DRAINING = "draining"  # told to stop on purpose: finishes what it has, gets nothing new; its exit is no crash
    EXITED = "exited"  # reaped


_MOVES: dict[WorkerState, frozenset[WorkerState]] = {
    WorkerState.STARTING: frozenset({WorkerState.READY, WorkerState.DRAINING, WorkerState.EXITED}),
    WorkerState.READY: frozenset({WorkerState.DRAINING, WorkerState.EXITED}),
    WorkerState.DRAINING: frozenset({WorkerState.EXITED}),
    WorkerState.EXITED: frozenset(),
}


class Timer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        # A cancelled timer stays in the heap until its deadline (a boot timer: --boot-timeout); its callback
        # goes now, so that it keeps alive nothing it refers to (a replaced worker's handle and buffers).
        self.callback = _nothing


class Timers:
    """Deadlines for the primary's loop: they only shorten its one wait."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()

    def add(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self._clock() + delay, callback)
        heapq.heappush(self._heap, (timer.when, next(self._order), timer))
        return timer

    def wait_time(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        if not self._heap:
            return None
        return max(0.0, self._heap[0][0] - self._clock())

    def run_due(self) -> None:
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            _, _, timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                timer.callback()


def _nothing() -> None:
    pass


_NO_TIMER = Timer(0.0, _nothing)


@dataclass(eq=False)
class WorkerHandle:
    id: int
    index: int
    pid: int
    channel: Channel
    started: float
    replaces: WorkerHandle | None = None  # during a rolling restart: the worker this one takes over from
    state: WorkerState = WorkerState.STARTING
    interface: str = ""
    closes: SharedCounter = field(default_factory=SharedCounter)  # connections it has closed, in all
    # When its inline app began the work in hand, and for which request (--request-timeout; else no page).
    request_clock: RequestClock = field(default_factory=lambda: RequestClock(False))
    # Marked by the worker when its app first takes a request (spawn.py): read when it dies, see took_request.
    first_request: SharedCounter = field(default_factory=SharedCounter)
    dispatched: int = 0  # connections the primary has passed to it, in all
    # Connections it can hold open before its descriptor table is full (reported when ready; None: no limit).
    connection_room: int | None = None
    ready_at: float | None = None  # when it reported ready
    boot_error: str | None = None
    boot_timer: Timer = field(default=_NO_TIMER)
    last_seen: float = 0.0  # when its last frame (heartbeat or other) arrived
    counts: Beat = field(default_factory=Beat)  # its counts, as of its last heartbeat
    cpu_seconds: float = 0.0  # its CPU time, read from /proc at its last heartbeat (folded when it exits)
    _public: weakref.ref[Worker] | None = field(default=None, init=False, repr=False)

    @property
    def public(self) -> Worker:
        """The worker as event handlers see it: one object as long as anyone holds it.

        Held weakly: a strong reference back from the handle would make a cycle, and a reaped worker's
        handle would then wait for a full run of the cyclic collector, which a quiet primary rarely does.
        """
        worker = self._public() if self._public is not None else None
        if worker is None:
            worker = Worker(self)
            self._public = weakref.ref(worker)
        return worker

    @property
    def info(self) -> WorkerInfo:
        return WorkerInfo(self.id, self.index, self.pid)

    @property
    def open_connections(self) -> int:
        """Open on the worker or on their way to it (least-conn): passed, less closed."""
        return max(0, self.dispatched - self.closes.read())

    @property
    def took_request(self) -> bool:
        """Its app took a request (its first one, or one in flight when it died): read from its shared page,
        written before the app runs, so a worker that died in its very first request has taken it."""
        return self.first_request.read() > 0

    @property
    def is_ready(self) -> bool:
        return self.state is WorkerState.READY

    @property
    def retired(self) -> bool:
        """Told to stop on purpose: its exit is not a crash, and nothing is routed to it."""
        return self.state is WorkerState.DRAINING

    def move(self, to: WorkerState) -> None:
        """Change state; StateError for a move no worker makes (a bug in the primary, caught where it happens)."""
        if to is not self.state and to not in _MOVES[self.state]:
            raise StateError(f"{self.info} cannot go from {self.state.value} to {to.value}")
        self.state = to

    @property
    def is_full(self) -> bool:
        """It holds as many connections as its descriptor table allows: passing one more would lose it."""
        room = self.connection_room
        return room is not None and self.open_connections >= room

    def mark_ready(self, interface: str, now: float) -> None:
        self.move(WorkerState.READY)
        self.interface = interface
        self.ready_at = now

    def drain(self, linger: bool = False) -> None:
        """Ask the worker to drain (finish what it has, take nothing new, exit).

        In-band, so that it reads every connection sent before the order.

        ``linger``: other workers take over, so idle keep-alive connections may stay open until their
        client's next request (answered with Connection: close) instead of closing under it.
        """
        self.move(WorkerState.DRAINING)
        if self.channel.is_open:
            self.channel.send(Stop(linger))
        else:
            self.terminate()

    def send_message(self, message: Any) -> None:
        messaging.check(message)
        if not self.channel.is_open:
            raise MessageError(f"cannot send to {self.info}: its channel is closed (it stopped or died)")
        self.channel.send(Message(message))

    def dump_threads(self) -> None:
        """Ask the worker to write every thread's traceback to the log (faulthandler, see worker.py)."""
        self._signal(DUMP_SIGNAL)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)


class Worker:
    """A worker as the primary's event handlers see it (Node's ``Worker``): identity, state, ``send``."""

    __slots__ = ("__weakref__", "_handle")

    def __init__(self, handle: WorkerHandle) -> None:
        self._handle = handle

    @property
    def id(self) -> int:
        return self._handle.id

    @property
    def index(self) -> int:
        return self._handle.index

    @property
    def pid(self) -> int:
        return self._handle.pid

    @property
    def info(self) -> WorkerInfo:
        return self._handle.info

    @property
    def state(self) -> str:
        """starting, ready, draining, or exited once it has been reaped."""
        return self._handle.state.value

    def send(self, message: Any) -> None:
        """Send a JSON message to this worker (its clusterrun.on_message callbacks); MessageError if refused."""
        self._handle.send_message(message)

    def __repr__(self) -> str:
        return f"<Worker id={self.id} index={self.index} pid={self.pid} {self.state}>"


# Time a hung worker gets to write its tracebacks before SIGKILL.
_DUMP_GRACE = 1.0


class Watchdog:
    """Kills a worker that cannot serve, after a dump of its threads' tracebacks; the slot's respawn follows.

    Two deadlines, each off at 0: ``timeout`` (--timeout), for a worker whose event loop went silent (no
    heartbeat: hung); ``request_timeout`` (--request-timeout, uWSGI's harakiri), for an inline worker whose app
    has run one stretch of a request that long (its stamp: clusterrun.requestclock). Not a poll: it wakes at the
    earliest moment a worker could be overdue, else one period from now.
    """

    def __init__(self, timeout: float, clock: Callable[[], float], timers: Timers,
                 workers: Mapping[int, WorkerHandle], request_timeout: float = 0.0) -> None:
        self.timeout = timeout
        self.request_timeout = request_timeout
        self._clock = clock
        self._timers = timers
        self._workers = workers  # the primary's own, by pid
        # Workers found overdue: being dumped and killed. Weak: a reaped worker's handle must not stay alive here.
        self._killing: weakref.WeakSet[WorkerHandle] = weakref.WeakSet()
        self._period = min((t for t in (timeout, request_timeout) if t > 0), default=0.0)

    def start(self) -> None:
        if self._period:
            self._timers.add(self._period, self._check)

    def _check(self) -> None:
        now = self._clock()
        wake = now + self._period  # a worker that starts being watched after now cannot be overdue sooner
        for handle in list(self._workers.values()):
            if handle in self._killing:
                continue
            if self.timeout > 0 and handle.state in (WorkerState.READY, WorkerState.DRAINING):
                due = handle.last_seen + self.timeout
                if now >= due:
                    self._kill_hung(handle, now - handle.last_seen)
                    continue
                wake = min(wake, due)
            running = handle.request_clock.running_since() if self.request_timeout > 0 else None
            if running is not None:
                since, request = running
                due = since + self.request_timeout
                if now >= due:
                    self._killing.add(handle)
                    logger.error("%s: request %s ran %.1fs, past --request-timeout %g s: killing and respawning "
                                 "the worker (its threads' tracebacks follow)", handle.info, request or "-",
                                 now - since, self.request_timeout)
                    self._dump_and_kill(handle)
                    continue
                wake = min(wake, due)
        # Never at once: a stamp at its deadline to the microsecond must not spin the primary.
        self._timers.add(max(0.05, wake - now), self._check)

    def _kill_hung(self, handle: WorkerHandle, silence: float) -> None:
        self._killing.add(handle)
        if is_stopped(handle.pid):
            # A stopped process runs no signal handler: there is no traceback to wait for.
            logger.error("%s sent no heartbeat for %.1fs (--timeout): it is stopped (SIGSTOP or a "
                         "debugger), so no traceback can be taken; killing it", handle.info, silence)
            handle.kill()
            return
        running = handle.request_clock.running_since()  # with --request-timeout: the request its app runs
        during = f" while its app ran request {running[1] or '-'}" if running is not None else ""
        logger.error("%s sent no heartbeat for %.1fs (--timeout)%s: its threads' tracebacks follow, then it "
                     "is killed", handle.info, silence, during)
        self._dump_and_kill(handle)

    def _dump_and_kill(self, handle: WorkerHandle) -> None:
        handle.dump_threads()
        self._timers.add(_DUMP_GRACE, handle.kill)


def is_stopped(pid: int) -> bool:
    """The process is stopped by a signal or traced (Linux /proc; elsewhere: not known, so False)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def exit_of(status: int) -> tuple[int | None, str | None]:
    """A wait status as (exit code, None) or (None, signal name)."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            return None, signal.Signals(signum).name
        except ValueError:
            return None, f"signal {signum}"
    return os.waitstatus_to_exitcode(status), None


def describe_status(status: int) -> str:
    """A wait status in words: 'exit code 3' or 'killed by SIGKILL'."""
    code, signal_name = exit_of(status)
    return f"killed by {signal_name}" if signal_name else f"exit code {code}"
