"""clusterrun: Node's cluster module and PM2, for any Python WSGI or ASGI app.

A primary process forks a pool of workers sharing one port, spreads connections
over them, respawns crashed workers with throttling, restarts them one by one
with no failed request, and tells every request handler which worker it runs in.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import BindError, BootError, ClusterrunError, ConfigError, RestartLimitError
from .identity import WorkerInfo, current_worker, is_worker

__all__ = [
    "BindError",
    "BootError",
    "ClusterrunError",
    "ConfigError",
    "RestartLimitError",
    "WorkerInfo",
    "__version__",
    "current_worker",
    "is_worker",
]
