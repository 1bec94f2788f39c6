"""Hooks that run inside each worker process: ``worker_init(worker)`` and ``worker_exit(worker)``.

Registered in the primary (``--hooks`` or ``Cluster.on``) before any fork, so that every worker inherits them.
``worker_init`` runs after the fork, once the app is loaded and before the worker serves: the place to open
again what must not be shared across a fork (a database pool made at import under --preload). If it raises,
that worker failed to boot, with the exception in the message. ``worker_exit`` runs after the worker drained.
``worker`` is the worker's ``WorkerInfo`` (id, index, pid).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from clusterrun.errors import BootError
from clusterrun.identity import WorkerInfo

logger = logging.getLogger("clusterrun")

WORKER_EVENTS = ("worker_init", "worker_exit")

_hooks: dict[str, list[Callable[..., Any]]] = {name: [] for name in WORKER_EVENTS}


def add(event: str, handler: Callable[..., Any]) -> None:
    _hooks[event].append(handler)


def clear() -> None:
    for handlers in _hooks.values():
        handlers.clear()


def init(worker: WorkerInfo) -> None:
    """Run the worker_init hooks; BootError (the worker's boot failure) naming the one that raised and why."""
    for handler in _hooks["worker_init"]:
        try:
            handler(worker)
        except Exception as exc:
            name = getattr(handler, "__qualname__", repr(handler))
            raise BootError(f"the worker_init hook {name} raised {type(exc).__name__}: {exc}") from exc


def exit(worker: WorkerInfo) -> None:
    """Run the worker_exit hooks; one that raises is logged, and the worker exits all the same."""
    for handler in _hooks["worker_exit"]:
        try:
            handler(worker)
        except Exception:
            logger.exception("the worker_exit hook %s raised", getattr(handler, "__qualname__", handler))
