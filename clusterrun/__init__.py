"""clusterrun: Node's cluster module and PM2, for any Python WSGI or ASGI app.

A primary process forks a pool of workers sharing one port, spreads connections
over them, respawns crashed workers with throttling, restarts them one by one
with no failed request, and tells every request handler which worker it runs in.
"""

from __future__ import annotations

__version__ = "0.1.0"

import os as _os

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

# Installed, adapters/ is the subpackage clusterrun.adapters. In a source checkout it sits beside this
# folder instead; when this very folder is the one imported (python -m clusterrun from the repository
# root, which puts the checkout first on sys.path), let the subpackage be found there too.
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(__path__[0], "adapters")) and _os.path.isfile(
    _os.path.join(_checkout, "adapters", "__init__.py")
):
    __path__.append(_checkout)
