"""What the primary knows of each worker, its deadlines, and how a child's exit is described."""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import signal
import weakref
from dataclasses import dataclass, field
from typing import Any, Protocol

from clusterrun.errors import MessageError, StateError
from clusterrun.host.timers import NO_TIMER, Timer
from clusterrun.identity import WorkerInfo
from clusterrun.wire import handles
from clusterrun.wire.channel import Channel, encode
from clusterrun.wire.heartbeat import DUMP_SIGNAL
from clusterrun.wire.pages import WorkerPages
from clusterrun.wire.protocol import Beat, Handle, Message, Stop, check_message

logger = logging.getLogger("clusterrun")









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


class Owner(Protocol):
    """What a worker's public view asks of the pool that owns it (pool.py): letting it go, and the events."""

    def let_go(self, handle: WorkerHandle, signum: int | None) -> None:
        """Worker.disconnect() (``signum`` None) and Worker.kill(signum): it leaves on purpose."""

    def failed(self, handle: WorkerHandle | None, error: Exception) -> None:
        """The ``error`` event: a worker could not be forked (``handle`` None) or sent to."""


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
    pages: WorkerPages = field(default_factory=WorkerPages)  # what it writes and the primary reads (wire/pages.py)
    dispatched: int = 0  # connections the primary has passed to it, in all
    # Connections it can hold open before its descriptor table is full (reported when ready; None: no limit).
    connection_room: int | None = None
    ready_at: float | None = None  # when it reported ready
    boot_error: str | None = None
    boot_timer: Timer = field(default=NO_TIMER)
    last_seen: float = 0.0  # when its last frame (heartbeat or other) arrived
    counts: Beat = field(default_factory=Beat)  # its counts, as of its last heartbeat
    cpu_seconds: float = 0.0  # its CPU time, read from /proc at its last heartbeat (folded when it exits)
    _public: weakref.ref[Worker] | None = field(default=None, init=False, repr=False)
    owner: Owner | None = field(default=None, repr=False)  # the pool, for Worker.kill() and disconnect()
    status: int | None = None  # its wait status, once reaped
    # Node's exitedAfterDisconnect: set when it is reaped, True when it had been told to leave (it was draining).
    exited_after_disconnect: bool | None = None

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
        return max(0, self.dispatched - self.pages.closes.read())

    @property
    def took_request(self) -> bool:
        """Its app took a request (its first one, or one in flight when it died): read from its shared page,
        written before the app runs, so a worker that died in its very first request has taken it."""
        return self.pages.took_request

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

    def send_message(self, message: Any, handle: object = None) -> None:
        """Send a user message, with ``handle`` (a socket: clusterrun.wire.handles) when given.

        Every check comes before the handle is taken: when this raises, the caller still holds its socket.
        """
        check_message(message)
        if not self.channel.is_open:
            error = MessageError(f"cannot send to {self.info}: its channel is closed (it stopped or died)")
            if self.owner is not None:
                self.owner.failed(self, error)  # the error event, as Node's worker.send without a callback
            raise error
        if handle is None:
            self.channel.send(Message(message))
            return
        frame = encode(Handle(message), nfds=1)
        self.channel.send_handle(frame, handles.take(handle))  # the channel closes its copy once sent

    def dump_threads(self) -> None:
        """Ask the worker to write every thread's traceback to the log (faulthandler, see worker.py)."""
        self._signal(DUMP_SIGNAL)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def send_signal(self, signum: int) -> None:
        """Any signal, for Worker.kill(signal)."""
        self._signal(signum)

    def abort(self) -> None:
        """gunicorn's word to a timed-out worker: SIGABRT, on which it runs its worker_abort hooks and exits."""
        self._signal(signal.SIGABRT)

    def quit(self) -> None:
        """gunicorn's quick stop: SIGQUIT, on which it runs its worker_int hooks and exits without draining."""
        self._signal(signal.SIGQUIT)

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

    def send(self, message: Any, handle: object = None) -> None:
        """Send a JSON message to this worker (its clusterrun.on_message callbacks); MessageError if refused.

        ``handle``: a socket to pass with it, as Node's ``worker.send(message, sendHandle)``: an accepted
        connection (the worker owns it from now on: this process's copy is closed once sent) or a listening
        socket (it stays open here too). The worker's callbacks that take two arguments receive it.
        """
        self._handle.send_message(message, handle)

    def __repr__(self) -> str:
        return f"<Worker id={self.id} index={self.index} pid={self.pid} {self.state}>"

    # Node's Worker: leaving on purpose, and how it went.

    def disconnect(self) -> None:
        """Let the worker go gracefully, as Node's ``worker.disconnect()``: nothing more is routed to it, it
        finishes what it has in flight and exits; ``disconnect`` then ``exit`` follow, with
        ``exited_after_disconnect`` True. Past --graceful-timeout it is killed. Its slot is not respawned: the
        cluster keeps one worker fewer (``Cluster.fork()`` adds one again), as Node's user would not fork anew."""
        self._owner().let_go(self._handle, None)

    def kill(self, signal: str | int = "SIGTERM") -> None:
        """Node's ``worker.kill(signal)``: send ``signal`` at once (a name or a number), then disconnect.

        SIGTERM lets the worker finish its requests in flight (its own SIGTERM drain, bounded by
        --graceful-timeout); SIGKILL cuts them off. As disconnect(): the slot goes, the exit is planned.
        """
        self._owner().let_go(self._handle, signal_number(signal))

    def is_dead(self) -> bool:
        """Its process has exited (and been reaped), as Node's ``worker.isDead()``."""
        return self._handle.status is not None

    def is_connected(self) -> bool:
        """Its channel to the primary is open, as Node's ``worker.isConnected()``: False from ``disconnect`` on."""
        return self._handle.channel.is_open

    @property
    def exited_after_disconnect(self) -> bool | None:
        """True when it exited after being told to leave: kill(), disconnect(), a rolling restart or recycling,
        a scale-down, a stop, or the worker's own clusterrun.current_worker().disconnect(); False when it
        crashed or was killed from outside; None while it lives (Node's undefined)."""
        return self._handle.exited_after_disconnect

    @property
    def process(self) -> WorkerProcess:
        """Its process, as Node's ``worker.process``: ``pid``, then ``exitcode`` or ``signal`` once it exited."""
        status = self._handle.status
        code, signal_name = exit_of(status) if status is not None else (None, None)
        return WorkerProcess(self._handle.pid, code, signal_name)

    def _owner(self) -> Owner:
        owner = self._handle.owner
        if owner is None:
            raise StateError(f"{self._handle.info} belongs to no running cluster")
        return owner


@dataclass(frozen=True)
class WorkerProcess:
    """A worker's process as its exit left it: ``exitcode`` (None while it runs, or when a signal killed it)
    and ``signal`` (the name of the signal that killed it, else None); ``multiprocessing.Process``'s names."""

    pid: int
    exitcode: int | None
    signal: str | None


def signal_number(value: str | int) -> int:
    """A signal given by name ("SIGTERM", "TERM") or number, as a number; ValueError naming the bad value."""
    if isinstance(value, int):
        try:
            return int(signal.Signals(value))
        except ValueError:
            raise ValueError(f"{value} is not a signal number: give a name such as 'SIGTERM'") from None
    name = value.upper() if value.upper().startswith("SIG") else "SIG" + value.upper()
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise ValueError(f"unknown signal {value!r}: give a name such as 'SIGTERM' or 'SIGKILL'") from None


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
