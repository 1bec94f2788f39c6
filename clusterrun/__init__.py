"""clusterrun: Node's cluster module and PM2, for any Python WSGI or ASGI app.

A primary process forks a pool of workers sharing one port, spreads connections
over them, respawns crashed workers with throttling, restarts them one by one
with no failed request, and tells every request handler which worker it runs in.
"""

from __future__ import annotations

from clusterrun._version import __version__
from clusterrun.api import Cluster
from clusterrun.errors import BindError, BootError, ClusterrunError, ConfigError, MessageError, RestartLimitError
from clusterrun.identity import WorkerInfo, is_primary, is_worker
from clusterrun.primary.handle import Worker
from clusterrun.worker.current import CurrentWorker, current_worker
from clusterrun.worker.messaging import broadcast, on_message, send, serve_connection

__all__ = [
    "BindError",
    "BootError",
    "Cluster",
    "ClusterrunError",
    "ConfigError",
    "CurrentWorker",
    "MessageError",
    "RestartLimitError",
    "Worker",
    "WorkerInfo",
    "__version__",
    "broadcast",
    "current_worker",
    "is_primary",
    "is_worker",
    "on_message",
    "send",
    "serve_connection",
]
