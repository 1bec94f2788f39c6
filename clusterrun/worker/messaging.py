"""Messages between a worker and the primary, from inside a worker (Node's ``process.send``).

    clusterrun.send(message)          to the primary (its "message" event)
    clusterrun.broadcast(message)     to every other live worker, relayed by the primary
    clusterrun.on_message(callback)   callback(message) for each message that reaches this worker

Messages are any JSON value up to 1 MiB encoded; anything else raises MessageError in the sender. Usable
from async handlers, sync handlers and WSGI worker threads: the frame is encoded (and checked) in the
caller's thread, then handed to the worker's event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from clusterrun.errors import MessageError
from clusterrun.wire.protocol import Broadcast, Message, check_message

logger = logging.getLogger("clusterrun")

# Installed by the worker's runtime: takes a frame and delivers it from any thread.
_deliver: Callable[[Message | Broadcast], None] | None = None
_callbacks: list[Callable[[Any], Any]] = []


def send(message: Any) -> None:
    """Send ``message`` to the primary, where the cluster's "message" event receives it."""
    _post(Message(message))


def broadcast(message: Any) -> None:
    """Send ``message`` to every other live worker (through the primary): e.g. to invalidate a cache."""
    _post(Broadcast(message))


def on_message(callback: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Call ``callback(message)`` on the event loop for each message to this worker; usable as a decorator."""
    _callbacks.append(callback)
    return callback


def _post(frame: Message | Broadcast) -> None:
    if _deliver is None:
        raise MessageError("clusterrun.send() and broadcast() work only inside a clusterrun worker")
    check_message(frame.data)
    _deliver(frame)


def attach(deliver: Callable[[Message | Broadcast], None]) -> None:
    global _deliver
    _deliver = deliver


def dispatch(message: Any, schedule: Callable[[Any], object]) -> None:
    """Hand an arriving message to every callback; ``schedule`` runs the coroutines of async callbacks."""
    for callback in list(_callbacks):
        try:
            result = callback(message)
            if hasattr(result, "__await__"):
                schedule(result)
        except Exception:
            logger.exception("the on_message callback %s raised", getattr(callback, "__qualname__", callback))
