"""Cluster events, as Node's ``cluster.on(...)``: handlers run in the primary's loop.

Events and their arguments (``worker`` is a ``clusterrun.api.Worker``):

    fork(worker)                   a worker process was forked
    online(worker)                 it runs and is loading the app
    listening(worker)              it serves (ready for connections)
    message(worker, message)       it sent a message with clusterrun.send()
    disconnect(worker)             its channel to the primary closed (it is stopping or died)
    exit(worker, code, signal)     it exited: an exit code, or the name of the signal that killed it
    error(worker, error)           a worker could not be forked (worker None, an OSError) or sent to (MessageError)
    setup(settings)                Cluster.setup_primary() changed the settings of later forks (Node's cluster.settings)

The cluster's own moments, under gunicorn's names (``config`` is the cluster's Config):

    on_starting(config)            the primary starts, before it binds or forks anything
    when_ready(config)             every worker of the first generation serves
    on_reload(config)              a rolling restart begins
    on_exit(config)                the cluster stopped; every worker is gone
    pre_fork(config, worker)       a worker is about to be forked (``worker`` a WorkerInfo, its pid 0: none yet)
    child_exit(config, worker)     a worker was reaped (right after ``exit``)
    nworkers_changed(config, new, old)   the target number of workers changed (``old`` None at start)
    pre_exec(config)               never: gunicorn's moment before it re-executes its master on USR2, which
                                   clusterrun never does (USR2 is a rolling restart: on_reload). Accepted, so
                                   that a gunicorn config loads, and said once in the log.

A handler that raises is logged and skipped: it never stops the primary. The hooks that run in the worker
processes (worker_init, pre_request ...: clusterrun.worker.hooks) are handed there by ``Cluster.on``
(clusterrun.api), so that the primary's events and the worker's hooks never import each other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from clusterrun.errors import ConfigError

logger = logging.getLogger("clusterrun")

EVENTS = ("fork", "online", "listening", "message", "disconnect", "exit", "on_starting", "when_ready", "on_reload",
          "on_exit", "pre_fork", "child_exit", "nworkers_changed", "pre_exec", "error", "setup")

Handler = Callable[..., Any]


def check_handler(event: str, handler: object) -> None:
    """A ConfigError when ``handler`` cannot be called: said at registration, not when the event comes."""
    if not callable(handler):
        raise ConfigError(f"the handler for event {event!r} is a {type(handler).__name__}, not a function")


class Events:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {name: [] for name in EVENTS}

    def on(self, event: str, handler: Handler) -> Handler:
        if event not in self._handlers:
            raise ConfigError(f"unknown cluster event {event!r}: choose one of {', '.join(EVENTS)}")
        check_handler(event, handler)
        if event == "pre_exec":
            logger.warning("the pre_exec hook %s never runs: clusterrun never re-executes its primary (USR2 is a "
                           "rolling restart; on_reload marks its start)", getattr(handler, "__qualname__", handler))
        self._handlers[event].append(handler)
        return handler

    def off(self, event: str, handler: Handler) -> None:
        """Take ``handler`` back (SIGHUP imports --hooks anew); nothing if it is not registered."""
        if handler in self._handlers.get(event, ()):
            self._handlers[event].remove(handler)

    def wanted(self, event: str) -> bool:
        return bool(self._handlers[event])

    def emit(self, event: str, *args: Any) -> None:
        for handler in self._handlers[event]:
            try:
                handler(*args)
            except Exception:
                logger.exception("the %r event handler %s raised; the cluster goes on", event,
                                 getattr(handler, "__qualname__", handler))
