"""The worker this code runs in, as Node's ``cluster.worker``: ``clusterrun.current_worker()``.

    worker = clusterrun.current_worker()      # None in the primary or outside clusterrun
    worker.id, worker.index, worker.pid       # its WorkerInfo (one numbering everywhere)
    worker.send(message)                      # to the primary's "message" event (clusterrun.send)
    worker.on_message(callback)               # messages to this worker (clusterrun.on_message)
    worker.disconnect()                       # leave gracefully: finish what is in flight, exit

``disconnect()`` is for an app that knows its process is spoiled (a fatal error, a leaked resource): the
primary routes nothing more to it, it drains and exits, and its exit reads ``exited_after_disconnect`` True
in the primary. The primary respawns its slot, as it does for a worker stopped from outside: a worker cannot
tell the cluster to shrink (``Worker.disconnect()`` in the primary does that).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clusterrun import identity
from clusterrun.errors import StateError
from clusterrun.identity import WorkerInfo
from clusterrun.worker import messaging

# Installed by the worker's runtime: asks it, from any thread, to tell the primary and drain.
_leave: Callable[[], None] | None = None


def _never() -> bool:
    return False


_connected: Callable[[], bool] = _never


@dataclass(frozen=True, eq=False)
class CurrentWorker(WorkerInfo):
    """A WorkerInfo that can also talk to the primary and leave: what current_worker() gives in a worker."""

    def send(self, message: Any) -> None:
        """Send ``message`` (any JSON value) to the primary's ``message`` event."""
        messaging.send(message)

    def on_message(self, callback: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Call ``callback(message)`` for each message to this worker; usable as a decorator."""
        return messaging.on_message(callback)

    def disconnect(self) -> None:
        """Leave gracefully, as Node's ``worker.disconnect()`` in a worker: requests in flight finish, nothing new
        comes, the process exits; the primary sees ``exited_after_disconnect`` True and respawns the slot.
        Callable from any thread, also from the request that decides it (its answer still goes out)."""
        if _leave is None:
            raise StateError("disconnect() works only inside a clusterrun worker that serves")
        _leave()

    def is_connected(self) -> bool:
        """The channel to the primary is open (False once the primary went away)."""
        return _connected()

    # Equal to the WorkerInfo of the same worker: the identity is what counts.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WorkerInfo):
            return NotImplemented
        return (self.id, self.index, self.pid) == (other.id, other.index, other.pid)

    def __hash__(self) -> int:
        return hash((self.id, self.index, self.pid))


def current_worker() -> CurrentWorker | None:
    """The worker this code runs in (Node's ``cluster.worker``), or None in the primary or outside clusterrun."""
    info = identity.current_worker()
    return info if isinstance(info, CurrentWorker) else None


def attach(leave: Callable[[], None], connected: Callable[[], bool]) -> None:
    """The runtime's ways to leave and to tell whether the primary is there, for CurrentWorker."""
    global _leave, _connected
    _leave = leave
    _connected = connected
