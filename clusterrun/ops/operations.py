"""The control commands, as the primary answers them: info, status, reload (``config``: SIGHUP's re-read of the
configuration first), scale, stop, restart-worker.

Each takes the request (a JSON object) and returns the answer: ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``. Commands that take time (a rolling restart, a stop) start it and answer
at once; the client follows it through ``status`` (clusterrun.ctl.commands).

The commands read the pool and start what the primary does (``Steering``): they take those, not the Primary.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from clusterrun._version import __version__
from clusterrun.config.options import MAX_WORKERS
from clusterrun.host import listeners
from clusterrun.host.procstats import ProcSampler
from clusterrun.ops.status import started_at, worker_row
from clusterrun.primary.pool import Pool
from clusterrun.primary.reconfigure import Outcome

Answer = dict[str, Any]

_SCALE_RE = re.compile(r"([+-]?)(\d{1,4})")


def _error(text: str) -> Answer:
    return {"ok": False, "error": text}


class Steering(Protocol):
    """What the commands start: the primary's own actions, the signals' and the Cluster API's (the Primary)."""

    def reload(self) -> None: ...

    def reconfigure(self) -> Outcome: ...

    def scale(self, target: int) -> None: ...

    def stop(self, timeout: float | None = None) -> None: ...


class Operations:
    def __init__(
        self, pool: Pool, steering: Steering, clock: Callable[[], float], policy: str,
        sockets: Sequence[socket.socket], started: float,
    ) -> None:
        """``sockets``: the app's listeners, as the primary fills them when it binds; ``started``: when the primary
        started, by ``clock``. The configuration is the pool's: the one in force (SIGHUP may read it again)."""
        self.pool = pool
        self.steering = steering
        self.clock = clock
        self.policy = policy  # its name
        self.sockets = sockets
        self.started = started
        self.sampler = ProcSampler()

    def answer(self, request: dict[str, Any]) -> Answer:
        command = request["command"]
        handler = {
            "info": self.info, "status": self.status, "reload": self.reload, "scale": self.scale,
            "stop": self.stop, "restart-worker": self.restart_worker,
        }.get(command)
        if handler is None:
            return _error(f"unknown command {command!r}: info, status, reload, scale, stop or restart-worker")
        return handler(request)

    def info(self, request: dict[str, Any]) -> Answer:
        """The cluster in one line (clusterrun ls)."""
        config, pool = self.pool.config, self.pool
        now = self.clock()
        scheme = "https" if config.tls else "http"
        return {
            "ok": True, "name": config.cluster_name, "pid": os.getpid(), "app": config.app,
            "version": __version__, "policy": self.policy,
            "binds": [listeners.describe(sock, scheme) for sock in self.sockets],
            "started": started_at(self.started, now), "uptime": round(now - self.started, 3),
            "target": pool.target, "ready": sum(1 for w in pool.slots.values() if w.is_ready),
            "stopping": pool.stopping,
        }

    def status(self, request: dict[str, Any]) -> Answer:
        pool = self.pool
        now = self.clock()
        workers = sorted(pool.workers.values(), key=lambda w: (w.index, w.id))
        self.sampler.forget_except(w.pid for w in workers)
        rollout = pool.rollout
        return {
            **self.info(request),
            "restarts": sum(pool.throttle.crashes(index) for index in range(max(pool.target, len(pool.slots)))),
            "reload": {"id": rollout.reloads, "state": rollout.outcome, "reason": rollout.reason or None},
            "workers": [
                worker_row(w, now, self.sampler, pool.throttle.crashes(w.index), pool.last_exit.get(w.index, ""))
                for w in workers
            ],
        }

    def reload(self, request: dict[str, Any]) -> Answer:
        pool = self.pool
        if pool.stopping:
            return _error("the cluster is stopping")
        if pool.rollout.active:
            return _error(f"a rolling restart (reload {pool.rollout.reloads}) is already running")
        if not request.get("config"):
            self.steering.reload()
            return {"ok": True, "reload": pool.rollout.reloads}
        outcome = self.steering.reconfigure()  # as SIGHUP: the configuration read again, then the rolling restart
        if outcome.error:
            return _error(f"the configuration was not re-read: {outcome.error}; nothing changed")
        return {"ok": True, "reload": pool.rollout.reloads, "changed": outcome.changed, "needs_restart": outcome.kept}

    def scale(self, request: dict[str, Any]) -> Answer:
        value = str(request.get("workers", ""))
        match = _SCALE_RE.fullmatch(value)
        if match is None:
            return _error(f"bad worker count {value!r}: give N, +K or -K, e.g. 4 or +1")
        pool = self.pool
        count = int(match[2])
        target = pool.target + count if match[1] == "+" else pool.target - count if match[1] == "-" else count
        if target < 1:
            return _error(f"cannot scale to {target} workers: at least 1 is needed")
        if target > MAX_WORKERS:
            return _error(f"cannot scale to {target} workers: one cluster runs at most {MAX_WORKERS}")
        if pool.stopping:
            return _error("the cluster is stopping")
        self.steering.scale(target)
        return {"ok": True, "target": pool.target}

    def stop(self, request: dict[str, Any]) -> Answer:
        timeout = request.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
                                    or not 0 <= timeout <= 86400):
            return _error(f"bad timeout {timeout!r}: give seconds between 0 and 86400")
        self.steering.stop(None if timeout is None else float(timeout))
        return {"ok": True, "pid": os.getpid()}

    def restart_worker(self, request: dict[str, Any]) -> Answer:
        wanted = request.get("id")
        pool = self.pool
        handle = next((w for w in pool.workers.values() if w.id == wanted), None)
        if handle is None or isinstance(wanted, bool):
            ids = ", ".join(str(w.id) for w in sorted(pool.workers.values(), key=lambda w: w.id))
            return _error(f"no worker with id {wanted!r}: the workers are {ids or 'none'}")
        if not handle.is_ready or pool.slots.get(handle.index) is not handle:
            return _error(f"worker {handle.id} is {handle.state.value}, not serving: nothing to restart")
        if pool.stopping:
            return _error("the cluster is stopping")
        pool.rollout.recycle(handle, "restart requested (clusterrun restart-worker)")
        return {"ok": True, "id": handle.id}
