"""Messages between a worker and the primary, from inside a worker (Node's ``process.send``).

    clusterrun.send(message)            to the primary (its "message" event)
    clusterrun.broadcast(message)       to every other live worker, relayed by the primary
    clusterrun.on_message(callback)     callback(message) for each message that reaches this worker, or
                                        callback(message, handle) when it takes two arguments
    clusterrun.serve_connection(sock)   serve HTTP on a connection, as if this worker had accepted it

Messages are any JSON value up to 1 MiB encoded; anything else raises MessageError in the sender. Usable
from async handlers, sync handlers and WSGI worker threads: the frame is encoded (and checked) in the
caller's thread, then handed to the worker's event loop.

Handles (Node's ``worker.send(message, handle)``): the primary may pass a socket with a message. Whether a
callback receives it is decided once, when it is registered, by its signature, so that callbacks written for
one argument keep working: one that can take two positional arguments is called ``(message, handle)`` for every
message, ``handle`` being None when none came; one that takes one is called ``(message)``. The socket is the
worker's to use and close; when no callback takes it, it is closed (and said so in the log).
"""

from __future__ import annotations

import inspect
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from clusterrun.errors import MessageError
from clusterrun.wire import handles
from clusterrun.wire.protocol import Broadcast, Message, check_message

logger = logging.getLogger("clusterrun")

# Installed by the worker's runtime: takes a frame and delivers it from any thread.
_deliver: Callable[[Message | Broadcast], None] | None = None
# Installed by the worker's runtime too: serves a connection from any thread.
_serve: Callable[[socket.socket], None] | None = None
_callbacks: list[tuple[Callable[..., Any], bool]] = []  # each callback, and whether it takes the handle


def send(message: Any) -> None:
    """Send ``message`` to the primary, where the cluster's "message" event receives it."""
    _post(Message(message))


def broadcast(message: Any) -> None:
    """Send ``message`` to every other live worker (through the primary): e.g. to invalidate a cache."""
    _post(Broadcast(message))


def on_message(callback: Callable[..., Any]) -> Callable[..., Any]:
    """Call ``callback(message)``, or ``callback(message, handle)`` if it takes two arguments, on the event loop for
    each message to this worker; usable as a decorator."""
    _callbacks.append((callback, _takes_handle(callback)))
    return callback


def serve_connection(sock: socket.socket) -> None:
    """Serve HTTP on ``sock``, a connected socket (e.g. one the primary passed with a message), with this worker's
    app, as if the worker's own listener had accepted it: its limits, keep-alive, access log and drain apply.

    The server owns the socket from here on. Usable from any thread of the worker; MessageError for anything but
    an open, connected stream socket, or outside a worker.
    """
    if _serve is None:
        raise MessageError("clusterrun.serve_connection() works only inside a clusterrun worker")
    fix = "pass a connected socket.socket, such as the handle a message brought"
    if isinstance(sock, ssl.SSLSocket) or not isinstance(sock, socket.socket):
        raise MessageError(f"clusterrun.serve_connection() cannot serve {sock!r:.80}: {fix}")
    if sock.fileno() < 0 or sock.type != socket.SOCK_STREAM or handles.is_listener(sock):
        what = "closed" if sock.fileno() < 0 else "listening" if sock.type == socket.SOCK_STREAM else sock.type.name
        raise MessageError(f"clusterrun.serve_connection() cannot serve a {what} socket: {fix}")
    _serve(sock)


def _takes_handle(callback: Callable[..., Any]) -> bool:
    """Whether ``callback`` can be called with two positional arguments (message, handle)."""
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):  # a callable whose signature Python cannot tell: called as before
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


def _post(frame: Message | Broadcast) -> None:
    if _deliver is None:
        raise MessageError("clusterrun.send() and broadcast() work only inside a clusterrun worker")
    check_message(frame.data)
    _deliver(frame)


def attach(deliver: Callable[[Message | Broadcast], None], serve: Callable[[socket.socket], None]) -> None:
    global _deliver, _serve
    _deliver = deliver
    _serve = serve


def dispatch(message: Any, schedule: Callable[[Any], object], handle: socket.socket | None = None) -> None:
    """Hand an arriving message (and its handle) to every callback; ``schedule`` runs the coroutines of async
    callbacks."""
    taken = False
    for callback, takes_handle in list(_callbacks):
        taken = taken or takes_handle  # given to a callback, the handle is the app's, even if that callback raises
        try:
            result = callback(message, handle) if takes_handle else callback(message)
            if hasattr(result, "__await__"):
                schedule(result)
        except Exception:
            logger.exception("the on_message callback %s raised", getattr(callback, "__qualname__", callback))
    if handle is not None and not taken:
        logger.warning("a socket came with a message, but no on_message callback takes (message, handle): closed it")
        handle.close()
