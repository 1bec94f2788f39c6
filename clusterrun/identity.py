"""Which worker this process is: ``WorkerInfo`` and ``current_worker()``.

One numbering everywhere (logs, process titles, headers, environ, scope):
``id`` counts up from 1 with every fork, as Node's ``worker.id``; ``index`` is
the stable slot 0..N-1 that a respawned worker inherits, as PM2's
``NODE_APP_INSTANCE``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ENV_WORKER_ID = "CLUSTERRUN_WORKER_ID"
ENV_WORKER_INDEX = "CLUSTERRUN_WORKER_INDEX"


@dataclass(frozen=True)
class WorkerInfo:
    id: int
    index: int
    pid: int

    def as_dict(self) -> dict[str, int]:
        return {"id": self.id, "index": self.index, "pid": self.pid}

    def __str__(self) -> str:
        return f"worker {self.id} (index {self.index}, pid {self.pid})"


_current: WorkerInfo | None = None
_primary = False


def current_worker() -> WorkerInfo | None:
    """The worker this code runs in, or None in the primary or outside clusterrun."""
    return _current


def become(info: WorkerInfo) -> None:
    """Record, right after the fork, which worker this process now is."""
    global _current, _primary
    _current = info
    _primary = False
    os.environ[ENV_WORKER_ID] = str(info.id)
    os.environ[ENV_WORKER_INDEX] = str(info.index)


def become_primary() -> None:
    global _primary
    _primary = True


def is_worker() -> bool:
    """True inside a clusterrun worker, as Node's ``cluster.isWorker``."""
    return _current is not None


def is_primary() -> bool:
    """True in the process that runs a clusterrun primary, as Node's ``cluster.isPrimary``."""
    return _primary
