"""clusterrun: Node's cluster module and PM2, for any Python WSGI or ASGI app.

A primary process forks a pool of workers sharing one port, spreads connections
over them, respawns crashed workers with throttling, restarts them one by one
with no failed request, and tells every request handler which worker it runs in.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .api import Cluster
from .errors import BindError, BootError, ClusterrunError, ConfigError, MessageError, RestartLimitError
from .identity import WorkerInfo, current_worker, is_primary, is_worker
from .messaging import broadcast, on_message, send
from .supervision import Worker

__all__ = [
    "BindError",
    "BootError",
    "Cluster",
    "ClusterrunError",
    "ConfigError",
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
]
